//! One-pass validation against `jsonschema`: the same verdict on every case.
//!
//! Two sources of cases: the JSON Schema Test Suite (draft 2020-12, plus the optional `format`
//! tests with formats asserted), over every schema the one-pass compiler accepts; and the demo
//! policy's schemas (policies/schema.yaml) over generated and mutated bodies. A body the
//! structural scan refuses never reaches either validator, so such cases are skipped (counted).
//! The suite is also scored for the filter as a whole (one-pass where it applies, `jsonschema`
//! elsewhere): it must keep the conformance test's pass rate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use jsonschema::{Retrieve, Uri};
use portcullis_core::fake::TestRng;
use portcullis_core::json;
use portcullis_schema::config::compile_schema;
use portcullis_schema::onepass;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The filter's checks with room for any suite document.
fn limits() -> json::Limits {
    json::Limits {
        max_depth: 100,
        reject_duplicate_names: true,
        check_number_range: true,
        ..json::Limits::default()
    }
}

fn suite() -> Option<PathBuf> {
    let d = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/json-schema-test-suite"
    ));
    if d.is_dir() {
        return Some(d);
    }
    let msg = format!("JSON Schema Test Suite not found at {}", d.display());
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

struct Remotes(PathBuf);

impl Retrieve for Remotes {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let s = uri.as_str();
        let rel = s
            .strip_prefix("http://localhost:1234/")
            .ok_or_else(|| format!("not a suite remote: {s}"))?;
        Ok(serde_json::from_str(&std::fs::read_to_string(
            self.0.join(rel),
        )?)?)
    }
}

#[derive(Default, Debug)]
struct Tally {
    total: usize,
    /// The filter as a whole (one-pass where compiled, else jsonschema) agrees with the suite.
    passed: usize,
    onepass_groups: usize,
    groups: usize,
    onepass_cases: usize,
    structural_skips: usize,
    mismatches: Vec<String>,
}

fn run_dir(dir: &Path, remotes: &Path, formats: bool, t: &mut Tally) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in &files {
        let file = f.file_name().unwrap().to_string_lossy().to_string();
        let groups: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        for g in &groups {
            t.groups += 1;
            let full = compile_schema(
                &g["schema"],
                &BTreeMap::new(),
                formats,
                Some(Box::new(Remotes(remotes.to_path_buf()))),
            );
            let fast = onepass::compile(&g["schema"], &BTreeMap::new(), formats);
            if fast.is_some() {
                t.onepass_groups += 1;
            }
            for case in g["tests"].as_array().unwrap() {
                t.total += 1;
                let want = case["valid"].as_bool().unwrap();
                let Ok(v) = &full else { continue };
                let slow = v.is_valid(&case["data"]);
                let got = match &fast {
                    Some(p) => {
                        let body = serde_json::to_vec(&case["data"]).unwrap();
                        match p.validate(&body, limits()) {
                            Ok(fast) => {
                                t.onepass_cases += 1;
                                if fast != slow {
                                    t.mismatches.push(format!(
                                        "{file} / {} / {}: one-pass {fast}, jsonschema {slow}",
                                        g["description"], case["description"]
                                    ));
                                }
                                fast
                            }
                            Err(_) => {
                                t.structural_skips += 1;
                                slow
                            }
                        }
                    }
                    None => slow,
                };
                if got == want {
                    t.passed += 1;
                }
            }
        }
    }
}

#[test]
fn one_pass_agrees_with_jsonschema_on_the_test_suite() {
    let Some(root) = suite() else { return };
    let remotes = root.join("remotes");
    let mut t = Tally::default();
    run_dir(&root.join("tests/draft2020-12"), &remotes, false, &mut t);
    println!(
        "suite draft2020-12: filter {}/{} passed; one-pass compiled {}/{} groups, decided {} cases ({} skipped by the scan)",
        t.passed, t.total, t.onepass_groups, t.groups, t.onepass_cases, t.structural_skips
    );
    assert!(
        t.mismatches.is_empty(),
        "{} verdicts differ:\n{}",
        t.mismatches.len(),
        t.mismatches.join("\n")
    );
    // The conformance test's figure (tests/conformance.rs lists the 5 known failures).
    assert!(t.passed >= 1294, "pass rate fell: {}/{}", t.passed, t.total);
    assert!(
        t.onepass_cases > 300,
        "one-pass decided too few cases to mean anything: {}",
        t.onepass_cases
    );

    let mut f = Tally::default();
    run_dir(
        &root.join("tests/draft2020-12/optional/format"),
        &remotes,
        true,
        &mut f,
    );
    println!(
        "suite optional/format (asserted): one-pass compiled {}/{} groups, decided {} cases",
        f.onepass_groups, f.groups, f.onepass_cases
    );
    assert!(
        f.mismatches.is_empty(),
        "{} format verdicts differ:\n{}",
        f.mismatches.len(),
        f.mismatches.join("\n")
    );
}

/// Values the demo schemas treat differently: at and past their bounds, patterns, formats.
fn pool() -> Vec<Value> {
    vec![
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(1),
        json!(12),
        json!(12.0),
        json!(12.5),
        json!(-1),
        json!(10000),
        json!(10001),
        json!(1e3),
        json!(-0.0),
        json!(18446744073709551615u64),
        json!(""),
        json!("x"),
        json!("GB"),
        json!("gb"),
        json!("GBR"),
        json!("+15555550123"),
        json!("+05555550123"),
        json!("+1555"),
        json!("ada@acme.example.com"),
        json!("not-an-email"),
        json!("a@b"),
        json!("2024-02-29"),
        json!("2023-02-29"),
        json!("2024-13-01"),
        json!("csv"),
        json!("json"),
        json!("xml"),
        json!("sandbox"),
        json!("standard"),
        json!("enterprise"),
        json!("Standard"),
        json!("é".repeat(40)),
        json!("é".repeat(41)),
        json!("x".repeat(40)),
        json!("x".repeat(41)),
        json!("😀".repeat(100)),
        json!("😀".repeat(101)),
        json!("y".repeat(200)),
        json!("y".repeat(201)),
        json!("z".repeat(254)),
        json!([]),
        json!(["a"]),
        json!(["a", 1]),
        json!({}),
        json!({"city": "London", "country": "GB"}),
        json!({"city": "", "country": "GB"}),
        json!({"city": "London"}),
        json!({"marketing": true}),
        json!({"marketing": "yes"}),
        json!({"analytics": false, "other": true}),
    ]
}

const NAMES: &[&str] = &[
    "name",
    "email",
    "phone",
    "tier",
    "seats",
    "address",
    "tags",
    "consent",
    "id",
    "tenant",
    "owner",
    "street",
    "city",
    "country",
    "marketing",
    "analytics",
    "format",
    "since",
    "extra",
    "created_at",
];

/// Replaces, removes or adds something at a random place in `v`.
fn mutate(v: &mut Value, rng: &mut TestRng, pool: &[Value]) {
    let depth_stop = rng.below(3) == 0;
    match v {
        Value::Object(m) if !m.is_empty() && !depth_stop => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            match rng.below(4) {
                0 => {
                    m.remove(k);
                }
                1 => {
                    m.insert(
                        NAMES[rng.below(NAMES.len())].to_string(),
                        pool[rng.below(pool.len())].clone(),
                    );
                }
                _ => mutate(m.get_mut(k).unwrap(), rng, pool),
            }
        }
        Value::Array(a) if !a.is_empty() && !depth_stop => match rng.below(4) {
            0 => {
                a.pop();
            }
            1 => a.push(pool[rng.below(pool.len())].clone()),
            _ => {
                let i = rng.below(a.len());
                mutate(&mut a[i], rng, pool);
            }
        },
        _ => *v = pool[rng.below(pool.len())].clone(),
    }
}

fn customer() -> Value {
    let tags: Vec<String> = (0..20)
        .map(|t| format!("t{t:02}-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
        .collect();
    json!({"name": "Ada Lovelace", "email": "ada@acme.example.com", "phone": "+15555550123",
        "tier": "standard", "seats": 12,
        "address": {"street": "12 Analytical Engine Way", "city": "London", "country": "GB"},
        "tags": tags, "consent": {"marketing": true, "analytics": false}})
}

#[test]
fn one_pass_agrees_with_jsonschema_on_mutated_demo_bodies() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/schema.yaml");
    let policy: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let named: BTreeMap<String, Value> = serde_json::from_value(policy["schemas"].clone()).unwrap();
    let mut schemas: Vec<(String, Value)> =
        named.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    schemas.push((
        "bulk".into(),
        json!({"type": "array", "items": {"$ref": "urn:portcullis:schema:customer-create"}}),
    ));
    // A valid body per schema; the mutations keep some valid and break most.
    let seed = |name: &str| match name {
        "address" => json!({"street": "x", "city": "Paris", "country": "FR"}),
        "customer-create" => customer(),
        "export-request" => json!({"format": "csv", "since": "2024-01-31"}),
        "customer-record" => {
            json!({"id": "c1", "tenant": "acme", "name": "Ada", "created_at": 1, "consent": {}})
        }
        _ => json!([customer(), {"name": "A", "email": "a@b.co"}]),
    };
    let seeds = [
        customer(),
        json!({"name": "A", "email": "a@b.co"}),
        json!({"format": "csv", "since": "2024-01-31"}),
        json!({"id": "c1", "tenant": "acme", "name": "Ada", "created_at": 1, "consent": {}}),
        json!({"street": "x", "city": "Paris", "country": "FR"}),
        json!([customer(), customer()]),
    ];
    let pool = pool();
    let mut rng = TestRng::new(0x9E37_79B9_7F4A_7C15);
    let (mut valid, mut invalid) = (0usize, 0usize);
    for (name, schema) in &schemas {
        let slow = compile_schema(schema, &named, true, None).unwrap();
        let fast = onepass::compile(schema, &named, true)
            .unwrap_or_else(|| panic!("demo schema `{name}` has no one-pass program"));
        for i in 0..4000 {
            // One in ten from another schema's seed, the rest from this one's.
            let mut doc = if i % 10 == 0 {
                seeds[rng.below(seeds.len())].clone()
            } else {
                seed(name)
            };
            for _ in 0..rng.below(3) {
                mutate(&mut doc, &mut rng, &pool);
            }
            let body = serde_json::to_vec(&doc).unwrap();
            let Ok(got) = fast.validate(&body, limits()) else {
                continue;
            };
            let want = slow.is_valid(&doc);
            assert_eq!(
                got,
                want,
                "schema `{name}`: {}",
                String::from_utf8_lossy(&body)
            );
            if want {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
    }
    println!("demo schemas: {valid} valid and {invalid} invalid bodies agree");
    assert!(
        valid > 2000 && invalid > 2000,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn escaped_member_names_and_strings_are_compared_unescaped() {
    let named = BTreeMap::new();
    let schema = json!({"type": "object", "additionalProperties": false, "required": ["name"],
        "properties": {"name": {"enum": ["Ada"], "maxLength": 3}}});
    let slow = compile_schema(&schema, &named, true, None).unwrap();
    let fast = onepass::compile(&schema, &named, true).unwrap();
    for body in [
        r#"{"n\u0061me": "Ada"}"#,
        r#"{"name": "\u0041da"}"#,
        r#"{"name": "Ad\u00e9"}"#,
        r#"{"nam\u00e9": "Ada"}"#,
        r#"{"name": "Ada\n"}"#,
    ] {
        let doc: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            fast.validate(body.as_bytes(), limits()).unwrap(),
            slow.is_valid(&doc),
            "{body}"
        );
    }
}
