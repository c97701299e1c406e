//! Property-style tests of the detectors: valid items drawn at random (cards with a correct
//! Luhn digit and issuer prefix, IBANs with correct check digits, issuable SSNs, e-mail
//! addresses, phone numbers in each supported format), alone and in pairs joined by every
//! common separator, with every detector enabled at once. Each item must be covered whole.
//! `PORTCULLIS_FUZZ_SEED` / `PORTCULLIS_FUZZ_CASES` rerun or widen a run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_core::fake::TestRng;
use portcullis_pii::detect::{Builtin, Detector, Detectors};

/// The shared test generator with the draws these properties need.
struct Rng(TestRng);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn luhn_digit(body: &str) -> char {
    let mut sum = 0;
    for (i, b) in body.bytes().rev().enumerate() {
        let mut v = u32::from(b - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    for &n in sizes {
        out.push(&s[i..i + n]);
        i += n;
    }
    out.join(sep)
}

fn card(r: &mut Rng) -> String {
    let (prefix, len) = match r.below(6) {
        0 => ("4".to_string(), 16),
        1 => (format!("5{}", r.range(1, 5)), 16),
        2 => (r.pick(&["34", "37"]).to_string(), 15),
        3 => ("6011".to_string(), 16),
        4 => (format!("{}", r.range(2221, 2720)), 16),
        _ => (format!("35{}", r.range(28, 89)), 16),
    };
    let body = format!("{prefix}{}", r.digits(len - 1 - prefix.len()));
    let number = format!("{body}{}", luhn_digit(&body));
    let sizes: &[usize] = if len == 15 { &[4, 6, 5] } else { &[4, 4, 4, 4] };
    match r.below(3) {
        0 => number,
        1 => group(&number, sizes, " "),
        _ => group(&number, sizes, "-"),
    }
}

fn iban(r: &mut Rng) -> String {
    let (cc, len) = [
        ("GB", 22),
        ("DE", 22),
        ("FR", 27),
        ("NO", 15),
        ("NL", 18),
        ("IT", 27),
    ][r.below(6)];
    let bban: String = (0..len - 4)
        .map(|i| {
            if i < 4 && r.below(2) == 0 {
                char::from(b'A' + r.below(26) as u8)
            } else {
                char::from(b'0' + r.below(10) as u8)
            }
        })
        .collect();
    let numeric: String = format!("{bban}{cc}00")
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                c.to_string()
            } else {
                (c as u32 - 'A' as u32 + 10).to_string()
            }
        })
        .collect();
    let rem = numeric
        .bytes()
        .fold(0u32, |a, b| (a * 10 + u32::from(b - b'0')) % 97);
    let iban = format!("{cc}{:02}{bban}", 98 - rem);
    if r.below(2) == 0 {
        iban
    } else {
        iban.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn ssn(r: &mut Rng) -> String {
    let mut area = r.range(1, 899);
    if area == 666 {
        area = 665;
    }
    let sep = r.pick(&["-", " "]);
    format!(
        "{area:03}{sep}{:02}{sep}{:04}",
        r.range(1, 99),
        r.range(1, 9999)
    )
}

fn email(r: &mut Rng) -> String {
    let word = |r: &mut Rng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'a' + r.below(26) as u8))
            .collect()
    };
    let local = match r.below(3) {
        0 => {
            let n = r.range(1, 12);
            word(r, n)
        }
        1 => format!("{}.{}", word(r, 4), word(r, 6)),
        _ => format!("{}+{}", word(r, 5), word(r, 3)),
    };
    let n = r.range(2, 10);
    format!(
        "{local}@{}.{}",
        word(r, n),
        r.pick(&["com", "org", "example.com", "co.uk", "io"])
    )
}

fn phone(r: &mut Rng) -> String {
    let npa = format!("{}{}", r.range(2, 9), r.digits(2));
    let nxx = r.digits(3);
    let line = r.digits(4);
    match r.below(6) {
        0 => format!("+1{npa}{nxx}{line}"),
        1 => format!("+44 20 {} {}", r.digits(4), r.digits(4)),
        2 => format!("({npa}) {nxx}-{line}"),
        3 => format!("{npa}-{nxx}-{line}"),
        4 => format!("1-{npa}-{nxx}-{line}"),
        _ => format!(
            "0{}{} {} {}",
            r.range(1, 9),
            r.digits(1),
            r.digits(4),
            r.digits(4)
        ),
    }
}

type Gen = fn(&mut Rng) -> String;
const KINDS: [(&str, Gen); 5] = [
    ("payment_card", card),
    ("iban", iban),
    ("ssn", ssn),
    ("email", email),
    ("phone", phone),
];
const SEPARATORS: [&str; 14] = [
    " ", "  ", ", ", ",", "; ", ";", "\n", "\t", " | ", "|", " / ", "/", " and ", "\r\n",
];

fn all_detectors() -> Detectors {
    Detectors::new(
        [
            Builtin::Email,
            Builtin::Phone,
            Builtin::Ssn,
            Builtin::PaymentCard,
            Builtin::Iban,
        ]
        .into_iter()
        .map(Detector::Builtin)
        .collect(),
    )
}

/// Every letter and digit of `text[range]` lies inside a detection (where two items run
/// together, a separator between them may fall on either side).
fn covered(d: &Detectors, text: &str, range: std::ops::Range<usize>) -> bool {
    let found = d.find(text.as_bytes());
    let bytes = text.as_bytes();
    range
        .clone()
        .filter(|&i| bytes[i].is_ascii_alphanumeric())
        .all(|i| found.iter().any(|f| f.start <= i && i < f.end))
}

fn settings() -> (u64, usize) {
    let seed = std::env::var("PORTCULLIS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let cases = std::env::var("PORTCULLIS_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    (seed, cases)
}

#[test]
fn every_generated_item_is_found_whole_on_its_own_and_inside_text() {
    let (seed, cases) = settings();
    let mut r = Rng(TestRng::new(seed));
    let d = all_detectors();
    for (kind, gen) in KINDS {
        for _ in 0..cases * 20 {
            let item = gen(&mut r);
            let f = d.find(item.as_bytes());
            assert!(
                f.len() == 1 && f[0].start == 0 && f[0].end == item.len(),
                "{kind} {item:?}: {f:?} (seed {seed})"
            );
            let text = format!("see: {item}.");
            assert!(covered(&d, &text, 5..5 + item.len()), "{kind} {text:?}");
        }
    }
}

#[test]
fn any_two_items_joined_by_any_separator_are_both_found() {
    let (seed, cases) = settings();
    let mut r = Rng(TestRng::new(seed ^ 0x00ff_00ff));
    let d = all_detectors();
    for (ka, ga) in KINDS {
        for (kb, gb) in KINDS {
            for sep in SEPARATORS {
                for _ in 0..cases {
                    let (a, b) = (ga(&mut r), gb(&mut r));
                    let text = format!("{a}{sep}{b}");
                    let second = a.len() + sep.len();
                    assert!(
                        covered(&d, &text, 0..a.len()) && covered(&d, &text, second..text.len()),
                        "{ka} then {kb}: {text:?} found {:?} (seed {seed})",
                        d.find(text.as_bytes())
                    );
                }
            }
        }
    }
}

#[test]
fn the_issues_probes_and_their_neighbours() {
    let d = Detectors::new(vec![Detector::Builtin(Builtin::Iban)]);
    let text = "GB82WEST12345698765432 DE89370400440532013000";
    let f = d.find(text.as_bytes());
    assert_eq!(f.len(), 2, "{f:?}");
    let text = "GB82 WEST 1234 5698 7654 32 DE89 3704 0044 0532 0130 00";
    assert_eq!(d.find(text.as_bytes()).len(), 2);
    // A candidate that fails its check does not hide the item right after it.
    let text = "GB82WEST12345698765433 DE89370400440532013000";
    let f = d.find(text.as_bytes());
    assert_eq!((f.len(), f[0].start), (1, 23), "{f:?}");
    // A phone number run into the next one: both, not one 20-digit non-number.
    let d = Detectors::new(vec![Detector::Builtin(Builtin::Phone)]);
    let text = "+1 555 555 0123 555 555 0124";
    assert!(covered(&d, text, 0..15) && covered(&d, text, 16..text.len()));
    // A card glued to a word at the end of its run no longer hides the card before it.
    let d = Detectors::new(vec![Detector::Builtin(Builtin::PaymentCard)]);
    let text = "4111111111111111 5555x";
    assert!(covered(&d, text, 0..16));
    // URL escapes: as a client reading the query string sees them.
    let d = all_detectors();
    for text in [
        "/r?email=ada%40acme.example.com",
        "/r?card=4111+1111+1111+1111",
        "/r?ssn=123%2D45%2D6789&x=1",
    ] {
        let start = text.find('=').unwrap() + 1;
        let end = text.find("&x").unwrap_or(text.len());
        assert!(covered(&d, text, start..end), "{text}");
    }
}
