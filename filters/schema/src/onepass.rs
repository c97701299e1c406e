//! One-pass validation: a schema whose keywords are all ones a streaming check can decide is
//! compiled into a [`Program`], which is run over the core tokenizer's events while the
//! tokenizer does the structural scan — no tree is built, nothing is parsed twice.
//!
//! What the program cannot decide alone is still decided by `jsonschema`, so the verdict is the
//! same: `pattern` and `format` are checked by a `jsonschema` validator compiled from just those
//! keywords, on the one string they apply to; the numeric keywords (`minimum`, `multipleOf`,
//! numeric `enum`/`const`, …) the same way on the one number. A schema using anything else
//! (`anyOf`, `uniqueItems`, `patternProperties`, `$id`, `$dynamicRef`, a non-2020-12 `$schema`,
//! an unknown keyword, …) gets no program, and the filter validates it with `jsonschema` alone.
//! The program only says valid or invalid: the error list of an invalid body comes from
//! `jsonschema`, so responses are unchanged. `tests/differential.rs` holds the two to the same
//! verdicts.

use jsonschema::{Draft, Validator};
use portcullis_core::json::{self, Event, Text, Tokenizer};
use portcullis_core::word;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Instance kinds, as bits of [`Node::types`].
const NULL: u8 = 1;
const BOOL: u8 = 2;
/// A number with no fractional part (JSON Schema's `integer`).
const INT: u8 = 4;
/// A number with a fractional part.
const FRAC: u8 = 8;
const STR: u8 = 16;
const ARR: u8 = 32;
const OBJ: u8 = 64;
const ANY: u8 = 127;

/// Keywords with no effect on the verdict under 2020-12 (annotations and containers).
const IGNORED: &[&str] = &[
    "title",
    "description",
    "$comment",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
];

/// The meta-schema URIs of draft 2020-12 (the filter's default draft).
const DRAFT_2020_12: &[&str] = &[
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
];

/// A scalar of a string/boolean/null `enum` or `const`, compared natively.
#[derive(Debug, PartialEq)]
enum Lit {
    Null,
    Bool(bool),
    Str(String),
}

/// A member name a node knows (from `properties` or `required`), ordered for a binary search
/// that compares integers first: the name's length and its first eight bytes decide almost
/// every step, so the bytes past them are compared only between names that share both.
#[derive(Debug)]
struct Key {
    len: usize,
    head: u64,
    name: String,
    /// The `properties` schema of the name, if it has one (else `additionalProperties`).
    node: Option<usize>,
    /// The name's bit in the frame's `seen` when it is `required`.
    required: Option<u32>,
}

/// A name's slot in [`Node::slots`] (of `1 << (64 - shift)` slots), from its length and head.
#[inline]
fn slot(len: usize, hd: u64, mul: u64, shift: u32) -> usize {
    let x = (hd ^ (len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(mul);
    usize::try_from(x >> shift).unwrap_or(usize::MAX)
}

/// The table of [`Node::slots`] for `keys` (sorted): the smallest table (from twice as many
/// slots as keys, up to 64 times as many) for which one of a few hundred odd multipliers puts
/// every key in a slot of its own; None when none does, when two keys share their length and
/// head (no table can part them), or past 256 keys. The search runs when a configuration is
/// loaded, in every worker's VM: past a few hundred keys almost no multiplier separates them
/// all, so it would zero a table of up to 64 slots per key for each of its 2,400 tries, and
/// the binary search it replaces takes only a few more steps there.
fn slot_table(keys: &[Key]) -> Option<(Vec<u16>, u64, u32)> {
    if keys.is_empty()
        || keys.len() > 256
        || keys
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.len == b.len && a.head == b.head))
    {
        return None;
    }
    let least = (2 * keys.len()).next_power_of_two().trailing_zeros();
    let mut mul = 0x2545_F491_4F6C_DD1Du64;
    for bits in least..least + 6 {
        let shift = 64 - bits;
        for _ in 0..400 {
            // The next odd multiplier of a fixed xorshift sequence: the table is the same on
            // every build of the same schema.
            mul ^= mul << 13;
            mul ^= mul >> 7;
            mul ^= mul << 17;
            let m = mul | 1;
            let mut slots = vec![0u16; 1usize << bits];
            let clash = keys.iter().enumerate().any(|(i, k)| {
                match slots.get_mut(slot(k.len, k.head, m, shift)) {
                    Some(s) if *s == 0 => {
                        *s = u16::try_from(i + 1).unwrap_or(u16::MAX);
                        false
                    }
                    _ => true,
                }
            });
            if !clash {
                return Some((slots, m, shift));
            }
        }
    }
    None
}

/// The order of [`Node::keys`]: length, head, then the rest of the bytes.
#[inline]
fn key_order(len: usize, hd: u64, name: &[u8], k: &Key) -> std::cmp::Ordering {
    k.len.cmp(&len).then(k.head.cmp(&hd)).then_with(|| {
        let a = k.name.as_bytes().get(8..).unwrap_or_default();
        a.cmp(name.get(8..).unwrap_or_default())
    })
}

/// One compiled (sub)schema.
#[derive(Debug)]
struct Node {
    /// `false`: nothing is valid.
    never: bool,
    /// Allowed kinds (`type`).
    types: u8,
    /// Other nodes applied to the same instance (`$ref`, `allOf`).
    all: Vec<usize>,
    /// `properties`, sorted by name.
    props: Vec<(String, usize)>,
    /// Every name of `properties` and `required`, for the member lookup: built by
    /// [`Program::finish`], sorted by [`Key`].
    keys: Vec<Key>,
    /// A collision-free hash table over `keys` (built by [`Program::finish`]): slot
    /// [`slot`]`(len, head, mul, shift)` holds a key's position plus one, 0 when empty. Empty
    /// when no multiplier separates the keys (two names alike in length and first eight bytes):
    /// then `keys` is searched.
    slots: Vec<u16>,
    mul: u64,
    shift: u32,
    /// This node and every node it applies with (`$ref`, `allOf`, transitively), each once and
    /// less the [inert](Node::inert) ones: built by [`Program::finish`], so a value's node set
    /// is looked up, not worked out.
    closure: Vec<usize>,
    /// `additionalProperties` (None: anything).
    additional: Option<usize>,
    /// `required` (at most 64).
    required: Vec<String>,
    min_props: u64,
    max_props: u64,
    prefix: Vec<usize>,
    items: Option<usize>,
    min_items: u64,
    max_items: u64,
    min_len: u64,
    max_len: u64,
    /// `enum` / `const` lists: a non-number instance must equal one literal of each. Numbers are
    /// checked by `numbers` (which carries the keywords whole); a container never matches.
    enums: Vec<Vec<Lit>>,
    /// `pattern` and `format`, applied by `jsonschema` to a string instance.
    strings: Option<Validator>,
    /// `strings` is exactly an asserted `format: "email"`: an address of the plain form
    /// [`plain_email`] accepts is valid without asking jsonschema (whose check costs about as
    /// much as tokenizing a kilobyte).
    email: bool,
    /// `strings` is exactly a `pattern` simple enough for [`Pattern`]: matched natively.
    pattern: Option<Pattern>,
    /// The numeric keywords (and a numeric `enum`/`const`), applied by `jsonschema` to a number.
    numbers: Option<Validator>,
    /// `numbers` is only integer `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`:
    /// an integer literal is compared with these inclusive bounds without parsing it into a
    /// `serde_json` value for jsonschema (about 250 instructions a number).
    ints: Option<IntRange>,
}

/// Inclusive bounds for an integer instance, from integer-valued numeric keywords: for an
/// integer `x`, `x > m` is `x >= m + 1`, so the exclusive bounds need no separate case.
#[derive(Debug, Clone, Copy, PartialEq)]
struct IntRange {
    lo: i128,
    hi: i128,
}

impl IntRange {
    /// The range of `keywords` when every one is an integer bound; None leaves them to
    /// jsonschema (a float bound, `multipleOf`, a numeric `enum`/`const`).
    fn of(keywords: &Map<String, Value>) -> Option<IntRange> {
        let mut r = IntRange {
            lo: i128::MIN,
            hi: i128::MAX,
        };
        for (k, v) in keywords {
            // `as_i64`/`as_u64` are None for a float, even an integer-valued one: those stay
            // with jsonschema, whose float comparison is then the reference.
            let m = v
                .as_i64()
                .map(i128::from)
                .or_else(|| v.as_u64().map(i128::from))?;
            match k.as_str() {
                "minimum" => r.lo = r.lo.max(m),
                "exclusiveMinimum" => r.lo = r.lo.max(m + 1),
                "maximum" => r.hi = r.hi.min(m),
                "exclusiveMaximum" => r.hi = r.hi.min(m - 1),
                _ => return None,
            }
        }
        Some(r)
    }

    /// The verdict for a number literal, or None when it is not a plain integer literal that
    /// fits an `i128` (a fraction, an exponent: left to jsonschema).
    #[inline]
    fn contains(&self, literal: &str) -> Option<bool> {
        let digits = literal.strip_prefix('-').unwrap_or(literal);
        if digits.is_empty() || digits.len() > 38 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let x: i128 = literal.parse().ok()?;
        // Past `i64`/`u64` serde_json reads the literal as a float, and jsonschema compares
        // that: only the integers the tree keeps exact are decided here.
        if x < i128::from(i64::MIN) || x > i128::from(u64::MAX) {
            return None;
        }
        Some(self.lo <= x && x <= self.hi)
    }
}

impl Node {
    /// The position in `keys` of the key named `b` (whose length and head are `len` and `hd`).
    /// The table's one probe inline (a call cost about as much as the probe); the search
    /// without a table out of line.
    #[inline(always)]
    fn find(&self, len: usize, hd: u64, b: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return self.search(len, hd, b);
        }
        // One probe: the slot names the only key the name can be.
        let at = self
            .slots
            .get(slot(len, hd, self.mul, self.shift))
            .copied()?;
        let x = usize::from(at).checked_sub(1)?;
        let k = self.keys.get(x)?;
        // A name of at most eight bytes is all in its head: nothing else to compare.
        let same =
            k.len == len && k.head == hd && (len <= 8 || k.name.as_bytes().get(8..) == b.get(8..));
        same.then_some(x)
    }

    /// [`Node::find`] for a node without a slot table.
    #[inline(never)]
    fn search(&self, len: usize, hd: u64, b: &[u8]) -> Option<usize> {
        let rest = b.get(8..).unwrap_or_default();
        let same = |k: &Key| {
            k.len == len
                && k.head == hd
                && (len <= 8 || k.name.as_bytes().get(8..).unwrap_or_default() == rest)
        };
        // A few keys: two integer compares rule out almost every one, no search needed.
        if self.keys.len() <= 16 {
            return self.keys.iter().position(same);
        }
        self.keys
            .binary_search_by(|key| key_order(len, hd, b, key))
            .ok()
    }

    /// True when the node checks nothing of its own: what it applies is in `all`, and
    /// everything else is as [`Node::empty`] leaves it.
    fn inert(&self) -> bool {
        !self.never
            && self.types == ANY
            && self.props.is_empty()
            && self.additional.is_none()
            && self.required.is_empty()
            && self.min_props == 0
            && self.max_props == u64::MAX
            && self.prefix.is_empty()
            && self.items.is_none()
            && self.min_items == 0
            && self.max_items == u64::MAX
            && self.min_len == 0
            && self.max_len == u64::MAX
            && self.enums.is_empty()
            && self.strings.is_none()
            && self.numbers.is_none()
    }

    fn empty() -> Self {
        Node {
            never: false,
            types: ANY,
            all: Vec::new(),
            props: Vec::new(),
            keys: Vec::new(),
            slots: Vec::new(),
            mul: 0,
            shift: 0,
            closure: Vec::new(),
            additional: None,
            required: Vec::new(),
            min_props: 0,
            max_props: u64::MAX,
            prefix: Vec::new(),
            items: None,
            min_items: 0,
            max_items: u64::MAX,
            min_len: 0,
            max_len: u64::MAX,
            enums: Vec::new(),
            strings: None,
            email: false,
            pattern: None,
            numbers: None,
            ints: None,
        }
    }
}

/// A schema compiled for one-pass validation.
#[derive(Debug)]
pub struct Program {
    nodes: Vec<Node>,
    root: usize,
}

/// Which document a `#…` reference resolves in.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Doc {
    Root,
    Named(String),
}

struct Compiler<'s> {
    root: &'s Value,
    named: &'s BTreeMap<String, Value>,
    validate_formats: bool,
    nodes: Vec<Node>,
    /// (document, JSON pointer) → node, so recursive references end.
    memo: HashMap<(Doc, String), usize>,
}

/// A non-negative integer bound, as jsonschema reads one (integer-valued floats too).
fn size(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    if f >= 18_446_744_073_709_551_616.0 {
        return Some(u64::MAX);
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (f >= 0.0 && f.trunc() == f).then_some(f as u64)
}

fn kind_bits(name: &str) -> Option<u8> {
    Some(match name {
        "null" => NULL,
        "boolean" => BOOL,
        "integer" => INT,
        "number" => INT | FRAC,
        "string" => STR,
        "array" => ARR,
        "object" => OBJ,
        _ => return None,
    })
}

impl<'s> Compiler<'s> {
    fn doc(&self, d: &Doc) -> Option<&'s Value> {
        match d {
            Doc::Root => Some(self.root),
            Doc::Named(n) => self.named.get(n),
        }
    }

    /// The node for the schema at `ptr` in `doc`, compiled once.
    fn at(&mut self, doc: &Doc, ptr: &str) -> Option<usize> {
        if let Some(&i) = self.memo.get(&(doc.clone(), ptr.to_string())) {
            return Some(i);
        }
        let d = self.doc(doc)?;
        let schema = if ptr.is_empty() { d } else { d.pointer(ptr)? };
        let i = self.nodes.len();
        self.nodes.push(Node::empty());
        self.memo.insert((doc.clone(), ptr.to_string()), i);
        let node = self.node(schema, doc, ptr)?;
        self.nodes[i] = node;
        Some(i)
    }

    fn delegate(&self, keywords: Map<String, Value>) -> Option<Validator> {
        if keywords.is_empty() {
            return None;
        }
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(self.validate_formats)
            .build(&Value::Object(keywords))
            .ok()
    }

    fn reference(&mut self, r: &str, doc: &Doc) -> Option<usize> {
        if let Some(name) = r.strip_prefix(crate::config::SCHEMA_URI_PREFIX) {
            let (name, frag) = name.split_once('#').unwrap_or((name, ""));
            if name.contains('%') || !self.named.contains_key(name) {
                return None;
            }
            if !frag.is_empty() && !frag.starts_with('/') {
                return None;
            }
            return self.at(&Doc::Named(name.to_string()), frag);
        }
        let frag = r.strip_prefix('#')?;
        // Percent-encoded pointers and anchors are left to jsonschema.
        if frag.contains('%') || (!frag.is_empty() && !frag.starts_with('/')) {
            return None;
        }
        self.at(doc, frag)
    }

    fn node(&mut self, schema: &Value, doc: &Doc, ptr: &str) -> Option<Node> {
        let mut n = Node::empty();
        let m = match schema {
            Value::Bool(true) => return Some(n),
            Value::Bool(false) => {
                n.never = true;
                return Some(n);
            }
            Value::Object(m) => m,
            _ => return None,
        };
        let mut strings = Map::new();
        let mut numbers = Map::new();
        for (k, v) in m {
            let here = format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1"));
            match k.as_str() {
                k if IGNORED.contains(&k) => {}
                "$schema" => {
                    // Only at a document's root, and only 2020-12.
                    if !ptr.is_empty() || !DRAFT_2020_12.contains(&v.as_str()?) {
                        return None;
                    }
                }
                "type" => {
                    n.types = match v {
                        Value::String(s) => kind_bits(s)?,
                        Value::Array(a) => {
                            let mut bits = 0;
                            for t in a {
                                bits |= kind_bits(t.as_str()?)?;
                            }
                            bits
                        }
                        _ => return None,
                    };
                }
                "enum" | "const" => {
                    let list: Vec<&Value> = if k == "enum" {
                        v.as_array()?.iter().collect()
                    } else {
                        vec![v]
                    };
                    let mut lits = Vec::new();
                    for x in list {
                        match x {
                            Value::Null => lits.push(Lit::Null),
                            Value::Bool(b) => lits.push(Lit::Bool(*b)),
                            Value::String(s) => lits.push(Lit::Str(s.clone())),
                            Value::Number(_) => {}
                            // Containers: left to jsonschema.
                            _ => return None,
                        }
                    }
                    n.enums.push(lits);
                    numbers.insert(k.to_string(), v.clone());
                }
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" => {
                    numbers.insert(k.to_string(), v.clone());
                }
                "pattern" | "format" => {
                    strings.insert(k.to_string(), v.clone());
                }
                "minLength" => n.min_len = size(v)?,
                "maxLength" => n.max_len = size(v)?,
                "minItems" => n.min_items = size(v)?,
                "maxItems" => n.max_items = size(v)?,
                "minProperties" => n.min_props = size(v)?,
                "maxProperties" => n.max_props = size(v)?,
                "required" => {
                    let a = v.as_array()?;
                    if a.len() > 64 {
                        return None;
                    }
                    for r in a {
                        let r = r.as_str()?.to_string();
                        if !n.required.contains(&r) {
                            n.required.push(r);
                        }
                    }
                }
                "properties" => {
                    for (name, _) in v.as_object()? {
                        let at = format!("{here}/{}", name.replace('~', "~0").replace('/', "~1"));
                        let i = self.at(doc, &at)?;
                        n.props.push((name.clone(), i));
                    }
                    n.props.sort_by(|a, b| a.0.cmp(&b.0));
                }
                "additionalProperties" => n.additional = Some(self.at(doc, &here)?),
                "items" => {
                    if !(v.is_object() || v.is_boolean()) {
                        return None;
                    }
                    n.items = Some(self.at(doc, &here)?);
                }
                "prefixItems" => {
                    for i in 0..v.as_array()?.len() {
                        n.prefix.push(self.at(doc, &format!("{here}/{i}"))?);
                    }
                }
                "allOf" => {
                    for i in 0..v.as_array()?.len() {
                        let x = self.at(doc, &format!("{here}/{i}"))?;
                        n.all.push(x);
                    }
                }
                "$ref" => {
                    let x = self.reference(v.as_str()?, doc)?;
                    n.all.push(x);
                }
                _ => return None,
            }
        }
        // Numbers go to jsonschema whenever a numeric keyword or an `enum`/`const` is present
        // (a number against a list of strings is decided there too).
        if !numbers.is_empty() {
            n.ints = IntRange::of(&numbers);
            n.numbers = Some(self.delegate(numbers)?);
        }
        if !strings.is_empty() {
            n.email = self.validate_formats
                && strings.len() == 1
                && strings.get("format").and_then(Value::as_str) == Some("email");
            if strings.len() == 1 {
                n.pattern = strings
                    .get("pattern")
                    .and_then(Value::as_str)
                    .and_then(Pattern::compile);
            }
            n.strings = Some(self.delegate(strings)?);
        }
        Some(n)
    }
}

/// Compiles `schema` (with the named `schemas` for `urn:portcullis:schema:` references) when
/// every keyword it reaches can be decided in one pass; `None` leaves it to `jsonschema`.
pub fn compile(
    schema: &Value,
    named: &BTreeMap<String, Value>,
    validate_formats: bool,
) -> Option<Program> {
    // `$id`, anchors and dynamic references change how references resolve: not handled here.
    fn plain(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.iter().all(|(k, v)| {
                !matches!(
                    k.as_str(),
                    "$id" | "$anchor" | "$dynamicRef" | "$dynamicAnchor" | "$recursiveRef"
                ) && plain(v)
            }),
            Value::Array(a) => a.iter().all(plain),
            _ => true,
        }
    }
    if !plain(schema) || !named.values().all(plain) {
        return None;
    }
    let mut c = Compiler {
        root: schema,
        named,
        validate_formats,
        nodes: Vec::new(),
        memo: HashMap::new(),
    };
    let root = c.at(&Doc::Root, "")?;
    let mut p = Program {
        nodes: c.nodes,
        root,
    };
    p.finish();
    Some(p)
}

/// The nodes that apply to one value: usually the closure of one node, kept as that node's
/// `closure` slice (no allocation, and no node to look up each time the set is read); a list
/// only when several nodes of a container reach different schemas.
enum Set<'p> {
    Empty,
    One(&'p [usize]),
    Many(Vec<usize>),
}

impl Set<'_> {
    #[inline]
    fn ids(&self) -> &[usize] {
        match self {
            Set::Empty => &[],
            Set::One(c) => c,
            Set::Many(v) => v,
        }
    }
}

/// One open container and the nodes that apply to it.
struct Frame<'a> {
    set: Set<'a>,
    /// When the program checks duplicate names itself: which keys of the set's first node
    /// this object has named (by position in `keys`, the first 64), and its other names.
    names: u64,
    others: Vec<Cow<'a, str>>,
    /// Which `required` names have been seen: of the set's first node here, of the others in
    /// `seen_more` (only allocated when the set has several nodes and one has `required`).
    seen: u64,
    seen_more: Vec<u64>,
    /// Members or elements so far.
    count: u64,
    array: bool,
    /// An array's element nodes, when the index does not change them.
    elements: Elements<'a>,
}

/// The nodes an array applies to its elements, worked out once when the array opens: with no
/// `prefixItems` and one `items` schema among its nodes (the usual array), every element gets
/// the same set, so an element costs no walk over the array's nodes.
#[derive(Clone, Copy)]
enum Elements<'p> {
    /// Every element: this closure, or nothing to check.
    Same(Option<&'p [usize]>),
    /// Worked out per element ([`Program::element`]).
    ByIndex,
}

/// Past this many names an object's own duplicate check gives up (the tokenizer's check, run
/// again over the body, decides): a name outside the schema is compared with each of these.
const OTHER_NAMES: usize = 16;

impl Frame<'_> {
    fn mark(&mut self, k: usize, bit: u32) {
        let b = 1u64 << bit;
        if k == 0 {
            self.seen |= b;
        } else if let Some(s) = self.seen_more.get_mut(k - 1) {
            *s |= b;
        }
    }

    fn seen(&self, k: usize) -> u64 {
        if k == 0 {
            self.seen
        } else {
            self.seen_more.get(k - 1).copied().unwrap_or(0)
        }
    }
}

impl Program {
    /// Builds each node's `closure` and `keys` once every node is compiled.
    fn finish(&mut self) {
        let inert: Vec<bool> = self.nodes.iter().map(Node::inert).collect();
        for id in 0..self.nodes.len() {
            let mut set = vec![id];
            let mut todo: Vec<usize> = self.nodes[id].all.clone();
            while let Some(i) = todo.pop() {
                if set.contains(&i) {
                    continue;
                }
                set.push(i);
                if let Some(n) = self.nodes.get(i) {
                    todo.extend(n.all.iter().copied());
                }
            }
            // A node that only applies others (a `$ref` wrapper, an `allOf` of references)
            // decides nothing itself: leaving it out means one node less to visit for every
            // member and value, and one `required` table instead of two for a `$ref`'d object.
            set.retain(|&i| !inert.get(i).copied().unwrap_or(false));
            let n = &mut self.nodes[id];
            n.closure = set;
            let mut keys: Vec<Key> = n
                .props
                .iter()
                .map(|(name, i)| Key {
                    len: name.len(),
                    head: word::padded(name.as_bytes()),
                    name: name.clone(),
                    node: Some(*i),
                    required: None,
                })
                .collect();
            for (r, name) in n.required.iter().enumerate() {
                #[allow(clippy::cast_possible_truncation)] // at most 64 names
                let bit = r as u32;
                match keys.iter_mut().find(|k| k.name == *name) {
                    Some(k) => k.required = Some(bit),
                    None => keys.push(Key {
                        len: name.len(),
                        head: word::padded(name.as_bytes()),
                        name: name.clone(),
                        node: None,
                        required: Some(bit),
                    }),
                }
            }
            keys.sort_by(|a, b| key_order(b.len, b.head, b.name.as_bytes(), a));
            if let Some((slots, mul, shift)) = slot_table(&keys) {
                n.slots = slots;
                n.mul = mul;
                n.shift = shift;
            }
            n.keys = keys;
        }
    }

    /// Adds the closure of `id` to `set`, once each.
    #[inline]
    fn add<'p>(&'p self, id: usize, set: &mut Set<'p>) {
        // The common case (a set of one schema) inline; merging out of line.
        if let Set::Empty = set {
            *set = Set::One(self.closure(id));
        } else {
            self.merge(id, set);
        }
    }

    #[inline(never)]
    fn merge<'p>(&'p self, id: usize, set: &mut Set<'p>) {
        let add = self.closure(id);
        match set {
            Set::Empty => *set = Set::One(add),
            // The same node's closure (one slice per node): nothing to add.
            Set::One(j) if std::ptr::eq(*j, add) => {}
            Set::One(j) => {
                let mut v = j.to_vec();
                for &i in add {
                    if !v.contains(&i) {
                        v.push(i);
                    }
                }
                *set = Set::Many(v);
            }
            Set::Many(v) => {
                for &i in add {
                    if !v.contains(&i) {
                        v.push(i);
                    }
                }
            }
        }
    }

    /// The closure of node `i` (empty for no such node).
    #[inline]
    fn closure(&self, i: usize) -> &[usize] {
        self.nodes.get(i).map_or(&[], |n| n.closure.as_slice())
    }

    fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Checks a scalar or a container's opening against every node of `set`.
    ///
    /// Each node unescapes or parses the value again: a value almost always has one node,
    /// and state shared between nodes cost more, value after value, than the rare repeat.
    #[inline]
    fn check_value(&self, set: &[usize], ev: &Event<'_>, scratch: &mut Value) -> bool {
        set.iter()
            .all(|&i| self.check_one(self.node(i), ev, scratch))
    }

    /// Checks a scalar or a container's opening against one node.
    #[inline]
    fn check_one(&self, n: &Node, ev: &Event<'_>, scratch: &mut Value) -> bool {
        if n.never {
            return false;
        }
        match ev {
            Event::Null => n.types & NULL != 0 && enums_match(n, &Lit::Null),
            Event::Bool(b) => n.types & BOOL != 0 && enums_match(n, &Lit::Bool(*b)),
            Event::StartObject => n.types & OBJ != 0 && n.enums.is_empty(),
            Event::StartArray => n.types & ARR != 0 && n.enums.is_empty(),
            Event::Str(t) => n.types & STR != 0 && self.check_str(n, &t.unescape(), scratch),
            Event::Num(s) => {
                n.types & number_kind(s) != 0
                    && n.numbers.as_ref().is_none_or(|v| {
                        if let Some(ok) = n.ints.as_ref().and_then(|r| r.contains(s)) {
                            return ok;
                        }
                        // Parsed as the tree would parse it, for jsonschema's own comparisons.
                        serde_json::from_str(s).is_ok_and(|x: Value| v.is_valid(&x))
                    })
            }
            Event::Name(_) | Event::EndObject | Event::EndArray => true,
        }
    }

    /// `scratch` is a string value kept for the body: jsonschema is handed the string in it, so
    /// its buffer is allocated once per body, not once per string checked.
    fn check_str(&self, n: &Node, s: &str, scratch: &mut Value) -> bool {
        // A string has at most as many code points as bytes, and at least a quarter as many:
        // count them only when the byte length leaves the bounds in doubt.
        let bytes = s.len() as u64;
        if bytes > n.max_len || n.min_len > bytes.div_ceil(4) {
            let len = s.chars().count() as u64;
            if len < n.min_len || len > n.max_len {
                return false;
            }
        }
        if !n
            .enums
            .iter()
            .all(|l| l.iter().any(|x| matches!(x, Lit::Str(v) if v == s)))
        {
            return false;
        }
        if n.email && plain_email(s) {
            return true;
        }
        if let Some(ok) = n.pattern.as_ref().and_then(|p| p.matches(s)) {
            return ok;
        }
        n.strings.as_ref().is_none_or(|v| {
            match &mut *scratch {
                Value::String(buf) => {
                    buf.clear();
                    buf.push_str(s);
                }
                other => *other = Value::String(s.to_string()),
            }
            v.is_valid(scratch)
        })
    }

    /// Validates `body` in one pass. `Err` is the structural error the scan would report
    /// (the tokenizer runs to the end even after a schema violation, so the structural error
    /// wins as it does in the two-step path); `Ok(false)` a schema violation.
    ///
    /// Duplicate member names: the tokenizer's check keeps every name of every object, while a
    /// name the schema knows has a position in its node's `keys`, so one bit per name does. The
    /// program checks them itself, with the tokenizer's check off, and only a body that passes
    /// everything is decided that way: any doubt (a duplicate, an object with more than
    /// [`OTHER_NAMES`] names outside its schema, a structural error, a schema violation) runs the
    /// body again with the tokenizer's own check, so the verdict and the error are the ones it
    /// gives.
    pub fn validate(&self, body: &[u8], limits: json::Limits) -> Result<bool, json::Error> {
        if limits.reject_duplicate_names {
            let light = json::Limits {
                reject_duplicate_names: false,
                ..limits
            };
            if let Ok(true) = self.run(body, light, true) {
                return Ok(true);
            }
        }
        self.run(body, limits, false)
    }

    /// [`Program::validate`] in one pass; with `names`, checking duplicate names itself, and
    /// false at the first doubt.
    fn run<'a>(
        &'a self,
        body: &'a [u8],
        limits: json::Limits,
        names: bool,
    ) -> Result<bool, json::Error> {
        let mut t = Tokenizer::new(body, limits)?;
        // Room for the usual nesting at once: the first push takes no growth path.
        let mut stack: Vec<Frame> = Vec::with_capacity(8);
        let mut valid = true;
        let mut next = Set::One(self.closure(self.root));
        let mut scratch = Value::String(String::new());
        while let Some(ev) = t.next_event()? {
            if !valid {
                if names {
                    return Ok(false);
                }
                continue;
            }
            match ev {
                Event::Name(name) => match self.member(&mut stack, name, names) {
                    Some(set) => next = set,
                    None => return Ok(false),
                },
                Event::EndObject | Event::EndArray => {
                    if let Some(f) = stack.pop() {
                        valid = self.close(&f);
                    }
                }
                _ => {
                    let mut set = std::mem::replace(&mut next, Set::Empty);
                    if let Some(f) = stack.last_mut().filter(|f| f.array) {
                        let at = usize::try_from(f.count).unwrap_or(usize::MAX);
                        f.count += 1;
                        set = match f.elements {
                            Elements::Same(None) => Set::Empty,
                            Elements::Same(Some(c)) => Set::One(c),
                            Elements::ByIndex => self.element(&f.set, at),
                        };
                    }
                    let ids = set.ids();
                    valid = self.check_value(ids, &ev, &mut scratch);
                    if matches!(ev, Event::StartObject | Event::StartArray) {
                        let more =
                            ids.len() > 1 && ids.iter().any(|&i| !self.node(i).required.is_empty());
                        let array = matches!(ev, Event::StartArray);
                        stack.push(Frame {
                            elements: if array {
                                self.elements(ids)
                            } else {
                                Elements::Same(None)
                            },
                            // Only allocated when several nodes apply and one has `required`.
                            seen_more: if more {
                                vec![0; ids.len() - 1]
                            } else {
                                Vec::new()
                            },
                            seen: 0,
                            names: 0,
                            others: Vec::new(),
                            set,
                            count: 0,
                            array,
                        });
                    }
                }
            }
        }
        Ok(valid)
    }

    /// The element nodes of an array whose nodes are `ids`, if the same for every index.
    fn elements(&self, ids: &[usize]) -> Elements<'_> {
        let mut one = None;
        for &i in ids {
            let n = self.node(i);
            if !n.prefix.is_empty() {
                return Elements::ByIndex;
            }
            match (n.items, one) {
                (Some(it), None) => one = Some(it),
                (Some(it), Some(j)) if it != j => return Elements::ByIndex,
                _ => {}
            }
        }
        Elements::Same(one.map(|it| self.closure(it)))
    }

    /// The nodes for the element at `at` of an array whose nodes are `set`.
    fn element<'p>(&'p self, set: &Set<'p>, at: usize) -> Set<'p> {
        let mut out = Set::Empty;
        for &i in set.ids() {
            let n = self.node(i);
            if let Some(&p) = n.prefix.get(at) {
                self.add(p, &mut out);
            } else if let Some(it) = n.items {
                self.add(it, &mut out);
            }
        }
        out
    }

    /// A member name: marks `required`, and works out the nodes for its value. With `names`,
    /// also checks the name is new to its object: None when it is not (or may not be).
    fn member<'a>(
        &'a self,
        stack: &mut [Frame<'a>],
        name: Text<'a>,
        names: bool,
    ) -> Option<Set<'a>> {
        let mut next = Set::Empty;
        let Some(f) = stack.last_mut() else {
            return Some(next);
        };
        f.count += 1;
        if !names && matches!(f.set, Set::Empty) {
            return Some(next);
        }
        let ids = f.set.ids();
        let name = name.unescape();
        let b = name.as_bytes();
        let (len, hd) = (b.len(), word::padded(b));
        // The name's position in the first node's keys, when it has one below 64.
        let known: Option<u64>;
        if let [i] = ids {
            // One node (the usual object): the loop below less its bookkeeping, which costs
            // more than the lookup itself.
            let n = self.node(*i);
            let found = n.find(len, hd, b);
            known = found.filter(|&x| x < 64).map(|x| 1 << x);
            let key = found.and_then(|x| n.keys.get(x));
            if let Some(bit) = key.and_then(|k| k.required) {
                f.seen |= 1 << bit;
            }
            if let Some(x) = key.and_then(|k| k.node).or(n.additional) {
                next = Set::One(self.closure(x));
            }
        } else {
            known = self.members(f, len, hd, b, &mut next);
        }
        if names {
            match known {
                Some(bit) if f.names & bit != 0 => return None,
                Some(bit) => f.names |= bit,
                None if f.others.len() >= OTHER_NAMES || f.others.contains(&name) => return None,
                None => f.others.push(name),
            }
        }
        Some(next)
    }

    /// [`Program::member`] for an object with several nodes (or none): marks `required` in
    /// each, adds each one's node for the value to `next`, and returns the name's bit in the
    /// first node's keys.
    #[inline(never)]
    fn members<'p>(
        &'p self,
        f: &mut Frame<'p>,
        len: usize,
        hd: u64,
        b: &[u8],
        next: &mut Set<'p>,
    ) -> Option<u64> {
        let ids = f.set.ids();
        let mut marks: u64 = 0;
        let mut marks_more: Vec<(usize, u32)> = Vec::new();
        let mut known: Option<u64> = None;
        for (k, &i) in ids.iter().enumerate() {
            let n = self.node(i);
            let found = n.find(len, hd, b);
            if k == 0 {
                known = found.filter(|&x| x < 64).map(|x| 1 << x);
            }
            let target = match found.and_then(|x| n.keys.get(x)) {
                Some(key) => {
                    if let Some(bit) = key.required {
                        if k == 0 {
                            marks |= 1 << bit;
                        } else {
                            marks_more.push((k, bit));
                        }
                    }
                    key.node.or(n.additional)
                }
                None => n.additional,
            };
            if let Some(x) = target {
                self.add(x, next);
            }
        }
        f.seen |= marks;
        for (k, bit) in marks_more {
            f.mark(k, bit);
        }
        known
    }

    /// A container closes: counts and `required`.
    fn close(&self, f: &Frame) -> bool {
        f.set.ids().iter().enumerate().all(|(k, &i)| {
            let n = self.node(i);
            if f.array {
                (n.min_items..=n.max_items).contains(&f.count)
            } else {
                (n.min_props..=n.max_props).contains(&f.count)
                    && f.seen(k).count_ones() as usize == n.required.len()
            }
        })
    }
}

/// True only for an address jsonschema's `format: "email"` surely accepts: ASCII, one `@`, a
/// dot-atom local part of at most 64 bytes (letters, digits and RFC 5322's other atom
/// characters), and a host name of at most 253 bytes whose labels are 1–63 letters, digits and
/// inner hyphens. Anything else — quoted local parts, domain literals, display names, non-ASCII,
/// labels with `--` in third and fourth place (candidate A-labels, which jsonschema decodes) —
/// returns false and is left to jsonschema, so a false here decides nothing.
fn plain_email(s: &str) -> bool {
    // Bytes, not chars: `@` and `.` are ASCII, so a split at one is a split between chars (and
    // a byte search costs a fraction of a char pattern's).
    let s = s.as_bytes();
    let Some(at) = s.iter().position(|&b| b == b'@') else {
        return false;
    };
    let (local, domain) = (&s[..at], &s[at + 1..]);
    let atom = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    let local_ok = (1..=64).contains(&local.len())
        && local
            .split(|&b| b == b'.')
            .all(|a| !a.is_empty() && a.iter().all(|&b| atom(b)));
    let label_ok = |b: &[u8]| {
        (1..=63).contains(&b.len())
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && !(b.get(2) == Some(&b'-') && b.get(3) == Some(&b'-'))
    };
    local_ok && (1..=253).contains(&domain.len()) && domain.split(|&b| b == b'.').all(label_ok)
}

/// A `pattern` of the simplest shape, `^` (atom quantifier?)* `$`, matched without jsonschema
/// (whose regex call costs about 500 instructions on a 12-byte string): each atom is one ASCII
/// byte of a set — an ASCII letter or digit, a literal `-` `_` `@` `:` `/` `,` `=` or space, an
/// escaped punctuation character, or a bracketed set of letters, digits and their ranges — and
/// the quantifiers are `?` `*` `+` `{n}` `{n,}` `{n,m}`. Anything else (alternation, groups,
/// `.`, `\d` and other classes, negated sets, lazy quantifiers, no anchors) is no `Pattern`,
/// and stays with jsonschema.
#[derive(Debug)]
struct Pattern {
    /// (the bytes allowed, as a 128-bit set, least and most repeats).
    items: Vec<(u128, u32, u32)>,
}

impl Pattern {
    fn compile(p: &str) -> Option<Pattern> {
        let b = p.as_bytes();
        let mut i = 1;
        if b.first() != Some(&b'^') {
            return None;
        }
        let mut items = Vec::new();
        let bit = |c: u8| 1u128 << c;
        loop {
            let &c = b.get(i)?;
            i += 1;
            let set = match c {
                b'$' if i == b.len() => return Some(Pattern { items }),
                b'\\' => {
                    let &e = b.get(i)?;
                    i += 1;
                    if !br"+.-\/()[]{}?*^$|".contains(&e) {
                        return None;
                    }
                    bit(e)
                }
                b'[' => {
                    let mut set = 0u128;
                    loop {
                        let &lo = b.get(i)?;
                        if lo == b']' && set != 0 {
                            i += 1;
                            break set;
                        }
                        if !lo.is_ascii_alphanumeric() {
                            return None;
                        }
                        let mut hi = lo;
                        if b.get(i + 1) == Some(&b'-') && b.get(i + 2) != Some(&b']') {
                            hi = *b.get(i + 2)?;
                            if !hi.is_ascii_alphanumeric() || hi < lo {
                                return None;
                            }
                            i += 2;
                        }
                        i += 1;
                        for x in lo..=hi {
                            set |= bit(x);
                        }
                    }
                }
                c if c.is_ascii_alphanumeric() || b"-_@:/,= ".contains(&c) => bit(c),
                _ => return None,
            };
            // A `?`, `*`, `+` or `{` right after a quantifier (lazy, or nonsense) is then read
            // as an atom, and refused.
            let (min, max, width) = match b.get(i) {
                Some(b'?') => (0, 1, 1),
                Some(b'*') => (0, u32::MAX, 1),
                Some(b'+') => (1, u32::MAX, 1),
                Some(b'{') => {
                    let close = i + b.get(i..)?.iter().position(|&x| x == b'}')?;
                    let inner = p.get(i + 1..close)?;
                    let num = |t: &str| -> Option<u32> {
                        if t.is_empty() || t.len() > 4 || !t.bytes().all(|d| d.is_ascii_digit()) {
                            return None;
                        }
                        t.parse().ok()
                    };
                    let (min, max) = match inner.split_once(',') {
                        None => (num(inner)?, num(inner)?),
                        Some((a, "")) => (num(a)?, u32::MAX),
                        Some((a, z)) => (num(a)?, num(z)?),
                    };
                    if min > max {
                        return None;
                    }
                    (min, max, close + 1 - i)
                }
                _ => (1, 1, 0),
            };
            i += width;
            items.push((set, min, max));
        }
    }

    /// The verdict for `s`, or None when `s` is longer than 63 bytes (left to jsonschema). A
    /// byte of a non-ASCII character is in no item's set (they hold ASCII only), so such a
    /// string fails where that character stands, as the character fails in the regex. The positions the items so far can end at are a 64-bit set, so nothing
    /// backtracks: from each position an item takes the run of bytes of its set (at most its
    /// most repeats), and every end from its least repeats to the run's end is reachable.
    /// Out of line: the check of a value stays as small as before for the strings without one.
    #[inline(never)]
    fn matches(&self, s: &str) -> Option<bool> {
        let b = s.as_bytes();
        if b.len() > 63 {
            return None;
        }
        let mut reach = 1u64;
        for &(set, min, max) in &self.items {
            let mut next = 0u64;
            let mut from = reach;
            while from != 0 {
                let p = from.trailing_zeros() as usize;
                from &= from - 1;
                let end = b.len().min(p.saturating_add(max as usize));
                let mut q = p;
                while q < end && b.get(q).is_some_and(|&c| c < 128 && set >> c & 1 == 1) {
                    q += 1;
                }
                let lo = p + min as usize;
                if lo <= q {
                    // Positions lo..=q (q is at most 63).
                    next |= (u64::MAX >> (63 - q)) & (u64::MAX << lo);
                }
            }
            reach = next;
            if reach == 0 {
                return Some(false);
            }
        }
        Some(reach >> b.len() & 1 == 1)
    }
}

fn enums_match(n: &Node, lit: &Lit) -> bool {
    n.enums.iter().all(|l| l.contains(lit))
}

/// A number's kind: integer (no fractional part, as jsonschema decides `type: integer`) or not.
/// The scan has checked that an integer literal fits `i64`/`u64` and a float is finite.
fn number_kind(s: &str) -> u8 {
    if !s.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return INT;
    }
    match s.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 => INT,
        _ => FRAC,
    }
}

#[cfg(test)]
mod tests {
    use super::plain_email;
    use portcullis_core::word;
    use serde_json::{json, Value};

    /// jsonschema's own verdict for `format: "email"`, formats asserted.
    fn jsonschema_says(v: &jsonschema::Validator, s: &str) -> bool {
        v.is_valid(&Value::String(s.to_string()))
    }

    /// The shared deterministic generator, so a failure names a reproducible input.
    struct Gen(portcullis_core::fake::TestRng);
    impl Gen {
        fn below(&mut self, n: usize) -> usize {
            self.0.below(n)
        }
        fn text(&mut self, alphabet: &[&str], len: usize) -> String {
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    #[test]
    fn a_plain_address_is_one_jsonschema_accepts() {
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&json!({"format": "email"}))
            .expect("a valid schema");
        // Characters the rules treat differently, several of each class.
        let alphabet = [
            "a", "Z", "0", "9", ".", "-", "_", "+", "@", "\"", "<", ">", "[", "]", "(", " ", "é",
            "!", "%", "x", "n", "~", "\\", ":",
        ];
        let mut g = Gen(portcullis_core::fake::TestRng::new(0x9E37_79B9_7F4A_7C15));
        let mut plain = 0;
        for round in 0..200_000 {
            let s = if round % 2 == 0 {
                let len = g.below(24);
                g.text(&alphabet, len)
            } else {
                // Shaped like an address, with parts around the length limits.
                let sizes = [1, 2, 3, 4, 5, 62, 63, 64, 65];
                let local_len = sizes[g.below(sizes.len())];
                let local = g.text(&alphabet[..9], local_len);
                let labels: Vec<String> = (0..1 + g.below(5))
                    .map(|_| {
                        let n = sizes[g.below(sizes.len())];
                        g.text(&["a", "0", "-", "x", "n", "Z"], n)
                    })
                    .collect();
                format!("{local}@{}", labels.join("."))
            };
            if plain_email(&s) {
                plain += 1;
                assert!(
                    jsonschema_says(&v, &s),
                    "fast path accepted {s:?}, jsonschema does not"
                );
            }
        }
        // The generator must reach the fast path often, or this test checks nothing.
        assert!(plain > 1_000, "only {plain} plain addresses generated");
        // Long domains: 253 bytes is the host-name limit jsonschema applies.
        for total in [251, 252, 253, 254, 255] {
            let mut d = String::new();
            while d.len() < total {
                if !d.is_empty() {
                    d.push('.');
                }
                let n = (total - d.len()).min(63);
                d.push_str(&"a".repeat(n));
            }
            let s = format!("x@{d}");
            if plain_email(&s) {
                assert!(jsonschema_says(&v, &s), "{total}-byte domain");
            }
        }
    }

    /// Member lookup by length and first eight bytes: names that share both, names only
    /// `required`, escaped names, and a node with enough names for the binary search.
    #[test]
    fn member_names_are_found_as_jsonschema_finds_them() {
        let mut props = serde_json::Map::new();
        for (name, ty) in [
            ("abcdefgh", "string"),
            ("abcdefgh1", "integer"),
            ("abcdefgh2", "string"),
            ("abcdefghij1", "boolean"),
            ("a", "null"),
            ("", "integer"),
        ] {
            props.insert(name.to_string(), json!({"type": ty}));
        }
        let few = json!({"properties": props.clone(), "required": ["abcdefgh2", "zz", ""],
            "additionalProperties": {"type": "integer"}});
        for i in 0..20 {
            props.insert(format!("k{i:02}-padding-{i}"), json!({"type": "string"}));
        }
        let many = json!({"properties": props, "required": ["abcdefgh2", "zz", "k07-padding-7"],
            "additionalProperties": {"type": "integer"}});
        let bodies = [
            r#"{"abcdefgh2":"x","zz":1,"":2}"#,
            r#"{"abcdefgh2":"x","zz":"1","":2}"#,
            r#"{"abcdefgh2":1,"zz":1,"":2}"#,
            r#"{"abcdefgh1":1,"abcdefgh2":"x","zz":1,"":2,"abcdefghij1":true,"a":null}"#,
            r#"{"abcdefgh1":"1","abcdefgh2":"x","zz":1,"":2}"#,
            r#"{"abcdefgh2":"x","abcdefgh3":1,"zz":1,"":2}"#,
            r#"{"abcdefgh2":"x","abcdefgh3":"y","zz":1,"":2}"#,
            r#"{"abcdefgh2":"x","zz":1,"":2}"#,
            r#"{"abcdefgh2":"x","":2}"#,
            r#"{"abcdefgh2":"x","zz":1,"k07-padding-7":"s"}"#,
            r#"{"abcdefgh2":"x","zz":1,"k07-padding-7":7,"":2}"#,
            r#"{"abcdefgh2":"x","zz":1,"k07-padding-8":8,"":2,"k07-padding-7":"s"}"#,
            r#"{"abcdefgh2":"x","zz":1,"k07-padding-8":"8","":2,"k07-padding-7":"s"}"#,
            r#"{"a":0,"abcdefgh2":"x","zz":1,"":2,"k07-padding-7":"s"}"#,
        ];
        for schema in [few, many] {
            let program = super::compile(&schema, &Default::default(), false).expect("compiles");
            let v = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&schema)
                .expect("a valid schema");
            for b in bodies {
                let instance: Value = serde_json::from_str(b).expect("JSON");
                let got = program
                    .validate(b.as_bytes(), portcullis_core::json::Limits::default())
                    .expect("well-formed");
                assert_eq!(got, v.is_valid(&instance), "{schema} / {b}");
            }
        }
    }

    /// A name is found through the slot table exactly where it is in `keys` (and an unknown
    /// name nowhere), for sets of every size.
    #[test]
    fn names_are_found_through_the_slot_table() {
        let mut g = Gen(portcullis_core::fake::TestRng::new(0x005E_ED0F_5107));
        let alphabet = ["a", "b", "z", "0", "_", "-"];
        let mut tables = 0;
        for round in 0..300 {
            let count = 1 + g.below(if round % 3 == 0 { 200 } else { 20 });
            let mut props = serde_json::Map::new();
            for _ in 0..count {
                let len = g.below(12);
                props.insert(g.text(&alphabet, len), json!({"type": "string"}));
            }
            let schema = json!({"properties": props});
            let p = super::compile(&schema, &Default::default(), false).expect("compiles");
            let n = &p.nodes[p.root];
            tables += usize::from(!n.slots.is_empty());
            for _ in 0..200 {
                let len = g.below(12);
                let name = g.text(&alphabet, len);
                let b = name.as_bytes();
                let want = n.keys.iter().position(|k| k.name == name);
                assert_eq!(n.find(b.len(), word::padded(b), b), want, "{name:?}");
            }
            for (x, k) in n.keys.iter().enumerate() {
                let b = k.name.as_bytes();
                assert_eq!(n.find(b.len(), word::padded(b), b), Some(x), "{:?}", k.name);
            }
        }
        // Most sets get a table (names alike in their first eight bytes are rare).
        assert!(tables > 200, "{tables} tables");
    }

    /// A node of more keys than a table is looked for (a wide CRM object) keeps the search,
    /// and finds every key and no other name through it.
    #[test]
    fn wide_nodes_are_searched_without_a_table() {
        for count in [257, 3_000] {
            let props: serde_json::Map<_, _> = (0..count)
                .map(|i| (format!("field_{i:05}_c"), json!({"type": "integer"})))
                .collect();
            let p = super::compile(&json!({ "properties": props }), &Default::default(), false)
                .expect("compiles");
            let n = &p.nodes[p.root];
            assert!(n.slots.is_empty(), "{count} keys got a table");
            for (x, k) in n.keys.iter().enumerate() {
                let b = k.name.as_bytes();
                assert_eq!(n.find(b.len(), word::padded(b), b), Some(x), "{:?}", k.name);
            }
            for miss in ["field_00000_d", "field_3000_c", "", "field_00000_cc"] {
                let b = miss.as_bytes();
                assert_eq!(n.find(b.len(), word::padded(b), b), None, "{miss:?}");
            }
        }
    }

    /// Patterns built from every atom and quantifier [`super::Pattern`] takes (and some it
    /// refuses), against jsonschema's verdict on strings of the bytes around them.
    #[test]
    fn simple_patterns_match_as_jsonschema_matches() {
        let atoms = [
            "a", "Z", "0", "-", "_", " ", "\\+", "\\.", "\\$", "[A-Z]", "[0-9]", "[a-c0-2]",
            "[A-z]", "[1-9X]", ".", "\\d", "(a)", "[^a]", "a|b",
        ];
        let quants = [
            "", "?", "*", "+", "{2}", "{1,3}", "{0,2}", "{2,}", "{0}", "{6,14}", "*?", "{,2}",
        ];
        let chars = [
            "a", "b", "Z", "A", "z", "[", "`", "0", "1", "2", "9", "+", "-", ".", "_", " ", "$",
            "\n", "é", "X", "/",
        ];
        let mut g = Gen(portcullis_core::fake::TestRng::new(0x2545_F491_4F6C_DD1D));
        let (mut native, mut decided) = (0, 0);
        for _ in 0..3_000 {
            let mut p = String::new();
            if g.below(10) > 0 {
                p.push('^');
            }
            for _ in 0..1 + g.below(4) {
                p.push_str(atoms[g.below(atoms.len())]);
                p.push_str(quants[g.below(quants.len())]);
            }
            if g.below(10) > 0 {
                p.push('$');
            }
            let Ok(v) = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&json!({ "pattern": p }))
            else {
                continue;
            };
            let Some(pat) = super::Pattern::compile(&p) else {
                continue;
            };
            native += 1;
            for _ in 0..200 {
                let len = g.below(18);
                let s = g.text(&chars, len);
                if let Some(ok) = pat.matches(&s) {
                    decided += 1;
                    assert_eq!(ok, jsonschema_says(&v, &s), "{p} on {s:?}");
                }
            }
        }
        assert!(
            native > 300 && decided > 50_000,
            "{native} patterns, {decided} verdicts"
        );
        // The demo policy's patterns take the native path.
        let phone = super::Pattern::compile("^\\+[1-9][0-9]{6,14}$").expect("native");
        assert_eq!(phone.matches("+15555550123"), Some(true));
        assert_eq!(phone.matches("+05555550123"), Some(false));
        assert!(super::Pattern::compile("^[A-Z]{2}$").is_some());
        assert_eq!(phone.matches("+1555555012é"), Some(false));
        assert_eq!(phone.matches(&"+1".repeat(32)), None);
    }

    /// An object of up to `width` members named from a small pool (escaped spellings and
    /// names outside every schema among them, so duplicates are frequent), nested `depth` deep.
    fn object(g: &mut Gen, depth: usize, width: usize, out: &mut String) {
        let pool = [
            "a", "b", "ab", "\\u0061", "a\\u0062", "c", "x0", "x1", "x2", "x3", "x4", "x5", "x6",
            "x7", "x8", "x9", "y0", "y1", "y2", "y3", "y4", "y5", "y6", "y7", "y8", "y9",
        ];
        out.push('{');
        for m in 0..g.below(width + 1) {
            if m > 0 {
                out.push(',');
            }
            // Past the first few members, mostly distinct names from the x/y range.
            let name = if m > 4 && g.below(4) > 0 {
                pool[6 + (m + g.below(2)) % 20]
            } else {
                pool[g.below(pool.len())]
            };
            out.push_str(&format!("\"{name}\":"));
            match g.below(4) {
                0 if depth > 0 => object(g, depth - 1, width, out),
                1 if depth > 0 => {
                    out.push('[');
                    object(g, depth - 1, width, out);
                    out.push(']');
                }
                2 => out.push_str("\"s\""),
                _ => out.push('1'),
            }
        }
        out.push('}');
    }

    /// The program's own duplicate-name check against the tokenizer's: the same verdict and
    /// the same structural error on every body, valid or not, well-formed or not.
    #[test]
    fn duplicate_names_are_found_as_the_tokenizer_finds_them() {
        let limits = portcullis_core::json::Limits {
            reject_duplicate_names: true,
            check_number_range: true,
            ..Default::default()
        };
        let schemas = [
            json!({"properties": {"a": {"type": "integer"}, "b": {},
                "ab": {"properties": {"a": {}, "x1": {}}}}, "required": ["a"]}),
            json!({"properties": {"a": {}, "b": {}, "c": {}}, "additionalProperties": false}),
            json!({"type": "object"}),
            json!({"additionalProperties": {"properties": {"a": {}, "b": {}}}}),
            json!({"$ref": "#/$defs/o", "$defs": {"o": {"properties": {"a": {"$ref": "#/$defs/o"},
                "x0": {"type": "array", "items": {"$ref": "#/$defs/o"}}}}}}),
        ];
        let mut g = Gen(portcullis_core::fake::TestRng::new(0x51_7CC1_B727_220A));
        let (mut dups, mut valid) = (0, 0);
        for schema in &schemas {
            let program = super::compile(schema, &Default::default(), false).expect("compiles");
            for round in 0..4_000 {
                let mut body = String::new();
                let width = if round % 4 == 0 { 24 } else { 6 };
                object(&mut g, 2, width, &mut body);
                match g.below(12) {
                    0 => body.push('}'),
                    1 => body = body.replacen(':', "", 1 + g.below(3)),
                    _ => {}
                }
                let got = program.validate(body.as_bytes(), limits);
                let want = program.run(body.as_bytes(), limits, false);
                assert_eq!(got, want, "{schema} / {body}");
                let structure = portcullis_core::json::validate(body.as_bytes(), limits);
                assert_eq!(got.err(), structure.err(), "{body}");
                if matches!(
                    structure,
                    Err(portcullis_core::json::Error::DuplicateName(_))
                ) {
                    dups += 1;
                }
                valid += usize::from(got == Ok(true));
            }
        }
        // Both outcomes must be common, or the test checks little.
        assert!(
            dups > 2_000 && valid > 2_000,
            "{dups} duplicates, {valid} valid"
        );
    }

    /// Integer bounds decided natively ([`super::IntRange`]) against jsonschema on whole
    /// documents: bounds at 0 and at the `i64`/`u64` edges, each keyword alone and with others,
    /// instances on both sides of every bound, and the literals left to jsonschema (fractions,
    /// exponents, `-0`, integers past `u64`) — with the number-range check on, as the filter
    /// runs, and off, so the fallback is held to the reference too.
    #[test]
    fn integer_bounds_are_decided_as_jsonschema_decides_them() {
        let edges: [i128; 14] = [
            i128::from(i64::MIN),
            i128::from(i64::MIN) + 1,
            -1_000_000,
            -2,
            -1,
            0,
            1,
            2,
            10_000,
            i128::from(i64::MAX) - 1,
            i128::from(i64::MAX),
            i128::from(i64::MAX) + 1,
            i128::from(u64::MAX) - 1,
            i128::from(u64::MAX),
        ];
        let bound = |x: i128| -> Value {
            i64::try_from(x).map_or_else(
                |_| json!(u64::try_from(x).expect("edges fit u64")),
                |v| json!(v),
            )
        };
        let mut instances: Vec<String> = Vec::new();
        for e in edges {
            for d in -1..=1 {
                instances.push((e + d).to_string());
            }
        }
        instances.extend(
            [
                "-0",
                "0.0",
                "-0.0",
                "1.0",
                "1e2",
                "12.5",
                "-1.5",
                "1E0",
                "10000.000001",
            ]
            .map(String::from),
        );
        let keywords = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];
        let mut g = Gen(portcullis_core::fake::TestRng::new(0x1D8E_4E27_C47D_124F));
        let checked = portcullis_core::json::Limits {
            check_number_range: true,
            ..Default::default()
        };
        let (mut native, mut verdicts) = (0, 0);
        for round in 0..600 {
            let mut m = serde_json::Map::new();
            for _ in 0..1 + g.below(3) {
                let k = keywords[g.below(keywords.len())];
                let v = match g.below(12) {
                    // Float bounds stay with jsonschema: a check that the native range is not
                    // built from them.
                    0 => json!(1.5),
                    1 => json!(10000.0),
                    _ => bound(edges[g.below(edges.len())]),
                };
                m.insert(k.to_string(), v);
            }
            if round % 3 == 0 {
                m.insert("type".into(), json!("integer"));
            }
            let schema = Value::Object(m);
            let Ok(v) = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&schema)
            else {
                continue;
            };
            let program = super::compile(&schema, &Default::default(), false).expect("compiles");
            let node = &program.nodes[program.root];
            native += usize::from(node.ints.is_some());
            for inst in &instances {
                let want = v.is_valid(&serde_json::from_str::<Value>(inst).expect("JSON"));
                for limits in [checked, portcullis_core::json::Limits::default()] {
                    match program.validate(inst.as_bytes(), limits) {
                        Ok(got) => {
                            verdicts += 1;
                            assert_eq!(got, want, "{schema} / {inst}");
                        }
                        // The structural scan refuses it before any schema runs.
                        Err(e) => assert!(
                            matches!(e, portcullis_core::json::Error::NumberOutOfRange(_)),
                            "{inst}: {e:?}"
                        ),
                    }
                }
            }
        }
        assert!(
            native > 300 && verdicts > 30_000,
            "{native} native ranges, {verdicts} verdicts"
        );
        // The demo policy's `seats` takes the native path.
        let seats = json!({"type": "integer", "minimum": 1, "maximum": 10000});
        let program = super::compile(&seats, &Default::default(), false).expect("compiles");
        assert_eq!(
            program.nodes[program.root].ints,
            Some(super::IntRange { lo: 1, hi: 10_000 })
        );
    }

    /// Arrays whose elements get one set of nodes worked out once ([`super::Elements`]) and
    /// arrays that need it per index (`prefixItems`, several `items`), against jsonschema.
    #[test]
    fn array_elements_get_the_nodes_jsonschema_applies() {
        let schemas = [
            json!({"type": "array", "items": {"type": "integer", "maximum": 3}}),
            json!({"prefixItems": [{"type": "string"}, {"type": "boolean"}],
                "items": {"type": "integer"}}),
            json!({"allOf": [{"items": {"maximum": 3}}, {"items": {"minimum": 1}}]}),
            json!({"allOf": [{"items": {"maximum": 3}}, {"prefixItems": [{"const": 2}]}]}),
            json!({"$ref": "#/$defs/a", "items": {"$ref": "#/$defs/i"},
                "$defs": {"a": {"items": {"$ref": "#/$defs/i"}, "maxItems": 4},
                    "i": {"type": ["integer", "array"], "items": {"$ref": "#/$defs/i"}}}}),
            json!({"items": false}),
            json!({"type": "array"}),
        ];
        let items = [
            "1", "2", "3", "4", "0", "true", "\"s\"", "[]", "[1,4]", "[[2]]", "null",
        ];
        let mut g = Gen(portcullis_core::fake::TestRng::new(0x3C6E_F372_FE94_F82B));
        for schema in &schemas {
            let program = super::compile(schema, &Default::default(), false).expect("compiles");
            let v = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(schema)
                .expect("a valid schema");
            for _ in 0..400 {
                let n = g.below(6);
                let body = format!(
                    "[{}]",
                    (0..n)
                        .map(|_| items[g.below(items.len())])
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let instance: Value = serde_json::from_str(&body).expect("JSON");
                let got = program
                    .validate(body.as_bytes(), portcullis_core::json::Limits::default())
                    .expect("well-formed");
                assert_eq!(got, v.is_valid(&instance), "{schema} / {body}");
            }
        }
    }

    #[test]
    fn everyday_addresses_take_the_fast_path() {
        for s in [
            "ada@acme.example.com",
            "grace.hopper+crm@example.org",
            "o'brien@x1.io",
            "a@b",
        ] {
            assert!(plain_email(s), "{s}");
        }
        for s in [
            "\"quoted\"@example.com",
            "user@[127.0.0.1]",
            "Ada <ada@example.com>",
            "user@xn--bcher-kva.example",
            "ada@-acme.com",
            "ada@acme..com",
            ".ada@acme.com",
            "ad..a@acme.com",
            "adé@acme.com",
            "ada@acme.com.",
        ] {
            assert!(!plain_email(s), "{s}");
        }
    }
}
