//! Detectors: find personal data inside free text (string values, text bodies).
//!
//! Each built-in detector pairs a loose pattern with a check that removes look-alikes: Luhn plus
//! issuer prefix and length for cards (a 13-digit epoch-millisecond timestamp starts with `1`,
//! which no issuer uses), ISO 13616 country length plus mod-97 for IBANs, the SSA's never-issued
//! ranges for SSNs, digit counts for phone numbers.
//!
//! Digits: patterns are written with `[0-9]`, never `\d`. Before matching, decimal digits of the
//! scripts in [`DIGIT_ZEROS`] (Arabic-Indic, Devanagari, full-width, mathematical…) are folded to
//! ASCII, so `４１１１…` is recognised as the card it is and masked in its original characters.

use portcullis_core::word;
use regex::bytes::{Regex, RegexBuilder};

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// E-mail address.
    Email,
    /// Phone number: E.164 / international with `+`, North American and common national formats.
    Phone,
    /// US social security number, `123-45-6789` or `123 45 6789`.
    Ssn,
    /// Payment card number, 13–19 digits, contiguous or grouped by spaces or dashes.
    PaymentCard,
    /// International bank account number.
    Iban,
}

impl Builtin {
    /// Name used in config and docs.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::Ssn => "ssn",
            Builtin::PaymentCard => "payment_card",
            Builtin::Iban => "iban",
        }
    }
}

/// One detector of a profile.
#[derive(Debug, Clone)]
pub enum Detector {
    /// Built in.
    Builtin(Builtin),
    /// A custom regular expression (Rust `regex` syntax; the whole match is personal data).
    Custom(Regex),
}

/// A detection: byte range in the original text and which detector (index in the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Start byte.
    pub start: usize,
    /// End byte (exclusive).
    pub end: usize,
    /// Index of the detector in the list given to [`Detectors::new`].
    pub detector: usize,
}

/// Compiled detectors for one profile.
#[derive(Debug, Clone)]
pub struct Detectors {
    list: Vec<Detector>,
    email: Regex,
    /// Phone patterns, each with its anchored twin (which checks a shortened candidate).
    phone: Vec<(Regex, Regex)>,
    ssn: Regex,
    digit_run: Regex,
    iban: Regex,
    /// What `may_find` asks of a value, worked out once from `list`.
    pre: Precheck,
}

/// The thresholds the listed detectors need before they search (see [`Detectors::may_find`]).
#[derive(Debug, Clone, Copy, Default)]
struct Precheck {
    custom: bool,
    email: bool,
    /// Fewest ASCII digits a phone, SSN or card detector needs (`usize::MAX`: none listed).
    digits: usize,
    iban: bool,
}

impl Precheck {
    fn of(list: &[Detector]) -> Self {
        let mut p = Precheck {
            digits: usize::MAX,
            ..Precheck::default()
        };
        for d in list {
            match d {
                Detector::Custom(_) => p.custom = true,
                Detector::Builtin(Builtin::Email) => p.email = true,
                Detector::Builtin(Builtin::Phone) => p.digits = p.digits.min(8),
                Detector::Builtin(Builtin::Ssn) => p.digits = p.digits.min(9),
                Detector::Builtin(Builtin::PaymentCard) => p.digits = p.digits.min(13),
                Detector::Builtin(Builtin::Iban) => p.iban = true,
            }
        }
        p
    }
}

fn re(p: &str) -> Regex {
    // The patterns are constants checked by the unit tests; an impossible failure degrades to a
    // pattern that matches nothing rather than a panic.
    RegexBuilder::new(p)
        .unicode(false)
        .build()
        .unwrap_or_else(|_| never())
}

#[allow(clippy::unwrap_used)] // a literal that always compiles
fn never() -> Regex {
    Regex::new("a^").unwrap()
}

/// Zero code points of decimal-digit runs that are folded to ASCII before matching.
pub const DIGIT_ZEROS: &[u32] = &[
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x11066, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E950, 0x1FBF0,
];

fn fold_digit(c: char) -> Option<u8> {
    let cp = c as u32;
    DIGIT_ZEROS
        .iter()
        .find(|&&z| (z..z + 10).contains(&cp))
        .and_then(|z| u8::try_from(cp - z).ok())
        .map(|d| b'0' + d)
}

/// Text as the detectors read it, and the map back to original offsets.
struct Folded {
    text: Vec<u8>,
    /// `orig[i]` is the original offset of folded byte `i` (one extra entry for the end).
    orig: Vec<usize>,
}

/// Non-ASCII decimal digits folded to ASCII.
fn fold_digits(input: &[u8]) -> Option<Folded> {
    if input.is_ascii() {
        return None;
    }
    let s = std::str::from_utf8(input).ok()?;
    if !s.chars().any(|c| fold_digit(c).is_some()) {
        return None;
    }
    let mut text = Vec::with_capacity(input.len());
    let mut orig = Vec::with_capacity(input.len() + 1);
    for (i, c) in s.char_indices() {
        if let Some(d) = fold_digit(c) {
            text.push(d);
            orig.push(i);
        } else {
            let mut buf = [0u8; 4];
            for (j, b) in c.encode_utf8(&mut buf).bytes().enumerate() {
                text.push(b);
                orig.push(i + j);
            }
        }
    }
    orig.push(input.len());
    Some(Folded { text, orig })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XX` escape at `i` stands for.
fn escape_at(t: &[u8], i: usize) -> Option<u8> {
    if t.get(i) != Some(&b'%') {
        return None;
    }
    Some(hex(*t.get(i + 1)?)? * 16 + hex(*t.get(i + 2)?)?)
}

/// URL escapes undone, the way a client reading a query string or form body sees them:
/// `%XX` is its byte and a `+` between two digits is the space it encodes
/// (`ada%40acme.example.com`, `4111+1111+1111+1111`). One level only.
fn fold_url(input: &[u8]) -> Option<Folded> {
    let plus = |i: usize| {
        input.get(i) == Some(&b'+')
            && input.get(i.wrapping_sub(1)).is_some_and(u8::is_ascii_digit)
            && input.get(i + 1).is_some_and(u8::is_ascii_digit)
    };
    if !(0..input.len()).any(|i| escape_at(input, i).is_some() || plus(i)) {
        return None;
    }
    let mut text = Vec::with_capacity(input.len());
    let mut orig = Vec::with_capacity(input.len() + 1);
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        orig.push(i);
        if let Some(v) = escape_at(input, i) {
            text.push(v);
            i += 3;
        } else {
            text.push(if plus(i) { b' ' } else { b });
            i += 1;
        }
    }
    orig.push(input.len());
    Some(Folded { text, orig })
}

/// Digits folded, then URL escapes undone; offsets map back through both.
fn fold(input: &[u8]) -> Option<Folded> {
    let digits = fold_digits(input);
    let after = digits.as_ref().map_or(input, |f| f.text.as_slice());
    match (fold_url(after), digits) {
        (None, d) => d,
        (Some(u), None) => Some(u),
        (Some(u), Some(d)) => Some(Folded {
            orig: u
                .orig
                .iter()
                .map(|&i| d.orig.get(i).copied().unwrap_or(input.len()))
                .collect(),
            text: u.text,
        }),
    }
}

/// `hit` with its URL escapes undone, when it has any and they decode to UTF-8: the value an
/// action should see (a token of `ada%40x.com` is the token of `ada@x.com`).
pub fn unescaped(hit: &str) -> Option<String> {
    let f = fold_url(hit.as_bytes())?;
    String::from_utf8(f.text).ok()
}

/// Percent-encodes what an action wrote in place of an escaped hit, so a URL stays a URL.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'*') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_alnum(b: Option<&u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric())
}

impl Detectors {
    /// Compiles the built-in patterns once for a list of detectors.
    pub fn new(list: Vec<Detector>) -> Self {
        Detectors {
            pre: Precheck::of(&list),
            list,
            email: re(
                r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}",
            ),
            phone: [
                // International: + country code, then digits with optional single separators.
                r"\+[0-9](?:[ .\-]?\(?[0-9]+\)?)+",
                // North American: (555) 123-4567, 555-123-4567, 1-555-123-4567.
                r"(?:1[ .\-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])[0-9]{3}[ .\-][0-9]{4}",
                // National with trunk 0: 020 7946 0958, 07700 900123, 01 23 45 67 89.
                r"0[1-9][0-9]{0,4}(?:[ .\-][0-9]{2,4}){1,4}",
            ]
            .iter()
            .map(|p| (re(p), re(&format!("^(?:{p})$"))))
            .collect(),
            ssn: re(r"[0-9]{3}[ \-][0-9]{2}[ \-][0-9]{4}"),
            digit_run: re(r"[0-9]+(?:[ \-][0-9]+)*"),
            iban: re(r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,32}"),
        }
    }

    /// The detectors, in priority order.
    pub fn list(&self) -> &[Detector] {
        &self.list
    }

    /// True when there is nothing to detect.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// False only when [`Detectors::find`] surely finds nothing in `input`: one pass over it
    /// for what every built-in detector needs before it searches (an `@`, enough digits), so
    /// a value with nothing to mask costs little. Text with URL escapes or non-ASCII characters
    /// (digits of other scripts) is always searched. `customs`: whether a custom pattern may
    /// match (see [`Detectors::customs_absent`]).
    #[inline]
    pub fn may_find(&self, input: &[u8], customs: bool) -> bool {
        if self.list.is_empty() {
            return false;
        }
        // Most values and names are short: one word, read where the caller is.
        let scanned = match input.len() {
            0 => Some((0, false)),
            1..=7 => scan_word(word::padded(input)),
            8..=15 => scan_two(input),
            _ => scan(input),
        };
        let Some((digits, at)) = scanned else {
            return true;
        };
        // The same thresholds `find` checks before each search.
        let p = &self.pre;
        (p.custom && customs)
            || (p.email && at)
            || digits >= p.digits
            || (p.iban && digits >= 2 && input.len() >= 15)
    }

    /// True when no custom pattern matches anywhere in `doc`, so none matches inside any part
    /// of it either (a part taken as it is written: a JSON string without escapes). Patterns
    /// with anchors (`^`, `$`, `\A`, `\z`), which match a part but not the whole, are never
    /// ruled out.
    pub fn customs_absent(&self, doc: &[u8]) -> bool {
        self.list.iter().all(|d| match d {
            Detector::Builtin(_) => true,
            Detector::Custom(r) => {
                let p = r.as_str();
                let anchored = p.contains(['^', '$']) || p.contains("\\A") || p.contains("\\z");
                !anchored && !r.is_match(doc)
            }
        })
    }

    /// Every detection in `input` that can be told apart, non-overlapping and sorted by
    /// position. Each detector proposes every candidate it validates — after a candidate fails
    /// its check the search resumes one byte later (never after the swallowed text), and a
    /// candidate that fails whole may still hold shorter valid ones — and the set covering the
    /// most text wins (on a tie, detectors listed first). So two items of one kind side by
    /// side are both found, and no greedy match hides the one after it.
    pub fn find(&self, input: &[u8]) -> Vec<Found> {
        if self.list.is_empty() {
            return Vec::new();
        }
        let folded = fold(input);
        let text = folded.as_ref().map_or(input, |f| f.text.as_slice());
        let digits = text.iter().filter(|b| b.is_ascii_digit()).count();
        let mut all = Vec::new();
        for (idx, d) in self.list.iter().enumerate() {
            let mut spans = Vec::new();
            match d {
                Detector::Custom(r) => {
                    // Custom patterns see the original text (their `\d` is Unicode-aware);
                    // without a check to fail, leftmost-first matching finds them all.
                    for m in r.find_iter(input) {
                        if m.end() > m.start() {
                            all.push(Found {
                                start: m.start(),
                                end: m.end(),
                                detector: idx,
                            });
                        }
                    }
                    continue;
                }
                Detector::Builtin(Builtin::Email) => {
                    // No check can fail, so leftmost-first matching finds every address (and
                    // resuming inside one would only find its own tails, at quadratic cost).
                    if text.contains(&b'@') {
                        spans.extend(self.email.find_iter(text).map(|m| (m.start(), m.end())));
                    }
                }
                Detector::Builtin(Builtin::Phone) => {
                    if digits >= 8 {
                        for (r, exact) in &self.phone {
                            candidates(r, text, |s, e| phone_ends(text, exact, s, e), &mut spans);
                        }
                    }
                }
                Detector::Builtin(Builtin::Ssn) => {
                    if digits >= 9 {
                        candidates(
                            &self.ssn,
                            text,
                            |s, e| if ssn_ok(text, s, e) { vec![e] } else { vec![] },
                            &mut spans,
                        );
                    }
                }
                Detector::Builtin(Builtin::PaymentCard) => {
                    if digits >= 13 {
                        // Runs of digit groups are delimited by other characters, so each run
                        // is examined once, for every card made of whole groups inside it.
                        for m in self.digit_run.find_iter(text) {
                            cards_in_run(text, m.start(), m.end(), &mut spans);
                        }
                    }
                }
                Detector::Builtin(Builtin::Iban) => {
                    if digits >= 2 && text.len() >= 15 {
                        candidates(
                            &self.iban,
                            text,
                            |s, e| {
                                if is_alnum(text.get(s.wrapping_sub(1))) {
                                    return vec![];
                                }
                                iban_at(text, s, e).into_iter().collect()
                            },
                            &mut spans,
                        );
                    }
                }
            }
            // Map built-in detections found in the folded text back to original offsets.
            for (s, e) in spans {
                let (start, end) = match &folded {
                    Some(f) => (
                        f.orig.get(s).copied().unwrap_or(input.len()),
                        f.orig.get(e).copied().unwrap_or(input.len()),
                    ),
                    None => (s, e),
                };
                if end > start {
                    all.push(Found {
                        start,
                        end,
                        detector: idx,
                    });
                }
            }
        }
        select(all)
    }

    /// True when `digits` (ASCII, no separators) is a payment card number.
    pub fn is_card_number(digits: &str) -> bool {
        let d = digits.as_bytes();
        // No issuer's numbers start otherwise (see `card_ok`): most digit strings stop here.
        (13..=19).contains(&d.len())
            && matches!(d.first(), Some(b'2'..=b'6' | b'8'))
            && d.iter().all(u8::is_ascii_digit)
            && card_ok(d)
    }
}

/// ASCII digits and whether an `@` is in `input`; `None` when it has a `%` or a non-ASCII
/// byte. Eight bytes at a time, the last few too: every value of a body goes through here,
/// and most are short.
#[inline(never)]
fn scan(input: &[u8]) -> Option<(usize, bool)> {
    // No test decides anything before the end (a `%` or non-ASCII byte anywhere decides it as
    // much as one in the first word), so each word only adds to three accumulators: its high
    // bits and `%` flags, its `@` flags, a bit per digit byte in each byte lane. The lanes are
    // summed by one multiplication per 31 words, while their total stays below 256.
    let mut bad = 0u64;
    let mut at = 0u64;
    let mut digits = 0usize;
    let mut rest = input;
    while rest.len() >= 8 {
        let (block, tail) = rest.split_at((rest.len() / 8).min(31) * 8);
        let mut ones = 0u64;
        for chunk in block.chunks_exact(8) {
            let w = word::padded(chunk);
            bad |= word_bad(w);
            at |= word_at(w);
            ones += digit_ones(w);
        }
        digits += lane_sum(ones);
        rest = tail;
    }
    if !rest.is_empty() {
        // Zero bytes fill the word: ASCII, not a digit, `@` or `%`, so they count as nothing.
        let w = word::padded(rest);
        bad |= word_bad(w);
        at |= word_at(w);
        digits += lane_sum(digit_ones(w));
    }
    if bad != 0 {
        return None;
    }
    Some((digits, at != 0))
}

/// [`scan`] of 8 to 15 bytes (an id, a code, a status), inline: the first eight bytes as one
/// word, the rest (up to 7) as another.
#[inline(always)]
fn scan_two(input: &[u8]) -> Option<(usize, bool)> {
    let (head, rest) = input.split_at_checked(8)?;
    let (d1, a1) = scan_word(word::padded(head))?;
    let (d2, a2) = scan_word(word::padded(rest))?;
    Some((d1 + d2, a1 | a2))
}

/// [`scan`] of one word: its ASCII digits and whether it holds an `@`.
#[inline(always)]
fn scan_word(w: u64) -> Option<(usize, bool)> {
    use word::{bytes_equal, HIGH, ONES};
    if w & HIGH != 0 || bytes_equal(w, b'%') != 0 {
        return None;
    }
    let at = bytes_equal(w, b'@') != 0;
    // Every byte is ASCII (below 0x80), so adding 0x50 (0x46) to each sets its high bit
    // exactly when it is at least `0` (`:`), and no sum carries into the next byte.
    let from_zero = w.wrapping_add(ONES * 0x50);
    let past_nine = w.wrapping_add(ONES * 0x46);
    // One bit per digit byte, summed across the bytes by one multiplication (at most 8;
    // cheaper than a population count where the target has no instruction for it).
    let ones = (from_zero & !past_nine & HIGH) >> 7;
    Some(((ones.wrapping_mul(ONES) >> 56) as usize, at))
}

/// Non-zero when word `w` holds a non-ASCII byte or a `%`.
#[inline(always)]
fn word_bad(w: u64) -> u64 {
    use word::{bytes_equal, HIGH};
    (w | bytes_equal(w, b'%')) & HIGH
}

/// Non-zero when the ASCII word `w` holds an `@`.
#[inline(always)]
fn word_at(w: u64) -> u64 {
    word::bytes_equal(w, b'@')
}

/// One bit at the bottom of each byte lane of the ASCII word `w` that is a digit (for a word
/// with a non-ASCII byte, still at most one bit per lane, but meaningless).
#[inline(always)]
fn digit_ones(w: u64) -> u64 {
    use word::{HIGH, ONES};
    // Every byte is ASCII (below 0x80), so adding 0x50 (0x46) to each sets its high bit
    // exactly when it is at least `0` (`:`), and no sum carries into the next byte.
    let from_zero = w.wrapping_add(ONES * 0x50);
    let past_nine = w.wrapping_add(ONES * 0x46);
    (from_zero & !past_nine & HIGH) >> 7
}

/// The sum of the byte lanes of `ones`, when it is below 256: one multiplication (cheaper than
/// a population count where the target has no instruction for it).
#[inline(always)]
fn lane_sum(ones: u64) -> usize {
    (ones.wrapping_mul(word::ONES) >> 56) as usize
}

/// Every candidate of `re` in `t`: `ends(start, end)` returns the valid ends of the match at
/// `start` (the match's own end, or shorter ones). The search resumes at the next byte, so
/// text a greedy match swallowed — whether it passed its check or not — is searched again
/// (the patterns given here match at most a few dozen bytes, except where only a rare
/// character such as `+` can start a match).
fn candidates(
    re: &Regex,
    t: &[u8],
    mut ends: impl FnMut(usize, usize) -> Vec<usize>,
    out: &mut Vec<(usize, usize)>,
) {
    let mut pos = 0;
    while pos < t.len() {
        let Some(m) = re.find_at(t, pos) else { break };
        out.extend(
            ends(m.start(), m.end())
                .into_iter()
                .filter(|&e| e > m.start())
                .map(|e| (m.start(), e)),
        );
        pos = m.start() + 1;
    }
}

/// Chooses, among overlapping candidates, the non-overlapping set that covers the most text;
/// among equal covers, the earliest candidate, then the longest, then the detector listed
/// first (the rule the greedy scan used to apply alone).
fn select(mut all: Vec<Found>) -> Vec<Found> {
    all.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end), f.detector));
    // Same span from several detectors: the one listed first.
    all.dedup_by(|b, a| a.start == b.start && a.end == b.end);
    // Weighted interval scheduling over suffixes: best[i] is the most text the candidates
    // from i on can cover; taking candidate i wins ties, so earlier and longer ones do.
    let n = all.len();
    let mut best = vec![0usize; n + 1];
    let mut take = vec![false; n];
    for i in (0..n).rev() {
        let Some(f) = all.get(i) else { continue };
        let next = i + all
            .get(i..)
            .map_or(0, |rest| rest.partition_point(|g| g.start < f.end));
        let with = (f.end - f.start) + best.get(next).copied().unwrap_or(0);
        let without = best.get(i + 1).copied().unwrap_or(0);
        take[i] = with >= without;
        best[i] = with.max(without);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(f) = all.get(i) {
        if take.get(i).copied().unwrap_or(false) {
            out.push(*f);
            i += all
                .get(i..)
                .map_or(1, |rest| rest.partition_point(|g| g.start < f.end));
        } else {
            i += 1;
        }
    }
    out
}

/// Valid ends of a phone candidate at `s`: the longest prefix of the greedy match `s..e` the
/// pattern still matches whole at each group boundary, with 8 to 15 digits (a run of two
/// numbers is too long as one, but its first number is still a phone number).
fn phone_ends(t: &[u8], exact: &Regex, s: usize, e: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut digits = 0;
    for p in s..e {
        let Some(&b) = t.get(p) else { break };
        if b.is_ascii_digit() {
            digits += 1;
            if digits > 15 {
                break;
            }
        }
        let end = p + 1;
        let boundary = end == e || !t.get(end).is_some_and(u8::is_ascii_digit);
        if (b.is_ascii_digit() || b == b')')
            && boundary
            && digits >= 8
            && exact.is_match(t.get(s..end).unwrap_or_default())
            && phone_ok(t, s, end)
        {
            out.push(end);
        }
    }
    out
}

fn phone_ok(t: &[u8], s: usize, e: usize) -> bool {
    let prev = t.get(s.wrapping_sub(1));
    if is_alnum(prev) || prev == Some(&b'+') || is_alnum(t.get(e)) {
        return false;
    }
    let part = t.get(s..e).unwrap_or_default();
    let n = part.iter().filter(|b| b.is_ascii_digit()).count();
    // E.164 allows at most 15 digits; fewer than 8 is too short to tell from other numbers.
    (8..=15).contains(&n)
        && !part
            .windows(2)
            .any(|w| !(w[0].is_ascii_digit() || w[1].is_ascii_digit() || w == b") " || w == b" ("))
}

fn ssn_ok(t: &[u8], s: usize, e: usize) -> bool {
    let prev = t.get(s.wrapping_sub(1));
    let next = t.get(e);
    if is_alnum(prev) || is_alnum(next) || prev == Some(&b'-') || next == Some(&b'-') {
        return false;
    }
    let Some(p) = t.get(s..e) else { return false };
    if p.len() != 11 || p[3] != p[6] {
        return false;
    }
    let num = |r: &[u8]| r.iter().fold(0u32, |a, b| a * 10 + u32::from(b - b'0'));
    let (area, group, serial) = (num(&p[0..3]), num(&p[4..6]), num(&p[7..11]));
    // Never issued: area 000, 666, 900–999; group 00; serial 0000.
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, b) in d.iter().rev().enumerate() {
        let mut v = u32::from(b - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn prefix(d: &[u8], n: usize) -> u32 {
    d.iter()
        .take(n)
        .fold(0u32, |a, b| a * 10 + u32::from(b - b'0'))
}

/// Issuer prefix and length (IIN ranges of the major networks) plus Luhn.
fn card_ok(d: &[u8]) -> bool {
    let len = d.len();
    // Read only when the first digit is an issuer's (most digit strings are not cards).
    let issuing = matches!(d.first(), Some(b'2'..=b'6' | b'8'));
    let (p2, p3, p4, p6) = if issuing {
        (prefix(d, 2), prefix(d, 3), prefix(d, 4), prefix(d, 6))
    } else {
        (0, 0, 0, 0)
    };
    let issuer = match d.first() {
        Some(b'4') => matches!(len, 13 | 16 | 19), // Visa
        Some(b'3') => {
            ((p2 == 34 || p2 == 37) && len == 15) // Amex
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len)) // JCB
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39 || p4 == 3095)
                    && (14..=19).contains(&len)) // Diners
        }
        Some(b'5') => {
            ((51..=55).contains(&p2) && len == 16) // Mastercard
                || ((p2 == 50 || (56..=59).contains(&p2)) && (13..=19).contains(&len))
            // Maestro
        }
        Some(b'2') => {
            ((2221..=2720).contains(&p4) && len == 16) // Mastercard 2-series
                || ((2200..=2204).contains(&p4) && (16..=19).contains(&len)) // Mir
        }
        Some(b'6') => {
            (16..=19).contains(&len)
                && (p4 == 6011
                    || (644..=649).contains(&p3)
                    || p2 == 65
                    || p2 == 62
                    || (622_126..=622_925).contains(&p6)
                    || p2 == 60)
                || ((p2 >= 60) && (13..=19).contains(&len)) // Maestro 6x
        }
        Some(b'8') => (p2 == 81 || p2 == 82) && len == 16, // RuPay
        _ => false,
    };
    issuer && luhn(d)
}

/// Every card number made of whole groups of a digit run (`4111 1111 1111 1111 exp 12 25`
/// still finds the card, not a 19-digit non-card; two cards in one run are both found).
/// Separators inside one candidate must agree, and a candidate glued to a letter or digit
/// outside the run is not one.
fn cards_in_run(t: &[u8], s: usize, e: usize, out: &mut Vec<(usize, usize)>) {
    let run = t.get(s..e).unwrap_or_default();
    // Groups as (start, end) offsets within `t`, plus the separator before each group.
    let mut groups: Vec<(usize, usize, u8)> = Vec::new();
    let mut gs = s;
    let mut sep = 0u8;
    for (i, &b) in run.iter().enumerate() {
        if !b.is_ascii_digit() {
            groups.push((gs, s + i, sep));
            sep = b;
            gs = s + i + 1;
        }
    }
    groups.push((gs, e, sep));
    for (i, &(start, _, _)) in groups.iter().enumerate() {
        if i == 0 && is_alnum(t.get(start.wrapping_sub(1))) {
            continue;
        }
        let mut digits: Vec<u8> = Vec::with_capacity(19);
        let mut run_sep = 0u8;
        for (j, &(a, b, sp)) in groups.iter().enumerate().skip(i) {
            if j > i {
                if run_sep == 0 {
                    run_sep = sp;
                } else if sp != run_sep {
                    break;
                }
            }
            digits.extend_from_slice(t.get(a..b).unwrap_or_default());
            if digits.len() > 19 {
                break;
            }
            if digits.len() >= 13 && !is_alnum(t.get(b)) && card_ok(&digits) {
                out.push((start, b));
            }
        }
    }
}

/// ISO 13616 IBAN length by country.
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// Takes exactly the country's IBAN length of characters from a candidate (single spaces
/// allowed between them) and checks mod-97; returns the end offset.
fn iban_at(t: &[u8], s: usize, e: usize) -> Option<usize> {
    let cand = t.get(s..e)?;
    let cc = cand.get(0..2)?;
    let want = IBAN_LENGTHS.iter().find(|(c, _)| c.as_slice() == cc)?.1;
    let mut chars = Vec::with_capacity(want);
    let mut end = s;
    for (i, &b) in cand.iter().enumerate() {
        if chars.len() == want {
            break;
        }
        if b != b' ' {
            chars.push(b);
            end = s + i + 1;
        }
    }
    if chars.len() != want || is_alnum(t.get(end)) {
        return None;
    }
    // Rearrange (first four to the end), letters to 10..35, remainder mod 97 must be 1.
    let mut rem = 0u32;
    for &b in chars.iter().skip(4).chain(chars.iter().take(4)) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return None,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    (rem == 1).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(kind: Builtin, s: &str) -> Vec<String> {
        let d = Detectors::new(vec![Detector::Builtin(kind)]);
        d.find(s.as_bytes())
            .into_iter()
            .map(|f| s[f.start..f.end].to_string())
            .collect()
    }

    #[test]
    fn emails() {
        assert_eq!(
            find(Builtin::Email, "mail ada@acme.example.com now"),
            ["ada@acme.example.com"]
        );
        assert_eq!(
            find(Builtin::Email, "a.b+tag@x-y.io,c@d.org"),
            ["a.b+tag@x-y.io", "c@d.org"]
        );
        assert!(find(Builtin::Email, "not an @ address, x@y").is_empty());
    }

    #[test]
    fn phones() {
        for p in [
            "+15555550123",
            "+1-555-555-0123",
            "+44 20 7946 0958",
            "(555) 123-4567",
            "555-123-4567",
            "1-555-123-4567",
            "020 7946 0958",
            "01 23 45 67 89",
            "+33 (0)1 23 45 67 89",
        ] {
            assert_eq!(find(Builtin::Phone, &format!("call {p}.")), [p], "{p}");
        }
        for n in [
            "2024-01-15",
            "version 1.2.3",
            "1700000000000",
            "+12345",
            "id 5551234567",
        ] {
            assert!(find(Builtin::Phone, n).is_empty(), "{n}");
        }
    }

    #[test]
    fn ssns() {
        assert_eq!(find(Builtin::Ssn, "ssn 123-45-6789."), ["123-45-6789"]);
        assert_eq!(find(Builtin::Ssn, "ssn 123 45 6789"), ["123 45 6789"]);
        for n in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123-45 6789",
            "1123-45-6789",
            "123-45-67890",
        ] {
            assert!(find(Builtin::Ssn, n).is_empty(), "{n}");
        }
    }

    #[test]
    fn cards() {
        for c in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
            "2223003122003222",
            "3530111333300000",
        ] {
            assert_eq!(
                find(Builtin::PaymentCard, &format!("card {c} ok")),
                [c],
                "{c}"
            );
        }
        // Expiry after the number does not hide the card.
        assert_eq!(
            find(Builtin::PaymentCard, "4111 1111 1111 1111 12 25"),
            ["4111 1111 1111 1111"]
        );
        for n in [
            "1700000000000",       // epoch milliseconds
            "1700000000000000000", // epoch nanoseconds
            "4111111111111112",    // Luhn fails
            "4111 1111-1111 1111", // mixed separators
            "x4111111111111111",   // glued to a word
            "9111111111111111",    // no issuer
            "41111111111111111111",
        ] {
            assert!(find(Builtin::PaymentCard, n).is_empty(), "{n}");
        }
        assert!(Detectors::is_card_number("4111111111111111"));
        assert!(!Detectors::is_card_number("1700000000000"));
    }

    #[test]
    fn ibans() {
        for i in [
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
        ] {
            assert_eq!(
                find(Builtin::Iban, &format!("iban {i} BIC ABC")),
                [i],
                "{i}"
            );
        }
        for n in [
            "GB82WEST12345698765433",
            "ZZ82WEST12345698765432",
            "GB82WEST1234569876543",
        ] {
            assert!(find(Builtin::Iban, n).is_empty(), "{n}");
        }
    }

    #[test]
    fn the_word_scan_counts_as_the_byte_scan() {
        let naive = |t: &[u8]| {
            let mut digits = 0;
            let mut at = false;
            for &b in t {
                if b.is_ascii_digit() {
                    digits += 1;
                } else if b == b'@' {
                    at = true;
                } else if b == b'%' || !b.is_ascii() {
                    return None;
                }
            }
            Some((digits, at))
        };
        let alphabet = b"0123456789/:@%a -\x7f\x80\xff";
        let mut seed = 0x9e37_79b9_u32;
        // Past 248 bytes the digit lanes are summed in more than one round.
        for len in (0..40).chain([240, 247, 248, 249, 255, 256, 257, 300, 496, 505, 2100]) {
            for k in 0..200 {
                let mut t: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        // Mostly plain text and digits: a `%` or non-ASCII byte ends the scan.
                        let r = (seed >> 16) as usize % (alphabet.len() * 4);
                        alphabet.get(r).copied().unwrap_or(b'5' + (r % 3) as u8)
                    })
                    .collect();
                if len > 40 && k % 2 == 0 {
                    // Long texts hold a `%` or non-ASCII byte almost surely: half of them
                    // without, so that their digits are counted, and one at most.
                    for b in t.iter_mut().filter(|b| **b == b'%' || !b.is_ascii()) {
                        *b = b'x';
                    }
                    if k % 4 == 0 {
                        let at = (seed as usize) % len;
                        t[at] = [b'%', 0x80, 0xff][k % 3];
                    }
                }
                assert_eq!(scan(&t), naive(&t), "{t:?}");
                match len {
                    1..=7 => assert_eq!(scan_word(word::padded(&t)), naive(&t), "{t:?}"),
                    8..=15 => assert_eq!(scan_two(&t), naive(&t), "{t:?}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn non_ascii_digits_are_folded() {
        let s = "card ４１１１１１１１１１１１１１１１ end";
        let got = find(Builtin::PaymentCard, s);
        assert_eq!(got, ["４１１１１１１１１１１１１１１１"]);
        let arabic = "ssn ١٢٣-٤٥-٦٧٨٩";
        assert_eq!(find(Builtin::Ssn, arabic), ["١٢٣-٤٥-٦٧٨٩"]);
    }

    #[test]
    fn overlaps_prefer_earliest_then_longest() {
        let d = Detectors::new(vec![
            Detector::Builtin(Builtin::Phone),
            Detector::Builtin(Builtin::PaymentCard),
        ]);
        let s = "4111 1111 1111 1111";
        let f = d.find(s.as_bytes());
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].start, f[0].end, f[0].detector), (0, s.len(), 1));
    }
}
