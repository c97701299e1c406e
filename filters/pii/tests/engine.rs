//! The masking engine and body decisions, natively, through the compiled config the filter
//! uses: rules, precedence, scopes, consent, drop, tokens, text, codings and failure causes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_core::headers::HeaderMap;
use portcullis_pii::codec::Coding;
use portcullis_pii::config::{Locate, PiiConfig};
use portcullis_pii::decide::{self, BodyPlan, Cause, Job, Kind, Unmaskable};
use portcullis_pii::json;
use portcullis_pii::mask::{self, Caller};
use portcullis_pii::stream;
use serde_json::{json, Value};
use std::io::Write;

const KEY_A: &str = "YWNtZS1rZXktMDEyMzQ1Njc4OWFiY2RlZg"; // 25 bytes
const KEY_B: &str = "Z2xvYmV4LWtleS0wMTIzNDU2Nzg5YWJjZGVm";

fn config() -> PiiConfig {
    PiiConfig::from_value(json!({
        "tokenization": {"default_key": KEY_A, "tenant_keys": {"globex": KEY_B}},
        "rules": [
            {"name": "ssn", "fields": ["$..ssn"], "action": {"type": "partial", "keep_last": 4},
             "unmask_scopes": ["pii:ssn:read"]},
            {"name": "email", "fields": ["$.customers[*].email"], "action": {"type": "partial", "keep_domain": true},
             "unmask_scopes": ["pii:email:read"], "consent": "consent.marketing"},
            {"name": "secret", "fields": ["$..internal"], "action": "drop"},
            {"name": "tags", "fields": ["$.tags[1]"], "action": "redact"},
            {"name": "iban", "fields": ["$..iban"], "action": "tokenize"},
            {"name": "card", "detector": "payment_card", "action": {"type": "partial", "keep_last": 4},
             "unmask_scopes": ["pii:card:read"]},
            {"name": "mail", "detector": "email", "action": "redact"},
            {"name": "emp", "detector": {"regex": "EMP-[0-9]{6}"}, "action": {"type": "tokenize", "format": "digits"}}
        ],
        "profiles": {"p": ["ssn", "email", "secret", "tags", "iban", "card", "mail", "emp"]},
        "routes": [
            {"name": "egress", "match": {"prefix": "/out"}, "profile": "p", "direction": "request"},
            {"name": "r", "match": {"prefix": "/"}, "profile": "p"}
        ]
    }))
    .unwrap()
}

/// Response or request headers with these `content-type` and `content-encoding` values.
fn hdrs(content_type: Option<&str>, encoding: Option<&str>) -> HeaderMap {
    let mut h = vec![(":status", "200")];
    if let Some(ct) = content_type {
        h.push(("content-type", ct));
    }
    if let Some(ce) = encoding {
        h.push(("content-encoding", ce));
    }
    HeaderMap::from_pairs(&h)
}

fn job(kind: Kind, codings: &[Coding]) -> Job {
    Job {
        kind,
        charset: None,
        codings: codings.to_vec(),
    }
}

fn run(
    cfg: &PiiConfig,
    body: &str,
    scopes: &[&str],
    tenant: Option<&str>,
) -> (Value, mask::Report) {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let caller = Caller {
        scopes: &scopes,
        key: cfg.keys.for_tenant(tenant),
    };
    let mut doc = json::parse(body.as_bytes()).unwrap();
    let report = mask::mask_json(cfg, &cfg.profiles[0], caller, &mut doc).unwrap();
    // The streaming masker the filter runs decides the same, value for value.
    let streamed = stream::mask_document(cfg, &cfg.profiles[0], caller, body).unwrap();
    let out = streamed.body.as_deref().unwrap_or(body);
    assert_eq!(json::parse(out.as_bytes()).unwrap(), doc, "{out}");
    assert_eq!(streamed.report, report);
    (serde_json::from_slice(&doc.to_bytes()).unwrap(), report)
}

#[test]
fn field_rules_scopes_and_consent() {
    let cfg = config();
    let body = r#"{"customers":[
        {"email":"a@x.com","ssn":"123-45-6789","consent":{"marketing":true}},
        {"email":"b@x.com","ssn":"223-45-6789","consent":{"marketing":false}},
        {"email":"c@x.com"}
    ]}"#;
    let (v, r) = run(&cfg, body, &[], None);
    assert_eq!(v["customers"][0]["ssn"], "***-**-6789");
    assert_eq!(v["customers"][0]["email"], "***@x.com");
    assert_eq!(r.masked[0], 2);
    assert_eq!(r.masked[1], 3);
    assert_eq!(r.pointers[0], "/customers/0/email");

    let (v, r) = run(&cfg, body, &["pii:ssn:read", "pii:email:read"], None);
    assert_eq!(v["customers"][0]["ssn"], "123-45-6789");
    // Scope and consent together reveal; a false or missing flag keeps it masked.
    assert_eq!(v["customers"][0]["email"], "a@x.com");
    assert_eq!(v["customers"][1]["email"], "***@x.com");
    assert_eq!(v["customers"][2]["email"], "***@x.com");
    assert_eq!(r.revealed[1], 1);
    // A scope that merely starts like the right one reveals nothing.
    let (v, _) = run(&cfg, body, &["pii:ssn", "pii:ssn:read:x"], None);
    assert_eq!(v["customers"][0]["ssn"], "***-**-6789");
}

/// Locations are worked out only when the configuration asks for them (the filter asks only
/// while its debug log is on); the counts and the masked body do not depend on it.
#[test]
fn masked_locations_only_when_asked() {
    let mut cfg = config();
    let body =
        r#"{"customers":[{"email":"a@x.com","ssn":"123-45-6789"}],"note":"write to b@y.org"}"#;
    let (on_body, on) = run(&cfg, body, &[], None);
    assert_eq!(
        on.pointers,
        ["/customers/0/email", "/customers/0/ssn", "/note"]
    );
    cfg.locate = Locate::Never;
    let (off_body, off) = run(&cfg, body, &[], None);
    assert!(off.pointers.is_empty(), "{:?}", off.pointers);
    assert_eq!(
        (off_body, &off.masked, &off.revealed),
        (on_body, &on.masked, &on.revealed)
    );
    assert_eq!(off.total(), 3);
    // As the filter runs it: asked per report, and this test process writes no debug lines.
    cfg.locate = Locate::WhileDebugLogged;
    let (_, quiet) = run(&cfg, body, &[], None);
    assert!(quiet.pointers.is_empty(), "{:?}", quiet.pointers);
    assert_eq!(quiet.total(), 3);
    let text = mask::mask_text(
        &cfg,
        &cfg.profiles[0],
        Caller {
            scopes: &[],
            key: None,
        },
        "mail a@x.com",
    )
    .unwrap()
    .1;
    assert!(text.total() == 1 && text.pointers.is_empty(), "{text:?}");
}

#[test]
fn a_field_rule_decides_alone_and_detectors_cover_the_rest() {
    let cfg = config();
    let (v, _) = run(
        &cfg,
        r#"{"ssn":"x@y.com","note":"mail x@y.com, card 4111-1111-1111-1111"}"#,
        &[],
        None,
    );
    // `ssn` is decided by its field rule (partial), not by the e-mail detector.
    assert_eq!(v["ssn"], "*@y.com");
    assert_eq!(v["note"], "mail [REDACTED], card ****-****-****-1111");
    let (v, _) = run(
        &cfg,
        r#"{"note":"card 4111-1111-1111-1111"}"#,
        &["pii:card:read"],
        None,
    );
    assert_eq!(v["note"], "card 4111-1111-1111-1111");
}

#[test]
fn drop_index_paths_escaped_keys_and_duplicates() {
    let cfg = config();
    let (v, r) = run(
        &cfg,
        r#"{"a":{"internal":{"x":1},"keep":1},"tags":["t0","t1","t2"],"s\u0073n":"1","ssn":"123-45-6789","ssn":"223-45-6789"}"#,
        &[],
        None,
    );
    assert_eq!(v["a"], json!({"keep": 1}));
    assert_eq!(v["tags"], json!(["t0", "[REDACTED]", "t2"]));
    // Every duplicate is masked (a reader taking the last one sees a masked value too).
    assert_eq!(r.masked[0], 3);
    assert_eq!(v["ssn"], "***-**-6789");
}

#[test]
fn tokens_depend_on_the_tenant_key_and_digits_keep_the_format() {
    let cfg = config();
    let body = r#"{"iban":"GB82WEST12345698765432","note":"EMP-123456"}"#;
    let (a, _) = run(&cfg, body, &[], Some("acme"));
    let (a2, _) = run(&cfg, body, &[], None);
    let (b, _) = run(&cfg, body, &[], Some("globex"));
    assert_eq!(a, a2, "acme has no key of its own: the default key");
    assert_ne!(a["iban"], b["iban"]);
    assert!(a["iban"].as_str().unwrap().starts_with("tok_"));
    let emp = a["note"].as_str().unwrap();
    assert!(
        emp.starts_with("EMP-") && emp.len() == 10 && emp != "EMP-123456",
        "{emp}"
    );
}

#[test]
fn numbers_meet_the_card_detector_by_the_value_they_denote() {
    let cfg = config();
    let (v, _) = run(
        &cfg,
        r#"{"n":5555555555554444,"t":1700000000000,"amount":12.50,"big":12345678901234567890123}"#,
        &[],
        None,
    );
    assert_eq!(v["n"], "************4444");
    assert_eq!(v["t"], 1_700_000_000_000u64);
    // However a card is spelled as a number, a client parsing it gets the card.
    for spelling in [
        "4111111111111111.0",
        "4.111111111111111e15",
        "4111111111111111E0",
        "41111111111111110e-1",
        "-4111111111111111",
        "-4111111111111111.0",
        "4.111111111111111E+15",
        "0.4111111111111111e16",
        "4111111111111110.9999999",
    ] {
        let (v, r) = run(&cfg, &format!(r#"{{"f":{spelling}}}"#), &[], None);
        assert_eq!(v["f"], "************1111", "{spelling}");
        assert_eq!(r.total(), 1, "{spelling}");
        // The caller allowed to see cards gets the number exactly as written.
        let body = format!(r#"{{"f":{spelling}}}"#);
        let scopes = vec!["pii:card:read".to_string()];
        let caller = Caller {
            scopes: &scopes,
            key: None,
        };
        let mut doc = json::parse(body.as_bytes()).unwrap();
        mask::mask_json(&cfg, &cfg.profiles[0], caller, &mut doc).unwrap();
        assert_eq!(doc.to_bytes(), body.into_bytes());
    }
    // Numbers that are not cards keep their exact text.
    let src =
        r#"{"a":4111111111111112.0,"b":1.7e12,"c":1e400,"d":-0.0,"e":123456789012345678901234e-5}"#;
    let mut doc = json::parse(src.as_bytes()).unwrap();
    let r = mask::mask_json(&cfg, &cfg.profiles[0], NOBODY, &mut doc).unwrap();
    assert_eq!((doc.to_bytes(), r.total()), (src.as_bytes().to_vec(), 0));
}

const NOBODY: Caller<'static> = Caller {
    scopes: &[],
    key: None,
};

#[test]
fn member_names_are_masked_and_field_rules_still_match_the_name_as_written() {
    let cfg = config();
    let src = r#"{"by_email":{"ada@acme.example.com":{"ssn":"123-45-6789"},"x":1},
                  "by_card":{"4111111111111111":"visa","4111 1111 1111 1111":"grouped"},
                  "ssn":"123-45-6789"}"#;
    let (v, r) = run(&cfg, src, &[], None);
    let text = v.to_string();
    for raw in ["ada@", "4111111111111111", "4111 1111 1111 1111", "123-45"] {
        assert!(!text.contains(raw), "{raw} in {text}");
    }
    // The value under a masked name is still decided by the rules that match it.
    assert_eq!(v["by_email"]["[REDACTED]"]["ssn"], "***-**-6789");
    assert_eq!(v["by_email"]["x"], 1);
    assert_eq!(v["by_card"]["************1111"], "visa");
    assert_eq!(v["by_card"]["**** **** **** 1111"], "grouped");
    assert!(r.total() >= 4);
    // Pointers name the masked member, never the raw one.
    assert!(
        r.pointers.iter().all(|p| !p.contains("ada@")),
        "{:?}",
        r.pointers
    );
    // Field rules match a name as written, even when the name itself is personal data: a rule
    // on `$..['ada@acme.example.com']` still finds that member.
    let cfg2 = PiiConfig::from_value(json!({
        "rules": [
            {"name": "m", "fields": ["$.m['ada@acme.example.com']"], "action": "redact"},
            {"name": "mail", "detector": "email", "action": {"type": "partial", "keep_domain": true}}
        ],
        "profiles": {"p": ["m", "mail"]},
        "routes": [{"name": "r", "match": {"prefix": "/"}, "profile": "p"}]
    }))
    .unwrap();
    let mut doc = json::parse(
        br#"{"m":{"ada@acme.example.com":"secret","bob@acme.example.com":"x","***@acme.example.com":1}}"#,
    )
    .unwrap();
    mask::mask_json(&cfg2, &cfg2.profiles[0], NOBODY, &mut doc).unwrap();
    assert_eq!(
        String::from_utf8(doc.to_bytes()).unwrap(),
        r#"{"m":{"***@acme.example.com#2":"[REDACTED]","***@acme.example.com#3":"x","***@acme.example.com":1}}"#
    );
}

#[test]
fn text_bodies_and_non_utf8_bytes() {
    let cfg = config();
    let (out, r) = mask::mask_text(&cfg, &cfg.profiles[0], NOBODY, "to a@b.io\n").unwrap();
    assert_eq!(out.unwrap(), "to [REDACTED]\n");
    assert_eq!(r.pointers, ["#3"]);
    let (out, _) = mask::mask_text(&cfg, &cfg.profiles[0], NOBODY, "nothing here").unwrap();
    assert_eq!(out, None);
    // Undeclared text that is not UTF-8 is read as windows-1252 (as browsers do) and written
    // back byte for byte around the mask.
    let r = route(&cfg, "/x");
    let m = decide::mask_body(
        &cfg,
        &r,
        &job(Kind::Text, &[]),
        NOBODY,
        b"caf\xe9 a@b.io \xff",
        false,
    )
    .unwrap();
    assert_eq!(m.body.unwrap(), b"caf\xe9 [REDACTED] \xff".to_vec());
}

fn route(cfg: &PiiConfig, path: &str) -> portcullis_pii::config::Route {
    decide::route_for(cfg, "GET", path).unwrap().1.clone()
}

#[test]
fn plans_follow_method_status_type_and_coding() {
    let cfg = config();
    let r = route(&cfg, "/x");
    let json_plan = BodyPlan::Mask(Job::plain(Kind::Json));
    assert_eq!(
        decide::plan_response(&r, "GET", 200, &hdrs(Some("application/json"), None), false),
        json_plan
    );
    assert_eq!(
        decide::plan_response(
            &r,
            "HEAD",
            200,
            &hdrs(Some("application/json"), None),
            false
        ),
        BodyPlan::Pass
    );
    assert_eq!(
        decide::plan_response(&r, "GET", 204, &hdrs(None, None), false),
        BodyPlan::Pass
    );
    assert_eq!(
        decide::plan_response(&r, "GET", 304, &hdrs(None, None), false),
        BodyPlan::Pass
    );
    assert_eq!(
        decide::plan_response(&r, "GET", 200, &hdrs(Some("application/json"), None), true),
        BodyPlan::Pass
    );
    assert_eq!(
        decide::plan_response(
            &r,
            "GET",
            404,
            &hdrs(Some("application/problem+json"), None),
            false
        ),
        json_plan
    );
    assert_eq!(
        decide::plan_response(&r, "GET", 200, &hdrs(Some("text/csv"), Some("gzip")), false),
        BodyPlan::Mask(Job {
            kind: Kind::Text,
            charset: None,
            codings: vec![Coding::Gzip]
        })
    );
    assert_eq!(
        decide::plan_response(&r, "GET", 200, &hdrs(Some("image/png"), None), false),
        BodyPlan::Refuse(Cause::Binary),
        "binary bodies are refused unless a route says `binary: pass`"
    );
    assert_eq!(
        decide::plan_response(
            &r,
            "GET",
            200,
            &hdrs(Some("application/json"), Some("zstd")),
            false
        ),
        BodyPlan::Refuse(Cause::UnsupportedEncoding)
    );
    // Egress routes mask requests, not responses.
    let egress = decide::route_for(&cfg, "POST", "/out/sync")
        .unwrap()
        .1
        .clone();
    assert_eq!(
        decide::plan_response(
            &egress,
            "POST",
            200,
            &hdrs(Some("application/json"), None),
            false
        ),
        BodyPlan::Pass
    );
    assert_eq!(
        decide::plan_request(&egress, &hdrs(Some("application/json"), None), false),
        json_plan
    );
    // Encoded path tricks reach the same route (paths are normalised first).
    assert_eq!(
        decide::route_for(&cfg, "POST", "/%6Fut/sync")
            .unwrap()
            .1
            .name,
        "egress"
    );
}

#[test]
fn bodies_decode_mask_and_fail_with_a_cause() {
    let cfg = config();
    let r = route(&cfg, "/x");
    let caller = Caller {
        scopes: &[],
        key: None,
    };
    let body = br#"{"ssn":"123-45-6789"}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body).unwrap();
    let gz = gz.finish().unwrap();
    let m = decide::mask_body(
        &cfg,
        &r,
        &job(Kind::Json, &[Coding::Gzip]),
        caller,
        &gz,
        false,
    )
    .unwrap();
    assert_eq!(m.body.unwrap(), br#"{"ssn":"***-**-6789"}"#.to_vec());
    // Shadow: counted, body untouched.
    let m = decide::mask_body(&cfg, &r, &job(Kind::Json, &[]), caller, body, true).unwrap();
    assert_eq!((m.body, m.report.masked[0]), (None, 1));
    let err = |kind, codings: &[Coding], raw: &[u8]| {
        decide::mask_body(&cfg, &r, &job(kind, codings), caller, raw, false).unwrap_err()
    };
    assert_eq!(err(Kind::Json, &[], b"{\"a\":"), Cause::InvalidJson);
    assert_eq!(
        err(Kind::Json, &[Coding::Br], b"junk"),
        Cause::CorruptEncoding
    );
    let deep = "[".repeat(300) + &"]".repeat(300);
    assert_eq!(err(Kind::Json, &[], deep.as_bytes()), Cause::InvalidJson);
    // No content type: JSON when it parses, else text.
    let m = decide::mask_body(
        &cfg,
        &r,
        &job(Kind::Sniff, &[]),
        caller,
        b"mail a@b.io",
        false,
    )
    .unwrap();
    assert_eq!(m.body.unwrap(), b"mail [REDACTED]".to_vec());
    // Pass only where configured, and never for a missing tokenization key.
    assert!(
        matches!(decide::unmaskable(&r, Cause::TooLarge, true), Unmaskable::Block(d) if d.status == 502)
    );
    assert!(
        matches!(decide::unmaskable(&r, Cause::TooLarge, false), Unmaskable::Block(d) if d.status == 413)
    );
}

#[test]
fn bad_configs_name_the_field() {
    let base = || {
        json!({"rules": [{"name": "a", "fields": ["$.a"], "action": "redact"}],
               "profiles": {"p": ["a"]}, "routes": [{"name": "r", "match": {"prefix": "/"}, "profile": "p"}]})
    };
    let err = |f: &dyn Fn(&mut Value)| {
        let mut v = base();
        f(&mut v);
        PiiConfig::from_value(v).unwrap_err().to_string()
    };
    assert!(PiiConfig::from_value(base()).is_ok());
    assert!(err(&|v| v["rules"][0]["fields"] = json!(["a"])).contains("rules[0].fields[0]"));
    assert!(err(&|v| v["rules"][0]["action"] = json!("tokenize")).contains("tokenize needs keys"));
    assert!(err(&|v| v["rules"][0]["detector"] = json!("email")).contains("not both"));
    assert!(err(&|v| v["profiles"]["p"] = json!(["zz"])).contains("unknown rule `zz`"));
    assert!(err(&|v| v["routes"][0]["profile"] = json!("q")).contains("unknown profile"));
    assert!(err(&|v| v["tokenization"] = json!({"default_key": "c2hvcnQ"})).contains("16 bytes"));
    assert!(err(
        &|v| v["rules"][0] = json!({"name": "d", "detector": {"regex": "a*"}, "action": "redact"})
    )
    .contains("empty string"));
    assert!(
        err(&|v| v["rules"][0] = json!({"name": "d", "detector": "email", "action": "drop"}))
            .contains("not detectors")
    );
    assert!(err(&|v| v["rules"][0]["unknown"] = json!(1)).contains("unknown"));
}
