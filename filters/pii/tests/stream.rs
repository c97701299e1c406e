//! The streaming masker against the tree walk, on generated documents: the same masked value
//! (member order and duplicates included), the same report, untouched text kept byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_core::fake::TestRng;
use portcullis_pii::config::PiiConfig;
use portcullis_pii::json;
use portcullis_pii::mask::{self, Caller};
use portcullis_pii::stream::{self, StreamError};
use serde_json::json;

fn config() -> PiiConfig {
    PiiConfig::from_value(json!({
        "tokenization": {"default_key": "YWNtZS1rZXktMDEyMzQ1Njc4OWFiY2RlZg"},
        "rules": [
            {"name": "ssn", "fields": ["$..ssn"], "action": {"type": "partial", "keep_last": 4},
             "unmask_scopes": ["all"]},
            {"name": "email", "fields": ["$..email", "$..emails[*]"], "action": {"type": "partial", "keep_domain": true},
             "unmask_scopes": ["all"], "consent": "consent.marketing"},
            {"name": "phone", "fields": ["$..phone"], "action": "redact", "consent": "ok"},
            {"name": "secret", "fields": ["$..internal", "$.list[1]"], "action": "drop"},
            {"name": "iban", "fields": ["$..iban"], "action": "tokenize", "unmask_scopes": ["all"]},
            {"name": "blob", "fields": ["$..blob"], "action": {"type": "partial", "keep_last": 2}},
            {"name": "card", "detector": "payment_card", "action": {"type": "partial", "keep_last": 4},
             "unmask_scopes": ["all"]},
            {"name": "mail", "detector": "email", "action": {"type": "partial", "keep_domain": true}},
            {"name": "emp", "detector": {"regex": "EMP-[0-9]{6}"}, "action": {"type": "tokenize", "format": "digits"}}
        ],
        // `q`: no custom pattern, so escaped text meets only the built-in detectors' checks.
        "profiles": {"p": ["ssn", "email", "phone", "secret", "iban", "blob", "card", "mail", "emp"],
                     "q": ["ssn", "email", "phone", "secret", "iban", "card", "mail"]},
        "routes": [{"name": "r", "match": {"prefix": "/"}, "profile": "p"}]
    }))
    .unwrap()
}

/// A small deterministic generator of hostile-enough documents.
struct Gen(TestRng);

impl Gen {
    fn next(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    fn ws(&mut self, out: &mut String) {
        out.push_str([" ", "", "", "\n  ", "\t"][self.next(5)]);
    }

    fn key(&mut self) -> &'static str {
        const KEYS: &[&str] = &[
            "ssn",
            "email",
            "emails",
            "phone",
            "consent",
            "marketing",
            "ok",
            "internal",
            "iban",
            "blob",
            "list",
            "note",
            "a",
            "s\\u0073n",
            "ada@x.io",
            "bob@x.io",
            "***@x.io",
            "***@x.io#2",
            "k~/\\\"",
        ];
        KEYS[self.next(KEYS.len())]
    }

    fn value(&mut self, out: &mut String, depth: usize) {
        const SCALARS: &[&str] = &[
            "\"123-45-6789\"",
            "\"ada@acme.example.com\"",
            "\"a\\u0040b.io\"",
            "\"4111111111111111\"",
            "\"plain text\"",
            "\"EMP-123456 and ada@x.io\"",
            "\"GB82WEST12345698765432\"",
            "\"\\/esc\\n\\u00e9\"",
            "4111111111111111",
            "4.111111111111111e15",
            "12",
            "-0.5",
            "true",
            "false",
            "null",
        ];
        let k = self.next(if depth > 3 { 10 } else { 14 });
        match k {
            0..=9 => out.push_str(SCALARS[self.next(SCALARS.len())]),
            10 | 11 => {
                out.push('{');
                let n = self.next(5);
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    out.push('"');
                    out.push_str(self.key());
                    out.push('"');
                    self.ws(out);
                    out.push(':');
                    self.ws(out);
                    self.value(out, depth + 1);
                    self.ws(out);
                }
                out.push('}');
            }
            _ => {
                out.push('[');
                let n = self.next(4);
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    self.value(out, depth + 1);
                    self.ws(out);
                }
                out.push(']');
            }
        }
    }
}

/// Masks `doc` by the stream and by the tree walk for one caller and profile; the reports
/// must agree. Returns the stream's result and the walked tree, for the body to be compared.
fn both_ways(
    cfg: &PiiConfig,
    scopes: &[String],
    profile: usize,
    doc: &str,
) -> (stream::Streamed, json::Json) {
    let caller = Caller {
        scopes,
        key: cfg.keys.for_tenant(None),
    };
    let profile = &cfg.profiles[profile];
    let mut tree = json::parse(doc.as_bytes()).unwrap();
    let report = mask::mask_json(cfg, profile, caller, &mut tree).unwrap();
    let s = stream::mask_document(cfg, profile, caller, doc).unwrap();
    assert_eq!(s.report, report, "{doc}");
    (s, tree)
}

#[test]
fn streaming_masks_as_the_tree_walk_does() {
    let cfg = config();
    let all = ["all".to_string()];
    let mut g = Gen(TestRng::new(0x9e37_79b9_7f4a_7c15));
    let mut masked_docs = 0;
    for i in 0..4000 {
        let mut doc = String::new();
        // Objects at the top mostly: that is where records, consent flags and drops are.
        if i % 4 == 0 {
            g.value(&mut doc, 0);
        } else {
            doc.push('{');
            let n = 1 + g.next(6);
            for j in 0..n {
                if j > 0 {
                    doc.push(',');
                }
                doc.push('"');
                doc.push_str(g.key());
                doc.push_str("\":");
                g.value(&mut doc, 1);
            }
            doc.push('}');
        }
        for (scopes, profile) in [(&[][..], 0), (&all[..], 0), (&[][..], 1)] {
            let (s, tree) = both_ways(&cfg, scopes, profile, &doc);
            let report = &s.report;
            match &s.body {
                Some(out) => {
                    masked_docs += 1;
                    assert_eq!(json::parse(out.as_bytes()).unwrap(), tree, "{doc}\n{out}");
                    assert!(
                        serde_json::from_str::<serde_json::Value>(out).is_ok(),
                        "{out}"
                    );
                }
                None => {
                    assert_eq!(report.total(), 0, "{doc}");
                    assert_eq!(tree, json::parse(doc.as_bytes()).unwrap(), "{doc}");
                }
            }
        }
    }
    assert!(
        masked_docs > 1000,
        "the generator masks too little: {masked_docs}"
    );
}

#[test]
fn repeated_records_mask_as_the_tree_walk_does() {
    // Lists of records repeat their member names: whatever the masker works out once per name
    // must hold wherever the name comes again (other depths, paths live or not).
    let cfg = config();
    let mut g = Gen(TestRng::new(0x2545_f491_4f6c_dd1d));
    for _ in 0..600 {
        let mut rec = String::new();
        g.value(&mut rec, 1);
        let doc = format!(
            r#"{{"list": [{rec}, {rec}, {rec}], "x": [{rec}, {{"a": {rec}, "note": [{rec}]}}], "y": {rec}}}"#
        );
        for profile in [0, 1] {
            let (s, tree) = both_ways(&cfg, &[], profile, &doc);
            let out = s.body.as_deref().unwrap_or(&doc);
            assert_eq!(json::parse(out.as_bytes()).unwrap(), tree, "{doc}\n{out}");
        }
    }
}

#[test]
fn untouched_text_is_kept_byte_for_byte() {
    let cfg = config();
    let caller = Caller {
        scopes: &[],
        key: cfg.keys.for_tenant(None),
    };
    let doc = "{ \"id\" : \"c\\u002d1\",\n  \"ssn\": \"123-45-6789\" ,\"n\":1.50e1 }";
    let s = stream::mask_document(&cfg, &cfg.profiles[0], caller, doc).unwrap();
    assert_eq!(
        s.body.as_deref(),
        Some("{ \"id\" : \"c\\u002d1\",\n  \"ssn\": \"***-**-6789\" ,\"n\":1.50e1 }")
    );
    let clean = "{\"id\": \"c-1\", \"n\": [1, 2.5, true, null]}";
    let s = stream::mask_document(&cfg, &cfg.profiles[0], caller, clean).unwrap();
    assert_eq!((s.body, s.report.total()), (None, 0), "nothing is copied");
}

#[test]
fn removed_members_take_one_comma_with_them() {
    let cfg = config();
    let caller = Caller {
        scopes: &[],
        key: cfg.keys.for_tenant(None),
    };
    for (doc, want) in [
        (r#"{"internal":1,"a":2}"#, r#"{"a":2}"#),
        (r#"{"a":1,"internal":2}"#, r#"{"a":1}"#),
        (r#"{"internal":1}"#, r#"{}"#),
        (
            r#"{ "internal" : 1 , "internal":[2], "a" : 3 , "internal" :{} }"#,
            r#"{"a" : 3 }"#,
        ),
        (r#"{"list":[0,1,2]}"#, r#"{"list":[0,2]}"#),
        (r#"{"list":[0, {"x":1}]}"#, r#"{"list":[0]}"#),
    ] {
        let s = stream::mask_document(&cfg, &cfg.profiles[0], caller, doc).unwrap();
        assert_eq!(s.body.as_deref(), Some(want), "{doc}");
    }
}

#[test]
fn what_is_not_json_is_refused_and_a_key_error_needs_json() {
    let cfg = config();
    let keyless = Caller {
        scopes: &[],
        key: None,
    };
    let bad = [
        r#"{"ssn":"123-45-6789""#,
        r#"{"iban":"x"} trailing"#,
        r#"[1,]"#,
        "\"\\ud800\"",
    ];
    for doc in bad {
        assert!(
            matches!(
                stream::mask_document(&cfg, &cfg.profiles[0], keyless, doc),
                Err(StreamError::Json(_))
            ),
            "{doc}"
        );
    }
    let deep = "[".repeat(json::MAX_DEPTH + 1) + &"]".repeat(json::MAX_DEPTH + 1);
    assert_eq!(
        stream::mask_document(&cfg, &cfg.profiles[0], keyless, &deep),
        Err(StreamError::Json(json::JsonError::TooDeep))
    );
    assert_eq!(
        stream::mask_document(&cfg, &cfg.profiles[0], keyless, r#"{"iban":"x"}"#),
        Err(StreamError::NoKey)
    );
}

#[test]
fn many_member_names_mask_as_the_tree_walk_does() {
    // More distinct names than the masker's name memo holds (slots shared, names evicted and
    // worked out again), among them names a path names, names the detectors mask and names
    // of up to 40 bytes that share their first and last eight: every record must come out
    // as the tree walk masks it.
    let cfg = config();
    let mut names: Vec<String> = (0..90).map(|i| format!("n{i}")).collect();
    names.extend((0..12).map(|i| format!("shared-prefix-{}-shared-suffix", "x".repeat(i))));
    names.extend(["ssn", "email", "ada@x.io", "iban", "note", "a"].map(String::from));
    // Names of 9 to 16 bytes alike in their first eight bytes and length, the last of each
    // group an address.
    for head in ["abcdefgh", "abcdefgi", "ABCDEFGH"] {
        for c in ('a'..='z').chain('0'..='9') {
            names.push(format!("{head}{c}x.io"));
        }
        names.push(format!("{head}@x.io"));
    }
    let mut g = Gen(TestRng::new(0x51_7cc1_b727_220a));
    for round in 0..12 {
        let mut rec = String::from("{");
        for (i, n) in names.iter().enumerate() {
            if (i + round) % 3 == 0 {
                continue;
            }
            if rec.len() > 1 {
                rec.push(',');
            }
            rec.push_str(&format!("\"{n}\":"));
            g.value(&mut rec, 2);
        }
        rec.push('}');
        let doc = format!(r#"{{"list": [{rec}, {rec}, {rec}], "y": {rec}}}"#);
        for profile in [0, 1] {
            let (s, tree) = both_ways(&cfg, &[], profile, &doc);
            let out = s.body.as_deref().unwrap_or(&doc);
            assert_eq!(json::parse(out.as_bytes()).unwrap(), tree, "{doc}\n{out}");
        }
    }
}
