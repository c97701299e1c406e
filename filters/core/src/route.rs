//! Method + path route matching shared by every filter: exact, prefix and `{param}` templates,
//! compiled once at configure time; the first matching route in config order wins.

use crate::config::ConfigError;
use serde::Deserialize;

/// How a route is written in policy files: methods plus exactly one of `path`, `prefix`,
/// `template`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// HTTP methods (upper case); absent or empty means any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Exact normalised path.
    pub path: Option<String>,
    /// Path prefix, matched on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub prefix: Option<String>,
    /// Template such as `/api/v1/tenants/{tenant}/customers/{id}`; each `{name}` matches one
    /// non-empty segment and is captured.
    pub template: Option<String>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param,
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Template(Vec<Segment>),
}

/// A compiled matcher for one route.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    methods: Vec<String>,
    pattern: Pattern,
    params: Vec<String>,
}

/// Path parameters captured by a template, borrowed from the normalised path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'a> {
    names: &'a [String],
    values: Vec<&'a str>,
}

impl<'a> Params<'a> {
    /// The value of a named parameter, if the template has it.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.values.get(i).copied())
    }

    /// All `(name, value)` pairs in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.values.iter().copied())
    }
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

impl RouteMatcher {
    /// Compiles a match spec; errors name the sub-field.
    pub fn compile(spec: &MatchSpec) -> Result<Self, ConfigError> {
        let mut methods = Vec::new();
        for (i, m) in spec.methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                return Err(ConfigError::new(
                    format!("methods[{i}]"),
                    format!(
                        "unknown HTTP method `{m}` (methods are upper case: {})",
                        METHODS.join(", ")
                    ),
                ));
            }
            methods.push(m.clone());
        }
        let given = [
            spec.path.is_some(),
            spec.prefix.is_some(),
            spec.template.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ConfigError::new(
                "",
                "exactly one of `path`, `prefix`, `template` is required",
            ));
        }
        let mut params = Vec::new();
        let pattern = if let Some(p) = &spec.path {
            Pattern::Exact(canonical("path", p)?)
        } else if let Some(p) = &spec.prefix {
            let p = canonical("prefix", p)?;
            Pattern::Prefix(p.trim_end_matches('/').to_string())
        } else if let Some(t) = &spec.template {
            Pattern::Template(compile_template(t, &mut params)?)
        } else {
            return Err(ConfigError::new(
                "",
                "exactly one of `path`, `prefix`, `template` is required",
            ));
        };
        Ok(RouteMatcher {
            methods,
            pattern,
            params,
        })
    }

    /// Names of the template's parameters (empty for exact and prefix routes).
    pub fn param_names(&self) -> &[String] {
        &self.params
    }

    /// Matches a method and an already-normalised path.
    pub fn matches<'a>(&'a self, method: &str, path: &'a str) -> Option<Params<'a>> {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return None;
        }
        match &self.pattern {
            Pattern::Exact(p) => (p == path).then(Params::default),
            Pattern::Prefix(p) => {
                let rest = path.strip_prefix(p.as_str())?;
                (p.is_empty() || rest.is_empty() || rest.starts_with('/')).then(Params::default)
            }
            Pattern::Template(segs) => {
                let mut values = Vec::with_capacity(self.params.len());
                let mut parts = path.strip_prefix('/')?.split('/');
                for seg in segs {
                    let part = parts.next()?;
                    match seg {
                        Segment::Literal(l) if l == part => {}
                        Segment::Param if !part.is_empty() => values.push(part),
                        _ => return None,
                    }
                }
                parts.next().is_none().then_some(Params {
                    names: &self.params,
                    values,
                })
            }
        }
    }
}

/// A path written in config must already be canonical, otherwise it could never match.
fn canonical(field: &str, p: &str) -> Result<String, ConfigError> {
    match crate::path::normalize(p) {
        Ok(n)
            if n == p
                || (field == "prefix" && n.trim_end_matches('/') == p.trim_end_matches('/')) =>
        {
            Ok(n)
        }
        Ok(n) => Err(ConfigError::new(
            field,
            format!("`{p}` is not a normalised path (it normalises to `{n}`)"),
        )),
        Err(e) => Err(ConfigError::new(field, format!("`{p}`: {}", e.describe()))),
    }
}

fn compile_template(t: &str, params: &mut Vec<String>) -> Result<Vec<Segment>, ConfigError> {
    let Some(rest) = t.strip_prefix('/') else {
        return Err(ConfigError::new("template", "must start with '/'"));
    };
    let mut out = Vec::new();
    for seg in rest.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ConfigError::new(
                    "template",
                    format!("invalid parameter name `{{{name}}}`"),
                ));
            }
            if params.iter().any(|p| p == name) {
                return Err(ConfigError::new(
                    "template",
                    format!("parameter `{{{name}}}` appears twice"),
                ));
            }
            out.push(Segment::Param);
            params.push(name.to_string());
        } else if seg.contains('{') || seg.contains('}') {
            return Err(ConfigError::new(
                "template",
                format!("segment `{seg}`: a parameter must be a whole segment like `{{id}}`"),
            ));
        } else {
            canonical("template", &format!("/{seg}"))?;
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(ConfigError::new(
                    "template",
                    format!("`{t}` has an empty or dot segment"),
                ));
            }
            out.push(Segment::Literal(seg.to_string()));
        }
    }
    Ok(out)
}

/// An ordered list of routes, each with the filter's own per-route payload.
///
/// Lookup goes through a segment trie built once with the table, so its cost follows the
/// path's depth, not the number of routes: a policy with 10k routes answers as fast as one
/// with ten. The trie only narrows the candidates (every route that could match is among
/// them); [`RouteMatcher::matches`] still decides, lowest config index first, so first-match
/// semantics are exactly those of a scan in config order.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<(RouteMatcher, T)>,
    index: Node,
}

/// A trie node: one path segment deeper than its parent.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Literal segments, sorted for binary search.
    literals: Vec<(String, Node)>,
    /// `{param}` segments (any non-empty segment).
    param: Option<Box<Node>>,
    /// Exact paths and templates that end at this node.
    ends: Vec<usize>,
    /// Prefixes that end at this node: they match here and everywhere below.
    prefixes: Vec<usize>,
}

impl Node {
    fn literal_mut(&mut self, seg: &str) -> &mut Node {
        let at = match self.literals.binary_search_by(|(l, _)| l.as_str().cmp(seg)) {
            Ok(at) => at,
            Err(at) => {
                self.literals.insert(at, (seg.to_string(), Node::default()));
                at
            }
        };
        &mut self.literals[at].1
    }

    fn literal(&self, seg: &str) -> Option<&Node> {
        self.literals
            .binary_search_by(|(l, _)| l.as_str().cmp(seg))
            .ok()
            .map(|at| &self.literals[at].1)
    }

    fn insert(&mut self, pattern: &Pattern, route: usize) {
        match pattern {
            Pattern::Exact(p) => {
                let mut node = self;
                for seg in segments(p) {
                    node = node.literal_mut(seg);
                }
                node.ends.push(route);
            }
            // `""` (from `/`) is the root: every path.
            Pattern::Prefix(p) => {
                let mut node = self;
                if !p.is_empty() {
                    for seg in segments(p) {
                        node = node.literal_mut(seg);
                    }
                }
                node.prefixes.push(route);
            }
            Pattern::Template(segs) => {
                let mut node = self;
                for seg in segs {
                    node = match seg {
                        Segment::Literal(l) => node.literal_mut(l),
                        Segment::Param => node.param.get_or_insert_with(Box::default),
                    };
                }
                node.ends.push(route);
            }
        }
    }

    /// Every route that could match the path whose remaining segments are `rest` (`None`:
    /// none left; `Some("a/b")`: `a` then `b`, as [`segments`] splits them). Split as the walk
    /// goes, a byte search per segment: no vector of segments, no `Split` iterator to clone.
    fn candidates(&self, rest: Option<&str>, out: &mut Candidates) {
        out.extend(&self.prefixes);
        let Some(rest) = rest else {
            out.extend(&self.ends);
            return;
        };
        let (seg, rest) = match rest.bytes().position(|b| b == b'/') {
            Some(i) => (&rest[..i], rest.get(i + 1..)),
            None => (rest, None),
        };
        if let Some(next) = self.literal(seg) {
            next.candidates(rest, out);
        }
        if let Some(next) = &self.param {
            if !seg.is_empty() {
                next.candidates(rest, out);
            }
        }
    }
}

/// The candidate routes of one lookup: a few at most in practice, kept inline (a lookup on
/// every request allocated for them); more spill to the heap.
struct Candidates {
    inline: [usize; 8],
    len: usize,
    spill: Vec<usize>,
}

impl Candidates {
    fn new() -> Self {
        Candidates {
            inline: [0; 8],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn extend(&mut self, routes: &[usize]) {
        for &r in routes {
            match self.inline.get_mut(self.len) {
                Some(slot) => {
                    *slot = r;
                    self.len += 1;
                }
                None => self.spill.push(r),
            }
        }
    }

    /// Every candidate, lowest config index first.
    fn sorted(&mut self) -> &[usize] {
        if self.spill.is_empty() {
            let found = &mut self.inline[..self.len];
            found.sort_unstable();
            return found;
        }
        self.spill.extend_from_slice(&self.inline[..self.len]);
        self.spill.sort_unstable();
        &self.spill
    }
}

/// A path's segments as templates see them: `/a/b` is `["a", "b"]`, `/` is `[""]`.
fn segments(path: &str) -> std::str::Split<'_, char> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

/// The route a request matched: its index in config order, its payload and its parameters.
#[derive(Debug)]
pub struct Matched<'a, T> {
    /// Position in config order.
    pub index: usize,
    /// The filter's per-route data.
    pub route: &'a T,
    /// Template parameters.
    pub params: Params<'a>,
}

impl<T> RouteTable<T> {
    /// Builds a table from compiled routes, in config order.
    pub fn new(routes: Vec<(RouteMatcher, T)>) -> Self {
        let mut index = Node::default();
        for (i, (m, _)) in routes.iter().enumerate() {
            index.insert(&m.pattern, i);
        }
        RouteTable { routes, index }
    }

    /// The first route (in config order) matching `method` and the normalised `path`.
    pub fn find<'a>(&'a self, method: &str, path: &'a str) -> Option<Matched<'a, T>> {
        // Paths that do not start with `/` match only the catch-all prefix, which the root
        // holds; matching still goes through `matches`, which refuses the rest.
        let mut candidates = Candidates::new();
        if path.starts_with('/') {
            self.index
                .candidates(path.strip_prefix('/'), &mut candidates);
        } else {
            candidates.extend(&self.index.prefixes);
        }
        candidates.sorted().iter().find_map(|&index| {
            let (m, route) = self.routes.get(index)?;
            m.matches(method, path).map(|params| Matched {
                index,
                route,
                params,
            })
        })
    }

    /// The payload of the route at `index` (config order).
    pub fn get(&self, index: usize) -> Option<&T> {
        self.routes.get(index).map(|(_, t)| t)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Routes with their payloads, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &(RouteMatcher, T)> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(methods: &[&str], kind: &str, p: &str) -> RouteMatcher {
        let mut spec = MatchSpec {
            methods: methods.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        match kind {
            "path" => spec.path = Some(p.into()),
            "prefix" => spec.prefix = Some(p.into()),
            _ => spec.template = Some(p.into()),
        }
        RouteMatcher::compile(&spec).unwrap()
    }

    #[test]
    fn template_captures_parameters() {
        let r = m(
            &["GET"],
            "template",
            "/api/v1/tenants/{tenant}/customers/{id}",
        );
        let p = r
            .matches("GET", "/api/v1/tenants/acme/customers/c-1")
            .unwrap();
        assert_eq!(p.get("tenant"), Some("acme"));
        assert_eq!(p.get("id"), Some("c-1"));
        assert_eq!(p.get("nope"), None);
        assert!(r
            .matches("POST", "/api/v1/tenants/acme/customers/c-1")
            .is_none());
        assert!(r.matches("GET", "/api/v1/tenants/acme/customers").is_none());
        assert!(r
            .matches("GET", "/api/v1/tenants/acme/customers/c-1/x")
            .is_none());
        assert!(r
            .matches("GET", "/api/v1/tenants/acme/customers/")
            .is_none());
        assert!(r.matches("GET", "/api/v1/tenants//customers/c-1").is_none());
    }

    #[test]
    fn prefix_respects_segment_boundaries() {
        let r = m(&[], "prefix", "/api/");
        assert!(r.matches("DELETE", "/api").is_some());
        assert!(r.matches("GET", "/api/x/y").is_some());
        assert!(r.matches("GET", "/apix").is_none());
        assert!(m(&[], "prefix", "/").matches("GET", "/anything").is_some());
    }

    #[test]
    fn exact_is_exact() {
        let r = m(&["GET", "HEAD"], "path", "/healthz");
        assert!(r.matches("HEAD", "/healthz").is_some());
        assert!(r.matches("GET", "/healthz/").is_none());
    }

    #[test]
    fn first_match_wins_in_config_order() {
        let t = RouteTable::new(vec![
            (m(&["GET"], "template", "/t/{tenant}/admin"), "admin"),
            (m(&[], "prefix", "/t"), "any"),
        ]);
        assert_eq!(*t.find("GET", "/t/a/admin").unwrap().route, "admin");
        assert_eq!(t.find("POST", "/t/a/admin").unwrap().index, 1);
        assert!(t.find("GET", "/other").is_none());
    }

    /// The trie only narrows the scan: over many generated tables and paths it finds exactly
    /// the route a scan in config order finds (same index, same parameters).
    #[test]
    fn indexed_lookup_equals_a_scan_in_config_order() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let words = ["a", "b", "api", "v1", "x", ""];
        let methods = ["GET", "POST"];
        for _ in 0..300 {
            let mut routes = Vec::new();
            // Up to 24 routes over few words: lookups with more candidates than `Candidates`
            // keeps inline (8) are common, so the spill is held to the scan too.
            for i in 0..next(24) + 1 {
                let depth = next(4);
                let mut segs = Vec::new();
                for d in 0..depth {
                    segs.push(match next(3) {
                        0 => format!("{{p{d}}}"),
                        _ => words[next(words.len() - 1)].to_string(),
                    });
                }
                let body = format!("/{}", segs.join("/"));
                let kind = if segs.iter().any(|s| s.starts_with('{')) {
                    "template"
                } else {
                    ["path", "prefix"][next(2)]
                };
                let ms: &[&str] = if next(3) == 0 {
                    &[]
                } else {
                    &[methods[next(2)]]
                };
                let body = if kind == "template" && depth == 0 {
                    "/a".into()
                } else {
                    body
                };
                routes.push((m(ms, kind, &body), i));
            }
            let table = RouteTable::new(routes.clone());
            for _ in 0..40 {
                let depth = next(5);
                let path = format!(
                    "/{}",
                    (0..depth)
                        .map(|_| words[next(words.len())])
                        .collect::<Vec<_>>()
                        .join("/")
                );
                let method = methods[next(2)];
                let scan = routes.iter().enumerate().find_map(|(i, (r, _))| {
                    r.matches(method, &path)
                        .map(|p| (i, p.iter().collect::<Vec<_>>()))
                });
                let found = table
                    .find(method, &path)
                    .map(|f| (f.index, f.params.iter().collect::<Vec<_>>()));
                assert_eq!(found, scan, "{method} {path} in {routes:?}");
            }
        }
    }

    #[test]
    fn ten_thousand_routes_still_find_the_last_one() {
        let mut routes: Vec<_> = (0..10_000)
            .map(|i| {
                (
                    m(&["GET"], "template", &format!("/gen{i}/{{tenant}}/items")),
                    i,
                )
            })
            .collect();
        routes.push((m(&["GET"], "template", "/api/{tenant}/items"), 10_000));
        let t = RouteTable::new(routes);
        let hit = t.find("GET", "/api/acme/items").unwrap();
        assert_eq!(
            (hit.index, hit.params.get("tenant")),
            (10_000, Some("acme"))
        );
        assert_eq!(t.find("GET", "/gen9999/acme/items").unwrap().index, 9_999);
        assert!(t.find("GET", "/gen10000/acme/items").is_none());
    }

    #[test]
    fn bad_specs_are_config_errors() {
        let bad = |spec: MatchSpec| RouteMatcher::compile(&spec).unwrap_err();
        assert!(bad(MatchSpec::default()).problem.contains("exactly one"));
        let e = bad(MatchSpec {
            methods: vec!["get".into()],
            path: Some("/a".into()),
            ..Default::default()
        });
        assert_eq!(e.field, "methods[0]");
        assert!(bad(MatchSpec {
            path: Some("/a/../b".into()),
            ..Default::default()
        })
        .problem
        .contains("normalised"));
        assert!(
            bad(MatchSpec {
                template: Some("/a/{x}{y}".into()),
                ..Default::default()
            })
            .field
                == "template"
        );
        assert!(bad(MatchSpec {
            template: Some("/a/{x}/{x}".into()),
            ..Default::default()
        })
        .problem
        .contains("twice"));
        assert!(
            bad(MatchSpec {
                template: Some("/a//{x}".into()),
                ..Default::default()
            })
            .field
                == "template"
        );
    }
}
