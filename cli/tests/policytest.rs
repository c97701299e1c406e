//! `portcullis test` itself: the demo suite passes with full coverage, and a wrong expectation,
//! an untested rule and a malformed case are reported as such.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::{policy, policytest};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(suite_text: &str) -> (policytest::Report, String) {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-pt-{}-{}",
        std::process::id(),
        suite_text.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.yaml");
    let key = root().join("policies/demo-keys/demo-rs256.key.pem");
    std::fs::write(&file, suite_text.replace("KEY", &key.display().to_string())).unwrap();
    let policies = policy::load(&root().join("policies")).unwrap();
    let suites = policytest::load(&file).unwrap();
    let mut out = Vec::new();
    let report = policytest::run(&policies, &suites, &mut out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (report, String::from_utf8(out).unwrap())
}

#[test]
fn the_demo_suite_passes_with_full_coverage() {
    let policies = policy::load(&root().join("policies")).unwrap();
    let suites = policytest::load(&root().join("policies/tests")).unwrap();
    let mut out = Vec::new();
    let report = policytest::run(&policies, &suites, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(report.failed, 0, "{text}");
    assert!(
        report.passed >= 60,
        "the scenario table keeps at least 60 rows"
    );
    assert!((report.percent() - 100.0).abs() < 1e-9, "{text}");
}

const HEAD: &str = "signing:
  key: KEY
  alg: RS256
  kid: demo-rs256
  claims: { iss: https://idp.demo.portcullis.local, aud: portcullis-demo-api, sub: u }
cases:
";

#[test]
fn failures_show_a_diff_and_coverage_lists_what_is_untested() {
    let (report, text) = run(&format!(
        "{HEAD}  - name: wrong on purpose
    request: {{ path: /api/v1/tenants/acme/customers, token: {{ tenant: acme, scope: customers:read }} }}
    upstream: {{ body: {{ ssn: 123-45-6789 }} }}
    expect: {{ status: 201, body: {{ ssn: 123-45-6789 }}, headers: {{ etag: abc }} }}
"
    ));
    assert_eq!((report.passed, report.failed), (0, 1), "{text}");
    assert!(text.contains("FAIL  wrong on purpose"), "{text}");
    assert!(text.contains("status: expected 201, got 200"), "{text}");
    assert!(text.contains(r#"got      {"ssn":"***-**-6789"}"#), "{text}");
    assert!(
        text.contains("header etag: expected Some(\"abc\"), got None"),
        "{text}"
    );
    assert!(report.percent() < 50.0);
    assert!(
        text.contains("untested: authn.route:export-report"),
        "{text}"
    );
    assert!(text.contains("untested: pii.rule:employee_id"), "{text}");
}

#[test]
fn the_fake_clock_expires_tokens() {
    // A token valid for 60 s of the fake clock: accepted at 0 and 30, expired at 200.
    let (report, text) = run(&format!(
        "{HEAD}  - name: clock
    sequence:
      - {{ at: 0, request: &r {{ path: /api/v1/tenants/acme/customers, token: {{ tenant: acme, scope: customers:read, exp: 1900000060 }} }}, expect: {{ status: 200 }} }}
      - {{ at: 30, request: *r, expect: {{ status: 200 }} }}
      - {{ at: 200, request: *r, expect: {{ status: 401, reason: token_expired }} }}
"
    ));
    assert_eq!(report.failed, 0, "{text}");
}

#[test]
fn malformed_suites_are_refused_with_the_file_name() {
    let dir = std::env::temp_dir().join(format!("portcullis-pt-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.yaml"),
        "cases: [ { name: x, request: { path: /, typo: 1 } } ]",
    )
    .unwrap();
    let err = policytest::load(&dir).err().unwrap().to_string();
    assert!(err.contains("bad.yaml") && err.contains("typo"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
