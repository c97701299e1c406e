//! The streaming masker: one pass of the core's tokenizer over a JSON body, untouched text
//! copied as it is and only what a rule or detector hits written anew — no tree is built.
//!
//! The decisions are the tree walk's ([`crate::mask`]; both go through the same [`Walker`]):
//! a value matched by a field rule is decided by that rule alone, other strings and member
//! names go through the detectors, numbers through the payment-card detector. What differs is
//! what stays as it was: whitespace and escapes of untouched text are kept byte for byte (the
//! tree walk wrote the whole document anew, compactly), and a body with nothing to mask is
//! never copied. Two decisions need a whole object and look ahead in it, only when taken (each
//! at most once per object): a consent flag, read only when the caller's scopes would reveal
//! the value, and a masked member name, made unique among the object's names.

use crate::action::{Action, NoKey};
use crate::config::{PiiConfig, Profile};
use crate::json::{self, Json, JsonError};
use crate::jsonpath::{FieldPath, Seg};
use crate::mask::{allowed, Caller, Report, Verdict, Walker};
use portcullis_core::json::{write_string, Event, Limits, Text, Tokenizer};
use portcullis_core::word::{self, non_digits};

/// Why a document could not be masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// Not JSON, or nested too deep (the whole body is checked before a key error is told).
    Json(JsonError),
    /// A tokenize action with no key for the caller's tenant.
    NoKey,
}

impl From<NoKey> for StreamError {
    fn from(_: NoKey) -> Self {
        StreamError::NoKey
    }
}

/// What masking a document did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    /// The masked document; `None` when nothing was rewritten (the input is the output).
    pub body: Option<String>,
    /// Counts and pointers.
    pub report: Report,
}

/// Masks a complete JSON document (UTF-8 text) in one pass.
pub fn mask_document(
    cfg: &PiiConfig,
    profile: &Profile,
    caller: Caller<'_>,
    text: &str,
) -> Result<Streamed, StreamError> {
    let limits = Limits {
        max_depth: json::MAX_DEPTH,
        ..Limits::default()
    };
    let paths: Vec<&FieldPath> = profile
        .paths
        .iter()
        .filter_map(|&(ri, pi)| cfg.rules.get(ri).and_then(|r| r.fields.get(pi)))
        .collect();
    if paths.len() != profile.paths.len() {
        // A compiled profile names only paths that exist; anything else is refused, not
        // masked with some rules missing.
        return Err(StreamError::Json(JsonError::Syntax(0)));
    }
    let mut m = Masker {
        w: Walker::new(cfg, profile, caller),
        s: text,
        next: paths.iter().map(|p| p.start()).collect(),
        next_other: false,
        unnamed: UNNAMED
            .iter()
            .copied()
            .find(|u| !paths.iter().any(|p| p.names(Seg::Key(u))))
            .filter(|_| !paths.iter().any(|p| p.names(Seg::Index(usize::MAX)))),
        keys: KeyFilter::new(paths.iter().flat_map(|p| p.keys())),
        named: {
            let mut named: Vec<&str> = Vec::new();
            for k in paths.iter().flat_map(|p| p.keys()) {
                if !named.contains(&k) {
                    named.push(k);
                }
            }
            named
        },
        memo: Vec::new(),
        indices: paths.iter().flat_map(|p| p.indices()).collect(),
        paths,
        out: None,
        cursor: 0,
        frames: Vec::new(),
        states: Vec::new(),
        detect: !profile.detectors.is_empty(),
        customs: !profile.detectors.customs_absent(text.as_bytes()),
        name_memo: [[None; 2]; NAME_MEMO],
        masked: String::new(),
    };
    m.memo = (0..m.named.len() + 2).map(|_| Memo::default()).collect();
    let mut t = Tokenizer::for_str(text, limits);
    match m.run(&mut t) {
        Ok(()) => {}
        // A key error half-way through a body that is not JSON at all is a JSON error, as
        // when the document was parsed first.
        Err(StreamError::NoKey) => {
            portcullis_core::json::validate(text.as_bytes(), limits)
                .map_err(|e| StreamError::Json(json::error(e)))?;
            return Err(StreamError::NoKey);
        }
        Err(e) => return Err(e),
    }
    let body = match m.out.take() {
        Some(mut out) => {
            out.push_str(text.get(m.cursor..).unwrap_or_default());
            Some(out)
        }
        None => None,
    };
    Ok(Streamed {
        body,
        report: m.w.report,
    })
}

/// Member names one of which no path names (a profile has a finite number of paths).
const UNNAMED: &[&str] = &["\u{0}", "\u{0}\u{0}", "\u{0}\u{1}", "\u{1}"];

/// Lengths and first bytes of the member names field paths name: most names of a document
/// are told apart from all of them without comparing text.
struct KeyFilter {
    lens: u64,
    firsts: [u64; 4],
}

impl KeyFilter {
    fn new<'k>(keys: impl Iterator<Item = &'k str>) -> Self {
        let mut f = KeyFilter {
            lens: 0,
            firsts: [0; 4],
        };
        for k in keys {
            f.lens |= 1 << k.len().min(63);
            let b = k.as_bytes().first().copied().unwrap_or(0);
            if let Some(w) = f.firsts.get_mut(usize::from(b >> 6)) {
                *w |= 1 << (b & 63);
            }
        }
        f
    }

    /// False when no path names `k`.
    fn may_name(&self, k: &str) -> bool {
        let b = k.as_bytes().first().copied().unwrap_or(0);
        self.lens & (1 << k.len().min(63)) != 0
            && self
                .firsts
                .get(usize::from(b >> 6))
                .is_some_and(|w| w & (1 << (b & 63)) != 0)
    }
}

/// The last stepping of the paths into one fixed segment: the states it started from, the
/// states it gave and the rule matched. Records of a list sit in the same states, so their
/// members step alike and are looked up, not stepped again.
#[derive(Default)]
struct Memo {
    set: bool,
    from: Vec<u64>,
    to: Vec<u64>,
    rule: Option<usize>,
}

/// Where the current member or element of a container is, for pointers.
enum Loc<'s> {
    /// Nothing yet.
    None,
    /// A member name as written.
    Key(Text<'s>),
    /// A member name as the detectors masked it.
    Shown(String),
    /// An array element.
    Index(usize),
}

/// A member name read, its value not yet.
struct Member {
    /// Offset of the name's opening quote.
    start: usize,
    /// Offset just after the name's closing quote.
    name_end: usize,
    /// The field rule its path matched.
    rule: Option<usize>,
    /// The name to write instead (masked by a detector, made unique).
    rename: Option<String>,
}

/// An open object or array.
struct Frame<'s> {
    object: bool,
    /// Offset of the opening bracket.
    open: usize,
    /// Some field path may still match below (else paths are not stepped).
    live: bool,
    /// The rule matching a member name or index no path names.
    other_rule: Option<usize>,
    /// Members or elements so far.
    count: usize,
    loc: Loc<'s>,
    /// The member whose value comes next (objects).
    member: Option<Member>,
    /// A member or element has been kept; `last_end` is where the last one kept ends.
    kept_any: bool,
    last_end: usize,
    /// A member or element has been removed.
    removed_any: bool,
    /// Consent flags looked up in this object, by rule.
    consent: Vec<(usize, bool)>,
    /// Unique masked names of this object's members, by member index (looked up once).
    renames: Option<Vec<Option<String>>>,
}

struct Masker<'c, 's> {
    w: Walker<'c>,
    s: &'s str,
    /// The profile's field paths, in `profile.paths` order.
    paths: Vec<&'c FieldPath>,
    /// States of every path below the current member or element (scratch).
    next: Vec<u64>,
    /// `next` is stale: the states are the innermost container's below an unnamed segment
    /// (see [`Masker::take_next`]).
    next_other: bool,
    /// A member name no path names (and no path names index `usize::MAX`); `None`: every
    /// segment steps every path.
    unnamed: Option<&'static str>,
    /// What the member names paths name look like.
    keys: KeyFilter,
    /// The distinct member names the paths name.
    named: Vec<&'c str>,
    /// The array indices the paths name.
    indices: Vec<usize>,
    /// Steppings into each of `named` (by index), then into a segment no path names below an
    /// object and below an array.
    memo: Vec<Memo>,
    /// The output so far, from the first rewrite on; input before `cursor` is accounted for.
    out: Option<String>,
    cursor: usize,
    frames: Vec<Frame<'s>>,
    /// Per open container: the states of every path there, then the states below a member
    /// name or index no path names (`2 * paths.len()` per frame).
    states: Vec<u64>,
    detect: bool,
    /// A custom pattern may match in some string without escapes.
    customs: bool,
    /// What member names without escapes were found to be, by a hash of their text (two
    /// names per slot): the records of a list repeat the same few names, each worked out once.
    name_memo: [[Option<NameMemo<'s>>; 2]; NAME_MEMO],
    /// The masked text of a string or number member, reused from one to the next.
    masked: String,
}

/// Slots of [`Masker::name_memo`] (a power of two).
const NAME_MEMO: usize = 32;

/// A member name (without escapes) as [`Masker::classify`] found it.
#[derive(Clone, Copy)]
struct NameMemo<'s> {
    raw: &'s str,
    /// Its text as [`name_words`] reads it.
    head: u64,
    tail: u64,
    /// The detectors may find something in it.
    may_find: bool,
    /// Its index in `named`, if a path names it.
    slot: Option<usize>,
}

impl<'c, 's> Masker<'c, 's> {
    fn run(&mut self, t: &mut Tokenizer<'s>) -> Result<(), StreamError> {
        while let Some(ev) = t
            .next_event()
            .map_err(|e| StreamError::Json(json::error(e)))?
        {
            match ev {
                Event::Name(name) => self.name(name)?,
                Event::EndObject | Event::EndArray => self.close(t.offset()),
                _ => self.value(ev, t)?,
            }
        }
        Ok(())
    }

    fn out(&mut self) -> &mut String {
        let cap = self.s.len() + self.s.len() / 8 + 64;
        self.out.get_or_insert_with(|| String::with_capacity(cap))
    }

    /// Copies the input up to `at`.
    fn copy_to(&mut self, at: usize) {
        if at > self.cursor {
            let (from, s) = (self.cursor, self.s);
            self.out().push_str(s.get(from..at).unwrap_or_default());
            self.cursor = at;
        }
    }

    /// Writes `text` as a JSON string in place of the input `start..end`.
    fn replace(&mut self, start: usize, end: usize, text: &str) {
        self.copy_to(start);
        write_string(text, self.out());
        self.cursor = end;
    }

    /// Drops the input up to `end`.
    fn skip_to(&mut self, end: usize) {
        self.out();
        self.cursor = self.cursor.max(end);
    }

    /// Steps every live path of the innermost container into `seg`; the first field rule
    /// that matches there.
    fn step(&mut self, seg: Seg<'_>) -> Option<usize> {
        let slot = match seg {
            Seg::Key(k) => self.slot_of(k),
            Seg::Index(_) => None,
        };
        self.step_slot(seg, slot)
    }

    /// The index in `named` of member name `k`, if a path names it.
    fn slot_of(&self, k: &str) -> Option<usize> {
        if self.keys.may_name(k) {
            self.named.iter().position(|x| *x == k)
        } else {
            None
        }
    }

    /// [`Masker::step`] where `slot` is already known (`slot_of` of a key, `None` for an
    /// index).
    #[inline]
    fn step_slot(&mut self, seg: Seg<'_>, slot: Option<usize>) -> Option<usize> {
        let named = match seg {
            Seg::Key(_) => slot.is_some(),
            Seg::Index(i) => self.indices.contains(&i),
        };
        if !named && self.unnamed.is_some() {
            // Most names and indices are named by no path: every path steps as over any other.
            // Read only if the value is a container (`take_next`): most values are not.
            self.next_other = true;
            return self.frames.last().and_then(|f| f.other_rule);
        }
        self.step_named(seg, slot)
    }

    /// [`Masker::step_slot`] into a segment some path names (or of every segment, when there
    /// is no unnamed one).
    #[inline(never)]
    fn step_named(&mut self, seg: Seg<'_>, slot: Option<usize>) -> Option<usize> {
        let n = self.paths.len();
        let base = self.frames.len().saturating_sub(1) * 2 * n;
        match slot {
            Some(slot) => self.step_memo(slot, base, seg),
            None => self.step_from(base, seg),
        }
    }

    /// No path can match below the current member or element.
    fn clear_next(&mut self) {
        self.next_other = false;
        self.next.fill(0);
    }

    /// Makes `next` hold the states [`Masker::step`] left in the innermost container's
    /// states below an unnamed segment, before a container value reads them.
    fn take_next(&mut self) {
        if std::mem::take(&mut self.next_other) {
            let n = self.paths.len();
            let base = self.frames.len().saturating_sub(1) * 2 * n;
            if let Some(other) = self.states.get(base + n..base + 2 * n) {
                self.next.copy_from_slice(other);
            }
        }
    }

    /// [`Masker::step_from`] into the fixed segment of memo `slot`: looked up when the states
    /// are those it last stepped from.
    #[inline]
    fn step_memo(&mut self, slot: usize, base: usize, seg: Seg<'_>) -> Option<usize> {
        let n = self.paths.len();
        self.next_other = false;
        if let (Some(m), Some(from)) = (self.memo.get(slot), self.states.get(base..base + n)) {
            if m.set && m.from == from && m.to.len() == self.next.len() {
                self.next.copy_from_slice(&m.to);
                return m.rule;
            }
        }
        self.step_memo_anew(slot, base, seg)
    }

    /// [`Masker::step_memo`] when the memo does not hold the stepping: stepped and kept.
    #[inline(never)]
    fn step_memo_anew(&mut self, slot: usize, base: usize, seg: Seg<'_>) -> Option<usize> {
        let n = self.paths.len();
        let rule = self.step_from(base, seg);
        if let (Some(m), Some(from)) = (self.memo.get_mut(slot), self.states.get(base..base + n)) {
            m.from.clear();
            m.from.extend_from_slice(from);
            m.to.clear();
            m.to.extend_from_slice(&self.next);
            m.rule = rule;
            m.set = true;
        }
        rule
    }

    /// Steps the states at `states[base..]` into `seg` (into `next`); the first field rule
    /// that matches there.
    fn step_from(&mut self, base: usize, seg: Seg<'_>) -> Option<usize> {
        self.next_other = false;
        let mut rule = None;
        for (k, p) in self.paths.iter().enumerate() {
            let s = self.states.get(base + k).copied().unwrap_or(0);
            let next = if s == 0 { 0 } else { p.step(s, seg) };
            if let Some(x) = self.next.get_mut(k) {
                *x = next;
            }
            if rule.is_none() && next != 0 && p.accepts(next) {
                rule = self.w.profile.paths.get(k).map(|&(ri, _)| ri);
            }
        }
        rule
    }

    /// Whether the detectors may find something in member name `name`, and its slot in
    /// `named`. Names without escapes are looked up in `name_memo` first, by their length
    /// and their text read as two words ([`name_words`]).
    #[inline(always)]
    fn classify(&mut self, name: Text<'s>) -> (bool, Option<usize>) {
        let raw = name.raw();
        let n = raw.len();
        let words = if name.has_escapes() {
            None
        } else {
            name_words(self.s.as_bytes(), name.start + 1, n)
        };
        let Some((head, tail)) = words else {
            return self.classify_anew(name);
        };
        let h = ((head.wrapping_add(tail) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59)
            as usize
            & (NAME_MEMO - 1);
        // Up to 16 bytes the words are the whole text; longer names are compared whole.
        let same = |e: &Option<NameMemo<'_>>| {
            e.as_ref().is_some_and(|e| {
                e.head == head
                    && e.tail == tail
                    && e.raw.len() == n
                    && (n <= 16 || e.raw.as_bytes() == raw.as_bytes())
            })
        };
        if let Some([first, second]) = self.name_memo.get(h) {
            if same(first) {
                return first.map_or((true, None), |e| (e.may_find, e.slot));
            }
            if same(second) {
                return second.map_or((true, None), |e| (e.may_find, e.slot));
            }
        }
        let (may_find, slot) = self.classify_anew(name);
        if let Some(ways) = self.name_memo.get_mut(h) {
            // Two names of a record that share a slot take a way each; the way taken last
            // stays.
            ways[1] = ways[0];
            ways[0] = Some(NameMemo {
                raw,
                head,
                tail,
                may_find,
                slot,
            });
        }
        (may_find, slot)
    }

    /// [`Masker::classify`] without the memo.
    #[inline(never)]
    fn classify_anew(&self, name: Text<'s>) -> (bool, Option<usize>) {
        let key = name.unescape();
        let may_find = self.detect
            && self
                .w
                .profile
                .detectors
                .may_find(key.as_bytes(), self.customs || name.has_escapes());
        (may_find, self.slot_of(&key))
    }

    fn name(&mut self, name: Text<'s>) -> Result<(), StreamError> {
        let (may_find, slot) = self.classify(name);
        if !may_find && (slot.is_none() && self.unnamed.is_some()) {
            // Most names: nothing to detect and named by no path, so every path steps as over
            // any other name (see `step_slot`); all of it done on the innermost frame at once.
            let Some(top) = self.frames.last_mut() else {
                return Ok(());
            };
            top.count += 1;
            let live = top.live;
            top.loc = Loc::Key(name);
            top.member = Some(Member {
                start: name.start,
                name_end: name.start + name.raw().len() + 2,
                rule: if live { top.other_rule } else { None },
                rename: None,
            });
            if live {
                self.next_other = true;
            } else {
                self.clear_next();
            }
            return Ok(());
        }
        let key = name.unescape();
        let Some(top) = self.frames.last_mut() else {
            return Ok(());
        };
        let index = top.count;
        top.count += 1;
        let live = top.live;
        // A member name is text a client reads (a map keyed by e-mail), so the detectors
        // see it too.
        let mut shown = None;
        if may_find {
            let frames = &self.frames;
            shown = self.w.detect_at(&key, &|_| pointer(frames, false))?;
        }
        let rename = match shown {
            Some(_) => self.unique_name(index)?,
            None => None,
        };
        let rule = if live {
            self.step_slot(Seg::Key(&key), slot)
        } else {
            self.clear_next();
            None
        };
        if let Some(top) = self.frames.last_mut() {
            top.loc = shown.map_or(Loc::Key(name), Loc::Shown);
            top.member = Some(Member {
                start: name.start,
                name_end: name.start + name.raw().len() + 2,
                rule,
                rename,
            });
        }
        Ok(())
    }

    fn value(&mut self, ev: Event<'s>, t: &mut Tokenizer<'s>) -> Result<(), StreamError> {
        let end = t.offset();
        if self.plain_member(ev, end) {
            return Ok(());
        }
        let (start, container) = match ev {
            Event::Str(x) => (x.start, false),
            Event::Num(n) => (end - n.len(), false),
            Event::Bool(true) | Event::Null => (end - 4, false),
            Event::Bool(false) => (end - 5, false),
            Event::StartObject | Event::StartArray => (end - 1, true),
            Event::Name(_) | Event::EndObject | Event::EndArray => return Ok(()),
        };
        // Where the value sits: its member (name first) or element, and the rule that
        // matched it. The document itself is matched by no rule.
        let (member, rule, in_object) = match self.frames.last_mut() {
            None => (None, None, false),
            Some(f) if f.object => {
                let m = f.member.take();
                let rule = m.as_ref().and_then(|m| m.rule);
                (m, rule, true)
            }
            Some(f) => {
                let i = f.count;
                f.count += 1;
                f.loc = Loc::Index(i);
                let rule = if f.live {
                    self.step(Seg::Index(i))
                } else {
                    self.clear_next();
                    None
                };
                (None, rule, false)
            }
        };
        let member_start = member.as_ref().map_or(start, |m| m.start);
        if let Some(ri) = rule {
            let end = if container {
                skip_container(t)?;
                t.offset()
            } else {
                end
            };
            return self.decide(ri, ev, (member_start, start, end), member, in_object);
        }
        if container {
            self.keep(member, member_start);
            self.take_next();
            let live = self.next.iter().any(|&s| s != 0);
            if !live && !self.detect {
                skip_container(t)?;
                self.kept(t.offset());
                return Ok(());
            }
            let object = ev == Event::StartObject;
            let base = self.states.len();
            self.states.extend_from_slice(&self.next);
            // What every path becomes below a segment no path names: computed once here.
            let other_rule = if live {
                let seg = if object {
                    Seg::Key(self.unnamed.unwrap_or_default())
                } else {
                    Seg::Index(usize::MAX)
                };
                let slot = self.named.len() + usize::from(!object);
                self.step_memo(slot, base, seg)
            } else {
                self.clear_next();
                None
            };
            self.states.extend_from_slice(&self.next);
            self.frames.push(Frame {
                object,
                open: start,
                live,
                other_rule,
                count: 0,
                loc: Loc::None,
                member: None,
                kept_any: false,
                last_end: start + 1,
                removed_any: false,
                consent: Vec::new(),
                renames: None,
            });
            return Ok(());
        }
        self.keep(member, member_start);
        match ev {
            Event::Str(x) if self.detect => {
                // What the detectors read is the value, escapes undone (`\u0040` is `@`).
                let v = x.unescape();
                if !self
                    .w
                    .profile
                    .detectors
                    .may_find(v.as_bytes(), self.customs || x.has_escapes())
                {
                    self.kept(end);
                    return Ok(());
                }
                let frames = &self.frames;
                if let Some(new) = self.w.detect_at(&v, &|_| pointer(frames, true))? {
                    self.replace(start, end, &new);
                }
            }
            Event::Num(n) => self.card(n, start, end)?,
            _ => {}
        }
        self.kept(end);
        Ok(())
    }

    /// The common value, done on the innermost frame at once: a scalar member of an object
    /// (or element of an array) that no rule matched, whose name stays, after no removed
    /// member, and in which nothing can be found (a number that cannot be a card, a string the detectors rule out). False
    /// when the value needs [`Masker::value`]'s full path (nothing has been changed then).
    #[inline]
    fn plain_member(&mut self, ev: Event<'s>, end: usize) -> bool {
        let Some(f) = self.frames.last_mut() else {
            return false;
        };
        let plain = !f.removed_any
            && if f.object {
                f.member
                    .as_ref()
                    .is_some_and(|m| m.rule.is_none() && m.rename.is_none())
            } else {
                // An element: no rule when no path can match below the array, or when its
                // index is named by no path and no rule matches an unnamed one (`step_slot`).
                !f.live
                    || (self.unnamed.is_some()
                        && f.other_rule.is_none()
                        && !self.indices.contains(&f.count))
            };
        if !plain {
            return false;
        }
        let nothing = match ev {
            Event::Str(x) => {
                !self.detect
                    || !self
                        .w
                        .profile
                        .detectors
                        .may_find(x.unescape().as_bytes(), self.customs || x.has_escapes())
            }
            Event::Num(n) => self.w.profile.card_rule.is_none() || !may_be_card(n),
            Event::Bool(_) | Event::Null => true,
            _ => false,
        };
        if !nothing {
            return false;
        }
        f.kept_any = true;
        f.last_end = end;
        if f.object {
            f.member = None;
        } else {
            // As `value` steps an element (see `step_slot` and `clear_next`).
            f.loc = Loc::Index(f.count);
            f.count += 1;
            if f.live {
                self.next_other = true;
            } else {
                self.clear_next();
            }
        }
        true
    }

    /// A value matched by field rule `ri`: `span` is (where its member starts, where the
    /// value starts, where it ends).
    fn decide(
        &mut self,
        ri: usize,
        ev: Event<'s>,
        span: (usize, usize, usize),
        member: Option<Member>,
        in_object: bool,
    ) -> Result<(), StreamError> {
        let (member_start, start, end) = span;
        let Some(rule) = self.w.rule(ri) else {
            self.keep(member, member_start);
            self.kept(end);
            return Ok(());
        };
        let s = self.s;
        let (open, cached) = match self.frames.last() {
            Some(f) => (f.open, f.consent.iter().find(|c| c.0 == ri).map(|c| c.1)),
            None => (0, None),
        };
        let mut looked = None;
        let reveal = self.w.reveals(ri, &mut |path| {
            if !in_object {
                return false; // an array element has no record to carry a flag
            }
            *looked.get_or_insert_with(|| cached.unwrap_or_else(|| consent_flag(s, open, path)))
        });
        if let (Some(v), None, Some(f)) = (looked, cached, self.frames.last_mut()) {
            f.consent.push((ri, v));
        }
        if reveal {
            self.keep(member, member_start);
            self.kept(end);
            return Ok(());
        }
        let mut removed = rule.action == Action::Drop;
        if removed {
            self.remove(end);
        } else {
            // Strings and numbers are acted on as text, without a tree value, and written
            // as a string: what `Walker::apply_text` decides (`Drop` was handled above), into
            // a buffer kept from one member to the next rather than a string allocated each.
            let text = match &ev {
                Event::Str(x) => Some(x.unescape()),
                Event::Num(n) => Some(std::borrow::Cow::Borrowed(*n)),
                _ => None,
            };
            if let Some(text) = text {
                let mut masked = std::mem::take(&mut self.masked);
                masked.clear();
                let applied = rule
                    .action
                    .apply_into(&text, self.w.caller.key, &mut masked);
                if applied.is_ok() {
                    self.keep(member, member_start);
                    self.replace(start, end, &masked);
                }
                self.masked = masked;
                applied?;
                let frames = &self.frames;
                self.w.report.hit(ri, || pointer(frames, true));
                self.kept(end);
                return Ok(());
            }
            let value = match ev {
                Event::Bool(b) => Json::Bool(b),
                Event::Null => Json::Null,
                _ => json::parse(s.get(start..end).unwrap_or_default().as_bytes())
                    .map_err(StreamError::Json)?,
            };
            let verdict = self.w.apply(&rule.action, &value)?;
            match verdict {
                Verdict::Keep => self.keep(member, member_start),
                Verdict::Remove => {
                    removed = true;
                    self.remove(end);
                }
                Verdict::Replace(v) => {
                    self.keep(member, member_start);
                    match v {
                        Json::Str(text) => self.replace(start, end, &text),
                        other => {
                            self.copy_to(start);
                            let b = other.to_bytes();
                            self.out().push_str(&String::from_utf8_lossy(&b));
                            self.cursor = end;
                        }
                    }
                }
            }
        }
        let frames = &self.frames;
        self.w.report.hit(ri, || pointer(frames, true));
        if !removed {
            self.kept(end);
        }
        Ok(())
    }

    /// A number that denotes a payment card, however it is spelled, becomes a masked string.
    fn card(&mut self, n: &str, start: usize, end: usize) -> Result<(), StreamError> {
        let Some(ri) = self.w.profile.card_rule else {
            return Ok(());
        };
        if !may_be_card(n) {
            return Ok(());
        }
        let int = n.strip_prefix('-').unwrap_or(n);
        let digits = if all_digits(int.as_bytes()) && !(int.len() > 1 && int.starts_with('0')) {
            // A plain JSON integer (no leading zeros) denotes only itself: its one integer
            // view is its own digits, read without building the views.
            if !crate::detect::Detectors::is_card_number(int) {
                return Ok(());
            }
            int.to_string()
        } else {
            let Some(digits) = crate::number::integer_views(n)
                .into_iter()
                .find(|v| crate::detect::Detectors::is_card_number(v))
            else {
                return Ok(());
            };
            digits
        };
        let Some(rule) = self.w.rule(ri) else {
            return Ok(());
        };
        if allowed(rule, &self.w.caller) {
            self.w.report.reveal(ri);
            return Ok(());
        }
        let masked = rule.action.apply(&digits, self.w.caller.key)?;
        let frames = &self.frames;
        self.w.report.hit(ri, || pointer(frames, true));
        self.replace(start, end, &masked);
        Ok(())
    }

    /// The member (or element) starting at `start` stays: the comma a removed one before it
    /// left goes, and a masked name is written.
    #[inline]
    fn keep(&mut self, member: Option<Member>, start: usize) {
        // Most members follow a kept one and keep their names: nothing to write.
        let renamed = matches!(
            member,
            Some(Member {
                rename: Some(_),
                ..
            })
        );
        if renamed || self.frames.last().is_some_and(|f| f.removed_any) {
            self.keep_slow(member, start);
        }
    }

    /// [`Masker::keep`] when something was removed before or the name is masked.
    #[inline(never)]
    fn keep_slow(&mut self, member: Option<Member>, start: usize) {
        if self
            .frames
            .last()
            .is_some_and(|f| !f.kept_any && f.removed_any)
        {
            // Everything before it was removed: so is the comma after the last of those.
            self.skip_to(start);
        }
        if let Some(Member {
            start,
            name_end,
            rename: Some(name),
            ..
        }) = member
        {
            self.replace(start, name_end, &name);
        }
    }

    /// The member or element kept ends at `end`.
    fn kept(&mut self, end: usize) {
        if let Some(f) = self.frames.last_mut() {
            f.kept_any = true;
            f.last_end = end;
        }
    }

    /// Removes the member or element `start..end` and one comma next to it.
    fn remove(&mut self, end: usize) {
        let Some(f) = self.frames.last_mut() else {
            return;
        };
        f.removed_any = true;
        // After a kept one: from its end (the comma before this one). Else from the opening
        // bracket; the comma after this one goes when the next one is kept.
        let from = if f.kept_any { f.last_end } else { f.open + 1 };
        self.copy_to(from);
        self.skip_to(end);
    }

    fn close(&mut self, end: usize) {
        if self.frames.pop().is_some() {
            let n = self.paths.len();
            self.states.truncate(self.frames.len() * 2 * n);
        }
        self.kept(end);
    }

    /// The unique masked name of member `index` of the innermost object (the tree walk's
    /// `rename`): the names of the whole object are read once, ahead.
    fn unique_name(&mut self, index: usize) -> Result<Option<String>, StreamError> {
        let Some(open) = self.frames.last().map(|f| f.open) else {
            return Ok(None);
        };
        if let Some(Some(r)) = self.frames.last().map(|f| &f.renames) {
            return Ok(r.get(index).cloned().flatten());
        }
        let names = member_names(self.s, open);
        // Detected again, off the record: the walk reports each name when it gets there.
        let saved = std::mem::replace(&mut self.w.report, Report::new(self.w.cfg));
        let mut shown = Vec::with_capacity(names.len());
        let mut failed = None;
        for n in &names {
            match self.w.detect_at(n, &|_| String::new()) {
                Ok(s) => shown.push(s),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.w.report = saved;
        if let Some(e) = failed {
            return Err(e.into());
        }
        // Two names may mask to the same text: a client's parser would keep one member and
        // lose the other, so a masked name equal to any other gets `#2`, `#3`… (first free).
        let mut taken: std::collections::HashSet<&str> = names
            .iter()
            .zip(&shown)
            .filter(|(_, s)| s.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        let mut unique: Vec<Option<String>> = Vec::with_capacity(names.len());
        let mut owned = Vec::new();
        for s in &shown {
            let Some(name) = s else {
                unique.push(None);
                continue;
            };
            let mut u = name.clone();
            let mut k = 2u32;
            while taken.contains(u.as_str()) || owned.contains(&u) {
                u = format!("{name}#{k}");
                k += 1;
            }
            owned.push(u.clone());
            unique.push(Some(u));
        }
        taken.clear();
        let r = unique.get(index).cloned().flatten();
        if let Some(f) = self.frames.last_mut() {
            f.renames = Some(unique);
        }
        Ok(r)
    }
}

/// The `n` bytes of text at `at` in `b` as two words: the first eight (fewer: the others
/// zero) and, past eight, the last eight (else zero). Up to 16 bytes, equal lengths and words
/// are equal texts. Reads whole words: `None` within eight bytes of the end of `b` (a member
/// name is followed by at least its quote, a colon, a value and a bracket, so only a short
/// name at the very end of a broken document gets there).
#[inline(always)]
fn name_words(b: &[u8], at: usize, n: usize) -> Option<(u64, u64)> {
    let word =
        |i: usize| -> Option<u64> { b.get(i..).and_then(|r| r.first_chunk::<8>()).map(word::le) };
    let head = word(at)?;
    if n < 8 {
        return Some((head & ((1u64 << (8 * n)) - 1), 0));
    }
    if n == 8 {
        return Some((head, 0));
    }
    Some((head, word(at + n - 8)?))
}

/// False when the number `n` surely denotes no card: without an exponent, its integer part
/// (and the next integer up) has fewer than 13 digits.
fn may_be_card(n: &str) -> bool {
    let b = n.as_bytes();
    // A JSON number is `-?` digits, then maybe `.` digits, then maybe an exponent: when its
    // first 12 bytes (after the sign) are digits, its integer part is long enough; else only
    // an exponent can make it so.
    let d = b.strip_prefix(b"-").unwrap_or(b);
    let word = |at: usize| d.get(at..).and_then(|r| r.first_chunk::<8>()).map(word::le);
    if let (Some(lo), Some(hi)) = (word(0), word(4)) {
        if non_digits(lo) | non_digits(hi) == 0 {
            return true;
        }
    }
    b.iter().any(|&c| c == b'e' || c == b'E')
}

/// True when every byte of `b` is an ASCII digit; eight at a time (the last word overlapping
/// the one before it).
fn all_digits(b: &[u8]) -> bool {
    let word = word::padded;
    if b.len() < 8 {
        return b.iter().all(u8::is_ascii_digit);
    }
    b.chunks_exact(8).all(|c| non_digits(word(c)) == 0)
        && b.get(b.len() - 8..)
            .is_some_and(|c| non_digits(word(c)) == 0)
}

/// The JSON pointer of the current value (`with_top`), or of the innermost container.
fn pointer(frames: &[Frame<'_>], with_top: bool) -> String {
    let mut out = String::new();
    let last = frames.len().saturating_sub(1);
    for (i, f) in frames.iter().enumerate() {
        if i == last && !with_top {
            break;
        }
        let key = match &f.loc {
            Loc::None => continue,
            Loc::Key(t) => t.unescape(),
            Loc::Shown(s) => std::borrow::Cow::Borrowed(s.as_str()),
            Loc::Index(i) => {
                out.push('/');
                out.push_str(&i.to_string());
                continue;
            }
        };
        out.push('/');
        out.push_str(&key.replace('~', "~0").replace('/', "~1"));
    }
    out
}

/// Reads past the container whose opening bracket was the last event.
fn skip_container(t: &mut Tokenizer<'_>) -> Result<(), StreamError> {
    let depth = t.depth();
    while t
        .next_event()
        .map_err(|e| StreamError::Json(json::error(e)))?
        .is_some()
    {
        if t.depth() < depth {
            break;
        }
    }
    Ok(())
}

/// The names of the members of the object opening at `open`, unescaped, in order. The main
/// pass checks the same text; what this look-ahead makes of a broken object is never used.
fn member_names(s: &str, open: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut t = Tokenizer::for_str(s.get(open..).unwrap_or_default(), Limits::default());
    if t.next_event() != Ok(Some(Event::StartObject)) {
        return names;
    }
    while let Ok(Some(ev)) = t.next_event() {
        match ev {
            Event::Name(n) => {
                names.push(n.unescape().into_owned());
                if skip_value(&mut t).is_none() {
                    break;
                }
            }
            _ => break,
        }
    }
    names
}

/// Reads past one value; `None` on a broken document.
fn skip_value(t: &mut Tokenizer<'_>) -> Option<()> {
    match t.next_event().ok()?? {
        Event::StartObject | Event::StartArray => skip_container(t).ok(),
        _ => Some(()),
    }
}

/// The consent flag at a dotted path in the object opening at `open`: revealed only on a
/// literal `true`, the last duplicate of a name winning (as in the tree walk).
fn consent_flag(s: &str, open: usize, path: &[String]) -> bool {
    let mut t = Tokenizer::for_str(s.get(open..).unwrap_or_default(), Limits::default());
    t.next_event() == Ok(Some(Event::StartObject)) && flag_in_object(&mut t, path) == Some(true)
}

/// After `{`: the flag at `path` in this object (reads to its end).
fn flag_in_object(t: &mut Tokenizer<'_>, path: &[String]) -> Option<bool> {
    let (first, rest) = path.split_first()?;
    let mut found = false;
    loop {
        match t.next_event().ok()?? {
            Event::Name(n) if n.unescape() == first.as_str() => {
                found = match t.next_event().ok()?? {
                    Event::StartObject if !rest.is_empty() => flag_in_object(t, rest)?,
                    Event::StartObject | Event::StartArray => {
                        skip_container(t).ok()?;
                        false
                    }
                    ev => rest.is_empty() && ev == Event::Bool(true),
                };
            }
            Event::Name(_) => skip_value(t)?,
            Event::EndObject => return Some(found),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_digit_check_agrees_with_the_byte_one() {
        for len in 0..40 {
            let base: Vec<u8> = (0..len).map(|i| b'0' + (i % 10) as u8).collect();
            assert!(all_digits(&base));
            for at in 0..len {
                for b in [b'.', b'e', b'-', b'/', b':', 0x80, 0xb0, 0xff, 0] {
                    let mut v = base.clone();
                    v[at] = b;
                    assert!(!all_digits(&v), "{v:?}");
                }
            }
        }
    }

    #[test]
    fn short_names_are_their_words() {
        let texts: Vec<Vec<u8>> = (0..40)
            .flat_map(|n| {
                let base: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                let mut out = vec![base.clone()];
                for at in 0..n {
                    let mut v = base.clone();
                    v[at] = b'#';
                    out.push(v);
                }
                out
            })
            .collect();
        // Each text at a few offsets in a document, between quotes, with what follows it.
        let place = |t: &[u8], pad: usize, after: &[u8]| {
            let mut d = vec![b' '; pad];
            d.push(b'"');
            d.extend_from_slice(t);
            d.push(b'"');
            d.extend_from_slice(after);
            d
        };
        for a in &texts {
            for b in &texts {
                for (pa, pb) in [(0, 0), (1, 7), (5, 3)] {
                    let (da, db) = (place(a, pa, b":1}      "), place(b, pb, b":[true]}  "));
                    let wa = name_words(&da, pa + 1, a.len()).unwrap();
                    let wb = name_words(&db, pb + 1, b.len()).unwrap();
                    if a.len() <= 16 {
                        assert_eq!(a.len() == b.len() && wa == wb, a == b, "{a:?} {b:?}");
                    } else if a == b {
                        assert_eq!(wa, wb);
                    }
                }
            }
        }
        // Near the end of the input: no words (the caller works the name out anew).
        assert_eq!(name_words(b"\"ab\":1", 1, 2), None);
        assert_eq!(name_words(b"\"ab\":1}   ", 1, 2), Some((0x6261, 0)));
    }

    #[test]
    fn the_one_pass_card_precheck_agrees_with_the_two_pass_one() {
        let old = |n: &str| {
            if n.bytes().any(|b| b == b'e' || b == b'E') {
                return true;
            }
            let int = n.trim_start_matches('-');
            int.bytes().position(|b| b == b'.').unwrap_or(int.len()) >= 12
        };
        for int in [
            "0",
            "-0",
            "1",
            "12345678901",
            "123456789012",
            "-123456789012",
            "4111111111111111",
            "12345678901234567890",
            "-1234567890123",
        ] {
            for frac in ["", ".5", ".1234567890123"] {
                for exp in ["", "e5", "E-3", "e+12"] {
                    let n = format!("{int}{frac}{exp}");
                    assert_eq!(may_be_card(&n), old(&n), "{n}");
                }
            }
        }
    }
}
