//! Field paths: the JSONPath subset masking needs, compiled to a tiny automaton that is stepped
//! once per member while the body is walked (no per-node pattern re-matching).
//!
//! Grammar: `$` then any of `.name`, `['name']`, `["name"]`, `.*`, `[*]`, `[N]`, `..name`,
//! `..*`. `*` matches any member or element; `..` matches any depth (zero or more levels).

use std::fmt;

/// One step of a compiled path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    Any,
    /// Zero or more levels.
    Deep,
}

/// A compiled field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    steps: Vec<Step>,
    text: String,
}

/// Why a path does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSyntax(pub String);

impl fmt::Display for PathSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Most steps in one path (the automaton state is a 64-bit set).
pub const MAX_STEPS: usize = 48;

/// A segment of the location being visited.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    /// An object member.
    Key(&'a str),
    /// An array element.
    Index(usize),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl FieldPath {
    /// Compiles `$.a..b[*]`-style text.
    pub fn compile(text: &str) -> Result<Self, PathSyntax> {
        let bad = |why: &str| PathSyntax(format!("`{text}`: {why}"));
        let mut rest = text
            .strip_prefix('$')
            .ok_or_else(|| bad("must start with `$`"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("..") {
                steps.push(Step::Deep);
                rest = r;
                if let Some(r) = rest.strip_prefix('*') {
                    steps.push(Step::Any);
                    rest = r;
                } else if rest.starts_with('[') {
                    continue;
                } else {
                    let n = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
                    if n == 0 {
                        return Err(bad("`..` must be followed by a name, `*` or `[`"));
                    }
                    steps.push(Step::Key(rest[..n].to_string()));
                    rest = &rest[n..];
                }
            } else if let Some(r) = rest.strip_prefix('.') {
                if let Some(r) = r.strip_prefix('*') {
                    steps.push(Step::Any);
                    rest = r;
                } else {
                    let n = r.find(|c| !is_name_char(c)).unwrap_or(r.len());
                    if n == 0 {
                        return Err(bad(
                            "`.` must be followed by a name or `*` (use ['…'] for other keys)",
                        ));
                    }
                    steps.push(Step::Key(r[..n].to_string()));
                    rest = &r[n..];
                }
            } else if let Some(r) = rest.strip_prefix('[') {
                let close = r.find(']').ok_or_else(|| bad("unclosed `[`"))?;
                let inner = &r[..close];
                rest = &r[close + 1..];
                if inner == "*" {
                    steps.push(Step::Any);
                } else if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    steps.push(Step::Key(q.to_string()));
                } else if let Ok(n) = inner.parse::<usize>() {
                    steps.push(Step::Index(n));
                } else {
                    return Err(bad("`[…]` holds `*`, an index or a quoted name"));
                }
            } else {
                return Err(bad("expected `.`, `..` or `[`"));
            }
        }
        if steps.is_empty() {
            return Err(bad("`$` alone would mask the whole body; name a field"));
        }
        if matches!(steps.last(), Some(Step::Deep)) {
            return Err(bad("cannot end with `..`"));
        }
        if steps.len() > MAX_STEPS {
            return Err(bad("too many steps"));
        }
        Ok(FieldPath {
            steps,
            text: text.to_string(),
        })
    }

    /// The text it was compiled from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when a step names `seg` (a member name or an index); a segment no path of a
    /// profile names steps every path as any other such segment does.
    pub fn names(&self, seg: Seg<'_>) -> bool {
        self.steps.iter().any(|s| match (s, seg) {
            (Step::Key(k), Seg::Key(n)) => k == n,
            (Step::Index(i), Seg::Index(j)) => *i == j,
            _ => false,
        })
    }

    /// The member names its steps name.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            _ => None,
        })
    }

    /// The array indices the path names.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.steps.iter().filter_map(|s| match s {
            Step::Index(n) => Some(*n),
            _ => None,
        })
    }

    /// The state before any segment (the document root).
    pub fn start(&self) -> u64 {
        self.closure(1)
    }

    /// True when `state` has consumed the whole path: the current node matches.
    pub fn accepts(&self, state: u64) -> bool {
        state & (1u64 << self.steps.len()) != 0
    }

    /// The state after descending into `seg`. Zero means no match is possible below.
    pub fn step(&self, state: u64, seg: Seg<'_>) -> u64 {
        let mut next = 0u64;
        for (i, step) in self.steps.iter().enumerate() {
            if state & (1u64 << i) == 0 {
                continue;
            }
            let advance = match (step, seg) {
                (Step::Deep, _) => {
                    next |= 1u64 << i; // stay: `..` consumes this level
                    false
                }
                (Step::Any, _) => true,
                (Step::Key(k), Seg::Key(s)) => k == s,
                (Step::Index(n), Seg::Index(j)) => *n == j,
                _ => false,
            };
            if advance {
                next |= 1u64 << (i + 1);
            }
        }
        self.closure(next)
    }

    /// Adds the states reachable without consuming a segment (`..` may match zero levels).
    fn closure(&self, mut state: u64) -> u64 {
        for (i, step) in self.steps.iter().enumerate() {
            if *step == Step::Deep && state & (1u64 << i) != 0 {
                state |= 1u64 << (i + 1);
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(path: &str, segs: &[Seg<'_>]) -> bool {
        let p = FieldPath::compile(path).unwrap();
        let mut s = p.start();
        for seg in segs {
            s = p.step(s, *seg);
        }
        p.accepts(s)
    }

    #[test]
    fn paths_match_as_documented() {
        use Seg::{Index as I, Key as K};
        assert!(matches("$.email", &[K("email")]));
        assert!(!matches("$.email", &[K("a"), K("email")]));
        assert!(matches(
            "$.customers[*].ssn",
            &[K("customers"), I(3), K("ssn")]
        ));
        assert!(!matches("$.customers[*].ssn", &[K("customers"), K("ssn")]));
        assert!(matches("$..card_number", &[K("card_number")]));
        assert!(matches(
            "$..card_number",
            &[K("a"), I(0), K("b"), K("card_number")]
        ));
        assert!(!matches("$..card_number", &[K("card_number"), K("x")]));
        assert!(matches("$['odd key']", &[K("odd key")]));
        assert!(matches("$.a[2]", &[K("a"), I(2)]));
        assert!(!matches("$.a[2]", &[K("a"), I(1)]));
        assert!(matches("$.a.*", &[K("a"), K("z")]));
        assert!(matches("$..*", &[K("a"), K("z")]));
        assert!(matches("$..a..b", &[K("a"), K("b")]));
        assert!(matches("$..a..b", &[K("x"), K("a"), I(1), K("c"), K("b")]));
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["email", "$", "$.", "$..", "$[", "$[x]", "$.a b", "$.."] {
            assert!(FieldPath::compile(bad).is_err(), "{bad}");
        }
    }
}
