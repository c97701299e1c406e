//! Reason codes are types: each filter's enum is the list its metrics are declared from, and
//! the README's reason tables must say exactly the same (code, status and, for authn, the
//! `WWW-Authenticate` error). A code added to one and not the other fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_authn::decide::{AuthnReason, Challenge};
use portcullis_core::deny::Reason;
use portcullis_pii::decide::PiiReason;
use portcullis_ratelimit::decide::RateLimitReason;
use portcullis_schema::validate::SchemaReason;
use std::collections::BTreeSet;
use std::path::Path;

/// `(status, code, challenge column)` rows of the first `| status | reason |` table after the
/// README heading `section`.
fn table(readme: &str, section: &str) -> Vec<(u16, String, String)> {
    let start = readme
        .find(section)
        .unwrap_or_else(|| panic!("README has no section {section:?}"));
    let rest = &readme[start..];
    let table_at = rest
        .find("| status | reason |")
        .unwrap_or_else(|| panic!("no reason table under {section:?}"));
    let mut rows = Vec::new();
    for line in rest[table_at..].lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cols: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let status: u16 = cols[0]
            .parse()
            .unwrap_or_else(|_| panic!("status in {line:?}"));
        for code in cols[1].split('`').skip(1).step_by(2) {
            rows.push((
                status,
                code.to_string(),
                cols.get(3).copied().unwrap_or("").to_string(),
            ));
        }
    }
    rows
}

fn codes<R: Reason>() -> BTreeSet<(u16, String)> {
    R::ALL
        .iter()
        .map(|r| (r.status(), r.code().to_string()))
        .collect()
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .unwrap_or_default()
}

fn same(section: &str, want: BTreeSet<(u16, String)>) {
    let got: BTreeSet<(u16, String)> = table(&readme(), section)
        .into_iter()
        .map(|(s, c, _)| (s, c))
        .collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{section}: README table and reason enum differ; not in the README: {missing:?}; not in the enum: {extra:?}"
    );
}

#[test]
fn the_readme_lists_exactly_each_filters_reasons() {
    same("## authn configuration", codes::<AuthnReason>());
    same("## ratelimit configuration", codes::<RateLimitReason>());
    same("## schema configuration", codes::<SchemaReason>());
    same("## pii configuration", codes::<PiiReason>());
}

#[test]
fn authn_challenges_match_the_readme() {
    for (_, code, column) in table(&readme(), "## authn configuration") {
        let r = AuthnReason::ALL
            .iter()
            .find(|r| r.code() == code)
            .unwrap_or_else(|| panic!("{code} is not an AuthnReason"));
        let error = column
            .split("error=\"")
            .nth(1)
            .and_then(|e| e.split('"').next());
        let want = match r.challenge() {
            Challenge::None => None,
            Challenge::Realm => {
                assert!(column.contains("realm="), "{code}: {column}");
                None
            }
            Challenge::Bearer(e) | Challenge::Dpop(e) => Some(e),
        };
        assert_eq!(error, want, "{code}: README says {column:?}");
    }
}
