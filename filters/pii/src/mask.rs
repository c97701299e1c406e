//! The masking engine: walks a JSON document (or scans a text body) and applies a profile's
//! rules for one caller. Pure: the caller's scopes and tokenization key come in as values.
//!
//! Precedence: a value matched by a field rule is decided by that rule alone (the first
//! matching rule of the profile); other string values go through the detectors; numbers go
//! through the payment-card detector only (a card number sent as a JSON number). A masked
//! number becomes a string.

use crate::action::{Action, NoKey, TokenKey};
use crate::config::{PiiConfig, Profile, Rule};
use crate::json::Json;
use crate::jsonpath::Seg;

/// Who the body is for.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Scopes verified by authn (empty when there is no identity).
    pub scopes: &'a [String],
    /// Tokenization key for the caller's tenant.
    pub key: Option<&'a TokenKey>,
}

/// What masking did, for metrics and logs: counts by rule, and where (JSON pointers, never
/// values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Values masked, per rule index.
    pub masked: Vec<u32>,
    /// Values left unmasked because the caller's scope (and consent) allowed it, per rule.
    pub revealed: Vec<u32>,
    /// JSON pointers of the first masked locations (for text bodies: `#<byte offset>`), when
    /// the configuration asks for them ([`PiiConfig::locate`]).
    pub pointers: Vec<String>,
    /// Whether `pointers` are written.
    locate: bool,
}

/// How many locations a report lists.
pub const MAX_POINTERS: usize = 16;

impl Report {
    pub(crate) fn new(cfg: &PiiConfig) -> Self {
        Report {
            masked: vec![0; cfg.rules.len()],
            revealed: vec![0; cfg.rules.len()],
            pointers: Vec::new(),
            locate: cfg.locate.now(),
        }
    }

    /// Total values masked.
    pub fn total(&self) -> u32 {
        self.masked.iter().sum()
    }

    pub(crate) fn hit(&mut self, rule: usize, at: impl FnOnce() -> String) {
        if let Some(c) = self.masked.get_mut(rule) {
            *c += 1;
        }
        // Building a pointer allocates a string per segment: a quarter of masking a small
        // response, for a log line nobody reads unless it is enabled.
        if self.locate && self.pointers.len() < MAX_POINTERS {
            self.pointers.push(at());
        }
    }

    pub(crate) fn reveal(&mut self, rule: usize) {
        if let Some(c) = self.revealed.get_mut(rule) {
            *c += 1;
        }
    }
}

pub(crate) fn allowed(rule: &Rule, caller: &Caller<'_>) -> bool {
    rule.unmask_scopes
        .iter()
        .any(|s| caller.scopes.iter().any(|c| c == s))
}

/// The rules' decisions for one body, shared by the tree walk below and the streaming masker
/// ([`crate::stream`]), with the report they fill.
pub(crate) struct Walker<'a> {
    pub(crate) cfg: &'a PiiConfig,
    pub(crate) profile: &'a Profile,
    pub(crate) caller: Caller<'a>,
    pub(crate) report: Report,
    /// Path of the node being visited, for pointers (tree walk only).
    stack: Vec<PathSeg>,
}

enum PathSeg {
    Key(String),
    Index(usize),
}

fn pointer(stack: &[PathSeg], last: Option<&PathSeg>) -> String {
    let mut out = String::new();
    for s in stack.iter().chain(last) {
        out.push('/');
        match s {
            PathSeg::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            PathSeg::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// What a field rule decided for one member.
pub(crate) enum Verdict {
    Keep,
    Replace(Json),
    Remove,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(cfg: &'a PiiConfig, profile: &'a Profile, caller: Caller<'a>) -> Self {
        Walker {
            cfg,
            profile,
            caller,
            report: Report::new(cfg),
            stack: Vec::new(),
        }
    }

    pub(crate) fn rule(&self, i: usize) -> Option<&'a Rule> {
        self.cfg.rules.get(i)
    }

    /// Automaton states after stepping every field path of the profile into `seg`.
    fn step(&self, states: &[u64], seg: Seg<'_>) -> Vec<u64> {
        self.profile
            .paths
            .iter()
            .zip(states)
            .map(|(&(ri, pi), &s)| {
                if s == 0 {
                    return 0;
                }
                self.cfg
                    .rules
                    .get(ri)
                    .and_then(|r| r.fields.get(pi))
                    .map_or(0, |p| p.step(s, seg))
            })
            .collect()
    }

    /// The first field rule whose path accepts at these states.
    fn matched_rule(&self, states: &[u64]) -> Option<usize> {
        self.profile
            .paths
            .iter()
            .zip(states)
            .find(|(&(ri, pi), &s)| {
                s != 0
                    && self
                        .cfg
                        .rules
                        .get(ri)
                        .and_then(|r| r.fields.get(pi))
                        .is_some_and(|p| p.accepts(s))
            })
            .map(|(&(ri, _), _)| ri)
    }

    /// True when no detector could change `value` (so the walk can skip it).
    fn nothing_to_detect(&self, value: &Json) -> bool {
        match value {
            Json::Str(_) | Json::Arr(_) | Json::Obj(_) => self.profile.detectors.is_empty(),
            Json::Num(_) => self.profile.card_rule.is_none(),
            Json::Null | Json::Bool(_) => true,
        }
    }

    /// [`Walker::apply`] to a string's value or a number's text.
    pub(crate) fn apply_text(&self, action: &Action, text: &str) -> Result<Verdict, NoKey> {
        if *action == Action::Drop {
            return Ok(Verdict::Remove);
        }
        Ok(Verdict::Replace(Json::Str(
            action.apply(text, self.caller.key)?,
        )))
    }

    pub(crate) fn apply(&self, action: &Action, value: &Json) -> Result<Verdict, NoKey> {
        if *action == Action::Drop {
            return Ok(Verdict::Remove);
        }
        let text = match value {
            Json::Str(s) | Json::Num(s) => return self.apply_text(action, s),
            other => match action {
                // Structures and literals have no characters to keep or pseudonymise sensibly
                // except as their JSON text.
                Action::Tokenize { .. } => String::from_utf8_lossy(&other.to_bytes()).into_owned(),
                Action::Partial { mask_char, .. } => {
                    return Ok(Verdict::Replace(Json::Str(mask_char.to_string().repeat(3))))
                }
                _ => String::new(),
            },
        };
        Ok(Verdict::Replace(Json::Str(
            action.apply(&text, self.caller.key)?,
        )))
    }

    /// Whether field rule `ri` leaves a value it matched as it is for this caller (counted as
    /// revealed). `consent` reads the consent flag at a dotted path in the record holding the
    /// value (`false` for array elements: no flag, fail closed); it is asked only when the
    /// caller's scopes would reveal, so a streaming caller looks ahead only then.
    pub(crate) fn reveals(
        &mut self,
        ri: usize,
        consent: &mut dyn FnMut(&[String]) -> bool,
    ) -> bool {
        let Some(rule) = self.rule(ri) else {
            return true;
        };
        let scope_ok = if rule.unmask_scopes.is_empty() {
            rule.consent.is_some()
        } else {
            allowed(rule, &self.caller)
        };
        let mut consent_ok = || match &rule.consent {
            None => true,
            Some(path) => consent(path),
        };
        if scope_ok && consent_ok() {
            self.report.reveal(ri);
            return true;
        }
        false
    }

    /// Decides a member matched by field rule `ri`; `record` holds the members of the object
    /// holding it (for the consent flag), `None` for array elements (no flag: fail closed).
    fn field_verdict(
        &mut self,
        ri: usize,
        value: &Json,
        record: Option<&[(String, Json)]>,
        at: &PathSeg,
    ) -> Result<Verdict, NoKey> {
        let Some(rule) = self.rule(ri) else {
            return Ok(Verdict::Keep);
        };
        if self.reveals(ri, &mut |path| {
            record.is_some_and(|r| consent_flag(r, path))
        }) {
            return Ok(Verdict::Keep);
        }
        let v = self.apply(&rule.action, value)?;
        let stack = &self.stack;
        self.report.hit(ri, || pointer(stack, Some(at)));
        Ok(v)
    }

    fn visit(&mut self, node: &mut Json, states: &[u64]) -> Result<(), NoKey> {
        match node {
            Json::Obj(members) => {
                let mut remove = Vec::new();
                let mut renamed = Vec::new();
                for i in 0..members.len() {
                    let Some((key, value)) = members.get(i) else {
                        break;
                    };
                    // Paths match the name as written; the name itself is text a client reads
                    // (a map keyed by e-mail or card number), so the detectors see it too.
                    let child = self.step(states, Seg::Key(key));
                    let shown = if self.profile.detectors.is_empty() {
                        None
                    } else {
                        self.detect(key, None)?
                    };
                    let at = PathSeg::Key(shown.clone().unwrap_or_else(|| key.clone()));
                    if let Some(new) = shown {
                        renamed.push((i, new));
                    }
                    if let Some(ri) = self.matched_rule(&child) {
                        // Decided on the unchanged record (its consent flag), applied after.
                        match self.field_verdict(ri, value, Some(members.as_slice()), &at)? {
                            Verdict::Keep => {}
                            Verdict::Replace(v) => {
                                if let Some(m) = members.get_mut(i) {
                                    m.1 = v;
                                }
                            }
                            Verdict::Remove => remove.push(i),
                        }
                        continue;
                    }
                    if child.iter().all(|&s| s == 0) && self.nothing_to_detect(value) {
                        continue;
                    }
                    self.stack.push(at);
                    if let Some((_, v)) = members.get_mut(i) {
                        self.visit(v, &child)?;
                    }
                    self.stack.pop();
                }
                rename(members, renamed);
                for i in remove.into_iter().rev() {
                    members.remove(i);
                }
            }
            Json::Arr(items) => {
                let mut remove = Vec::new();
                for (i, item) in items.iter_mut().enumerate() {
                    let child = self.step(states, Seg::Index(i));
                    let at = PathSeg::Index(i);
                    if let Some(ri) = self.matched_rule(&child) {
                        match self.field_verdict(ri, item, None, &at)? {
                            Verdict::Keep => {}
                            Verdict::Replace(v) => *item = v,
                            Verdict::Remove => remove.push(i),
                        }
                        continue;
                    }
                    self.stack.push(at);
                    self.visit(item, &child)?;
                    self.stack.pop();
                }
                for i in remove.into_iter().rev() {
                    items.remove(i);
                }
            }
            Json::Str(s) => {
                if !self.profile.detectors.is_empty() {
                    if let Some(new) = self.detect(s, None)? {
                        *s = new;
                    }
                }
            }
            Json::Num(n) => {
                // A number is read by its value, however it is spelled: `4.111111111111111e15`
                // is the card 4111111111111111 to any client that parses it.
                let card = self.profile.card_rule.and_then(|ri| {
                    crate::number::integer_views(n)
                        .into_iter()
                        .find(|v| crate::detect::Detectors::is_card_number(v))
                        .map(|v| (ri, v))
                });
                if let Some((ri, digits)) = card {
                    if let Some(rule) = self.rule(ri) {
                        if allowed(rule, &self.caller) {
                            self.report.reveal(ri);
                        } else {
                            let masked = rule.action.apply(&digits, self.caller.key)?;
                            let stack = &self.stack;
                            self.report.hit(ri, || pointer(stack, None));
                            *node = Json::Str(masked);
                        }
                    }
                }
            }
            Json::Null | Json::Bool(_) => {}
        }
        Ok(())
    }

    /// Applies the detectors to one string; `None` when nothing changes. `base` is the byte
    /// offset of the string in a text body (pointers as `#offset`), `None` inside JSON.
    fn detect(&mut self, s: &str, base: Option<usize>) -> Result<Option<String>, NoKey> {
        let stack = std::mem::take(&mut self.stack);
        let out = self.detect_at(s, &|start| match base {
            Some(b) => format!("#{}", b + start),
            None => pointer(&stack, None),
        });
        self.stack = stack;
        out
    }

    /// Applies the detectors to one string; `None` when nothing changes. `at` gives the
    /// location reported for a hit starting at a byte offset of `s`.
    pub(crate) fn detect_at(
        &mut self,
        s: &str,
        at: &dyn Fn(usize) -> String,
    ) -> Result<Option<String>, NoKey> {
        let found = self.profile.detectors.find(s.as_bytes());
        if found.is_empty() {
            return Ok(None);
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        let mut changed = false;
        for f in found {
            let Some(&ri) = self.profile.detector_rules.get(f.detector) else {
                continue;
            };
            let Some(rule) = self.rule(ri) else { continue };
            if allowed(rule, &self.caller) {
                self.report.reveal(ri);
                continue;
            }
            let (Some(before), Some(hit)) = (s.get(last..f.start), s.get(f.start..f.end)) else {
                continue; // not on character boundaries (custom pattern): skip rather than split
            };
            out.push_str(before);
            out.push_str(&replacement(&rule.action, hit, self.caller.key)?);
            last = f.end;
            changed = true;
            self.report.hit(ri, || at(f.start));
        }
        if !changed {
            return Ok(None);
        }
        out.push_str(s.get(last..).unwrap_or_default());
        Ok(Some(out))
    }
}

/// What replaces a detected `hit`: the action applied to the value a reader sees (URL escapes
/// undone, so `ada%40x.com` tokenizes like `ada@x.com`), escaped again when the hit was.
pub(crate) fn replacement(
    action: &Action,
    hit: &str,
    key: Option<&TokenKey>,
) -> Result<String, NoKey> {
    match crate::detect::unescaped(hit) {
        Some(plain) => Ok(crate::detect::escape(&action.apply(&plain, key)?)),
        None => action.apply(hit, key),
    }
}

/// Applies masked member names. Two names may mask to the same text (`***@acme.example.com`
/// twice); a client's parser would then keep one member and silently lose the other, so a
/// masked name that equals any other name of the object gets `#2`, `#3`… (the first free).
fn rename(members: &mut [(String, Json)], renamed: Vec<(usize, String)>) {
    if renamed.is_empty() {
        return;
    }
    let mut taken: std::collections::HashSet<String> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| !renamed.iter().any(|(r, _)| r == i))
        .map(|(_, (k, _))| k.clone())
        .collect();
    for (i, name) in renamed {
        let mut unique = name.clone();
        let mut n = 2u32;
        while taken.contains(&unique) {
            unique = format!("{name}#{n}");
            n += 1;
        }
        taken.insert(unique.clone());
        if let Some(m) = members.get_mut(i) {
            m.0 = unique;
        }
    }
}

/// The consent flag at a dotted path in a record: revealed only on a literal `true`.
fn consent_flag(record: &[(String, Json)], path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    // The last duplicate wins, as in most parsers that will read this body.
    record
        .iter()
        .rev()
        .find(|(k, _)| k == first)
        .and_then(|(_, v)| v.dotted(rest))
        .is_some_and(|v| *v == Json::Bool(true))
}

/// Masks a parsed JSON document in place.
pub fn mask_json(
    cfg: &PiiConfig,
    profile: &Profile,
    caller: Caller<'_>,
    doc: &mut Json,
) -> Result<Report, NoKey> {
    let mut w = Walker {
        cfg,
        profile,
        caller,
        report: Report::new(cfg),
        stack: Vec::new(),
    };
    let start: Vec<u64> = profile
        .paths
        .iter()
        .map(|&(ri, pi)| {
            cfg.rules
                .get(ri)
                .and_then(|r| r.fields.get(pi))
                .map_or(0, |p| p.start())
        })
        .collect();
    w.visit(doc, &start)?;
    Ok(w.report)
}

/// Masks a text body (already decoded) with the profile's detectors; `None` when nothing
/// changed.
pub fn mask_text(
    cfg: &PiiConfig,
    profile: &Profile,
    caller: Caller<'_>,
    text: &str,
) -> Result<(Option<String>, Report), NoKey> {
    let mut w = Walker {
        cfg,
        profile,
        caller,
        report: Report::new(cfg),
        stack: Vec::new(),
    };
    let out = w.detect(text, Some(0))?;
    Ok((out, w.report))
}

/// What masking did to one header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOutcome {
    /// Unchanged.
    Keep,
    /// Replace the value.
    Replace(String),
    /// Remove the header (a header rule whose action is `drop`).
    Remove,
}

/// Masks header values: a header named by a header rule is decided by the first such rule of
/// the profile (its whole value), every other one goes through the detectors. `headers` are
/// the ones to inspect (name in lower case, value); the outcome of each, in order.
pub fn mask_headers(
    cfg: &PiiConfig,
    profile: &Profile,
    caller: Caller<'_>,
    headers: &[(&str, &str)],
) -> Result<(Vec<HeaderOutcome>, Report), NoKey> {
    let mut w = Walker {
        cfg,
        profile,
        caller,
        report: Report::new(cfg),
        stack: Vec::new(),
    };
    let mut out = Vec::with_capacity(headers.len());
    for &(name, value) in headers {
        let rule = profile.header_rules.iter().copied().find(|&ri| {
            cfg.rules
                .get(ri)
                .is_some_and(|r| r.headers.iter().any(|h| h == name))
        });
        if let (Some(ri), Some(r)) = (rule, rule.and_then(|ri| cfg.rules.get(ri))) {
            // A header has no record to carry a consent flag: a rule that asks for consent
            // never reveals one.
            if r.consent.is_none() && allowed(r, &caller) {
                w.report.reveal(ri);
                out.push(HeaderOutcome::Keep);
                continue;
            }
            w.report.hit(ri, || format!("/header:{name}"));
            out.push(match &r.action {
                Action::Drop => HeaderOutcome::Remove,
                a => HeaderOutcome::Replace(a.apply(value, caller.key)?),
            });
            continue;
        }
        w.stack = vec![PathSeg::Key(format!("header:{name}"))];
        out.push(match w.detect(value, None)? {
            Some(masked) => HeaderOutcome::Replace(masked),
            None => HeaderOutcome::Keep,
        });
    }
    Ok((out, w.report))
}
