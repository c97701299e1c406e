//! How a body is read, natively: every `Content-Type` a message carries (lists, repeated
//! headers, odd casing, parameters, quoted commas), charsets and byte-order marks decoded and
//! written back the same way, binary refused unless a route passes it, ambiguity read the
//! most demanding way or refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_core::headers::HeaderMap;
use portcullis_pii::charset::{self, Declared as Cs, Encoding};
use portcullis_pii::config::PiiConfig;
use portcullis_pii::decide::{self, BodyPlan, Cause, Declared, Job, Kind};
use portcullis_pii::mask::Caller;
use serde_json::json;

fn config() -> PiiConfig {
    PiiConfig::from_value(json!({
        "rules": [
            {"name": "ssn", "fields": ["$..ssn"], "action": {"type": "partial", "keep_last": 4}},
            {"name": "mail", "detector": "email", "action": {"type": "partial", "keep_domain": true}},
            {"name": "ssn_text", "detector": "ssn", "action": {"type": "redact", "placeholder": "[SSN]"}}
        ],
        "profiles": {"p": ["ssn", "mail", "ssn_text"]},
        "routes": [
            {"name": "pass", "match": {"prefix": "/bin"}, "profile": "p", "binary": "pass"},
            {"name": "r", "match": {"prefix": "/"}, "profile": "p"}
        ]
    }))
    .unwrap()
}

const NOBODY: Caller<'static> = Caller {
    scopes: &[],
    key: None,
};

fn classify(values: &[&str]) -> Result<Declared, Cause> {
    decide::classify(values)
}

fn kind(values: &[&str]) -> Kind {
    classify(values).unwrap().kind
}

#[test]
fn content_type_lists_and_repeats_are_read_as_every_type_they_name() {
    for json in [
        &["application/json"][..],
        &["Application/JSON"],
        &["application/json;charset=utf-8"],
        &[" application/json ; charset=\"UTF-8\" "],
        &["application/json, application/json"],
        &["application/json", "application/json"],
        &["application/vnd.api+json"],
        &["application/problem+json; charset=utf-8"],
        &["text/json"],
        &["application/x-json"],
    ] {
        assert_eq!(kind(json), Kind::Json, "{json:?}");
    }
    for text in [
        &["text/plain"][..],
        &["TEXT/CSV; header=present"],
        &["application/x-www-form-urlencoded"],
        &["application/xml"],
        &["application/atom+xml"],
        &["application/x-ndjson"],
        &["application/yaml"],
        // JSON and text together: text, read as JSON when it is an object or array.
        &["application/json, text/plain"],
        &["text/plain", "application/json"],
    ] {
        assert_eq!(kind(text), Kind::Text, "{text:?}");
    }
    for binary in [
        &["image/png"][..],
        &["application/octet-stream"],
        &["multipart/form-data; boundary=x"],
        &["application/pdf", "image/png"],
    ] {
        assert_eq!(kind(binary), Kind::Binary, "{binary:?}");
    }
    // Anything mixed with binary, unparseable, or empty is sniffed (read if readable).
    for sniff in [
        &[][..],
        &[""],
        &[" , "],
        &["application/json, image/png"],
        &["image/png", "text/plain"],
        &["json"],
        &["application/"],
        &["application/json/x"],
        &["app lication/json"],
        &["text/plain, nonsense"],
    ] {
        assert_eq!(kind(sniff), Kind::Sniff, "{sniff:?}");
    }
    // A comma inside a quoted parameter is not a list separator.
    assert_eq!(
        kind(&["text/plain; foo=\"a,application/octet-stream\""]),
        Kind::Text
    );
}

#[test]
fn charsets_are_resolved_and_ambiguity_refused() {
    let cs = |v: &[&str]| classify(v).map(|d| d.charset);
    assert_eq!(cs(&["text/plain"]), Ok(None));
    assert_eq!(cs(&["text/plain; charset=UTF-16"]), Ok(Some(Cs::Utf16)));
    assert_eq!(
        cs(&["text/plain;Charset=\"latin1\""]),
        Ok(Some(Cs::Known(Encoding::Windows1252)))
    );
    assert_eq!(
        cs(&["application/json; charset=utf-8", "application/json"]),
        Ok(Some(Cs::Known(Encoding::Utf8)))
    );
    for bad in [
        &["text/plain; charset=shift_jis"][..],
        &["text/plain; charset=x-unknown"],
        &["text/plain; charset="],
        &["text/plain; charset=utf-8", "text/plain; charset=utf-16"],
        &["application/json; charset=utf-8, text/plain; charset=latin1"],
    ] {
        assert_eq!(cs(bad), Err(Cause::UnsupportedCharset), "{bad:?}");
    }
    let cfg = config();
    let r = decide::route_for(&cfg, "GET", "/x").unwrap().1.clone();
    let plan = |ct: &str| {
        decide::plan_response(
            &r,
            "GET",
            200,
            &HeaderMap::from_pairs(&[("content-type", ct)]),
            false,
        )
    };
    assert_eq!(
        plan("text/plain; charset=ebcdic-cp-us"),
        BodyPlan::Refuse(Cause::UnsupportedCharset)
    );
    assert_eq!(plan("image/png"), BodyPlan::Refuse(Cause::Binary));
    let pass = decide::route_for(&cfg, "GET", "/bin/x").unwrap().1.clone();
    assert_eq!(
        decide::plan_response(
            &pass,
            "GET",
            200,
            &HeaderMap::from_pairs(&[("content-type", "image/png")]),
            false
        ),
        BodyPlan::Pass
    );
}

fn utf16(s: &str, le: bool) -> Vec<u8> {
    s.encode_utf16()
        .flat_map(|u| if le { u.to_le_bytes() } else { u.to_be_bytes() })
        .collect()
}

/// Masks `body` read as `ct` on the default route.
fn mask(ct: &str, body: &[u8]) -> Result<Option<Vec<u8>>, Cause> {
    let cfg = config();
    let r = decide::route_for(&cfg, "GET", "/x").unwrap().1.clone();
    let d = decide::classify(&[ct])?;
    let job = Job {
        kind: d.kind,
        charset: d.charset,
        codings: vec![],
    };
    decide::mask_body(&cfg, &r, &job, NOBODY, body, false).map(|m| m.body)
}

#[test]
fn text_in_other_charsets_is_decoded_masked_and_written_back_the_same_way() {
    let plain = "mail ada@acme.example.com, ssn 123-45-6789 — café";
    let masked = "mail ***@acme.example.com, ssn [SSN] — café";
    for (ct, le, bom) in [
        ("text/plain; charset=utf-16", true, true),
        ("text/plain; charset=utf-16", false, true),
        ("text/plain; charset=utf-16", true, false),
        ("text/plain; charset=utf-16", false, false),
        ("text/plain; charset=UTF-16LE", true, false),
        ("text/plain; charset=utf-16be", false, false),
        // The BOM decides, whatever is declared (as in browsers).
        ("text/plain; charset=latin1", true, true),
        ("text/plain", false, true),
    ] {
        let mut body = if bom {
            if le {
                vec![0xFF, 0xFE]
            } else {
                vec![0xFE, 0xFF]
            }
        } else {
            Vec::new()
        };
        body.extend(utf16(plain, le));
        let mut want = if bom {
            if le {
                vec![0xFF, 0xFE]
            } else {
                vec![0xFE, 0xFF]
            }
        } else {
            Vec::new()
        };
        want.extend(utf16(masked, le));
        assert_eq!(
            mask(ct, &body).unwrap().unwrap(),
            want,
            "{ct} le={le} bom={bom}"
        );
    }
    // UTF-32.
    let u32be: Vec<u8> = plain
        .chars()
        .flat_map(|c| (c as u32).to_be_bytes())
        .collect();
    let want: Vec<u8> = masked
        .chars()
        .flat_map(|c| (c as u32).to_be_bytes())
        .collect();
    assert_eq!(
        mask("text/plain; charset=utf-32be", &u32be)
            .unwrap()
            .unwrap(),
        want
    );
    // windows-1252 / latin1: bytes outside the masks kept exactly.
    let latin: Vec<u8> = b"mail ada@acme.example.com caf\xe9 \x80".to_vec();
    assert_eq!(
        mask("text/plain; charset=iso-8859-1", &latin)
            .unwrap()
            .unwrap(),
        b"mail ***@acme.example.com caf\xe9 \x80".to_vec()
    );
    // A charset the filter cannot read is never scanned as bytes and passed.
    assert_eq!(
        mask("text/plain; charset=koi8-r", b"ada@acme.example.com"),
        Err(Cause::UnsupportedCharset)
    );
}

#[test]
fn json_in_other_charsets_and_with_a_bom_is_masked() {
    let doc = r#"{"ssn":"123-45-6789","note":"ada@acme.example.com"}"#;
    let masked = r#"{"ssn":"***-**-6789","note":"***@acme.example.com"}"#;
    for ct in [
        "application/json; charset=utf-16",
        "application/json; charset=utf-16le",
        "application/json",
    ] {
        // Declared or not, UTF-16 JSON is read (RFC 4627 §3: the zero bytes show it).
        let out = mask(ct, &utf16(doc, true)).unwrap().unwrap();
        assert_eq!(out, utf16(masked, true), "{ct}");
    }
    let with_bom = [&b"\xEF\xBB\xBF"[..], doc.as_bytes()].concat();
    assert_eq!(
        mask("application/json", &with_bom).unwrap().unwrap(),
        [&b"\xEF\xBB\xBF"[..], masked.as_bytes()].concat()
    );
    // JSON served as text, or as a list of both, is still read as JSON: escapes cannot hide
    // what a client that parses it will see.
    let escaped = r#"{"note":"ada\u0040acme.example.com","ssn":"123-45-6789"}"#;
    for ct in ["text/plain", "application/json, text/plain"] {
        let out = String::from_utf8(mask(ct, escaped.as_bytes()).unwrap().unwrap()).unwrap();
        assert_eq!(
            out, r#"{"note":"***@acme.example.com","ssn":"***-**-6789"}"#,
            "{ct}"
        );
    }
    // Text that merely looks like a JSON scalar stays text.
    assert_eq!(
        mask("text/plain", b"\"ada@acme.example.com\"")
            .unwrap()
            .unwrap(),
        b"\"***@acme.example.com\"".to_vec()
    );
}

#[test]
fn sniffed_bodies_are_read_when_readable_and_refused_when_not() {
    let cfg = config();
    let r = decide::route_for(&cfg, "GET", "/x").unwrap().1.clone();
    let pass = decide::route_for(&cfg, "GET", "/bin/x").unwrap().1.clone();
    let sniff = Job::plain(Kind::Sniff);
    let run = |route, body: &[u8]| decide::mask_body(&cfg, route, &sniff, NOBODY, body, false);
    assert_eq!(
        run(&r, b"{\"ssn\":\"123-45-6789\"}").unwrap().body.unwrap(),
        b"{\"ssn\":\"***-**-6789\"}".to_vec()
    );
    assert_eq!(
        run(&r, b"mail ada@acme.example.com").unwrap().body.unwrap(),
        b"mail ***@acme.example.com".to_vec()
    );
    let mut wide = vec![0xFF, 0xFE];
    wide.extend(utf16("ada@acme.example.com", true));
    assert!(run(&r, &wide).unwrap().body.is_some());
    assert_eq!(
        run(&r, b"\x89PNG\r\n\x1a\n\xff\x00").unwrap_err(),
        Cause::Binary
    );
    assert!(run(&pass, b"\x89PNG\r\n\x1a\n\xff\x00")
        .unwrap()
        .body
        .is_none());
    assert_eq!(
        charset::decode(b"\x89PNG", None, charset::Guess::Json)
            .form
            .encoding,
        Encoding::Utf8
    );
}
