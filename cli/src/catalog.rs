//! The app catalog (`catalog.yaml`): inlined into authn's configuration at load (the filter
//! cannot read files), cross-checked against the other policies by `portcullis check`, and
//! listed by `portcullis catalog` with what each app can reach — all offline, from the
//! policies alone.

use crate::policy::{self, Policies};
use crate::{CliError, Result};
use portcullis_authn::catalog::{App, Catalog, Grant, Status};
use portcullis_authn::config::{AuthnConfig, Rule};
use portcullis_pii::config::PiiConfig;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

/// The catalog file inside a policy directory (optional: without it there is no catalog).
pub const CATALOG_FILE: &str = "catalog.yaml";

/// Puts the directory's `catalog.yaml`, if any, into the authn document as `catalog`.
pub fn inline(dir: &Path, authn: &mut Value) -> Result<()> {
    let path = dir.join(CATALOG_FILE);
    if !path.exists() {
        return Ok(());
    }
    let doc = policy::read_yaml(&path)?;
    let Some(obj) = authn.as_object_mut() else {
        return Ok(());
    };
    if obj.contains_key("catalog") {
        return Err(CliError(format!(
            "{}: authn.yaml has a `catalog` of its own; keep the catalog in {CATALOG_FILE} only",
            path.display()
        )));
    }
    obj.insert("catalog".into(), doc);
    Ok(())
}

/// The compiled catalog of a policy set, if it has one.
pub fn of(p: &Policies) -> Result<Option<(AuthnConfig, Catalog)>> {
    let authn = policy::compile_authn(&p.authn)?;
    Ok(authn.catalog.clone().map(|c| (authn, c)))
}

/// Scopes the policies give a meaning to: route requirements and pii unmasking scopes.
fn known_scopes(authn: &AuthnConfig, pii: &[&PiiConfig]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, r) in authn.routes.iter() {
        if let Rule::Require { scopes, .. } = &r.rule {
            out.extend(scopes.all_of.iter().chain(&scopes.any_of).cloned());
        }
    }
    for c in pii {
        for r in &c.rules {
            out.extend(r.written_scopes.iter().cloned());
        }
    }
    out
}

/// Cross-checks the catalog against the other policies. Errors: an app granted a scope or a
/// data class no policy knows (a typo grants nothing and hides it), a pii rule that can reveal
/// values but has no data class (a catalog-restricted app could never see it, and nobody would
/// notice why). Warnings (returned): API keys of apps the catalog does not list (refused on
/// every request).
pub fn check(p: &Policies) -> Result<Vec<String>> {
    let Some((authn, catalog)) = of(p)? else {
        return Ok(Vec::new());
    };
    let pii = policy::compile_pii(&p.pii, policy::PII_FILE)?;
    let egress = policy::compile_pii(&p.pii_egress, policy::PII_EGRESS_FILE)?;
    let scopes = known_scopes(&authn, &[&pii, &egress]);
    let classes: BTreeSet<&String> = pii.classes.iter().chain(&egress.classes).collect();
    for a in &catalog.apps {
        for s in a.scopes.items().unwrap_or_default() {
            if !scopes.contains(s) {
                return Err(CliError(format!(
                    "{CATALOG_FILE}: app `{}` is granted scope `{s}`, which no route or pii rule uses",
                    a.id
                )));
            }
        }
        for c in a.data_classes.items().unwrap_or_default() {
            if !classes.contains(c) {
                return Err(CliError(format!(
                    "{CATALOG_FILE}: app `{}` is granted data class `{c}`, which no pii rule has (known: {})",
                    a.id,
                    join(classes.iter().map(|c| c.as_str()))
                )));
            }
        }
    }
    for (file, cfg) in [(policy::PII_FILE, &pii), (policy::PII_EGRESS_FILE, &egress)] {
        for r in &cfg.rules {
            let reveals = !r.written_scopes.is_empty() || r.consent.is_some();
            if reveals && r.data_class.is_none() {
                return Err(CliError(format!(
                    "{file}: rule `{}` can reveal values but has no `data_class`; with an app catalog every such rule needs one",
                    r.name
                )));
            }
        }
    }
    let mut warnings = Vec::new();
    let keys = p.authn["api_keys"]["keys"].as_array().cloned();
    for k in keys.unwrap_or_default() {
        let app = k["app"].as_str().unwrap_or_default();
        if k["disabled"].as_bool() != Some(true) && catalog.get(app).is_none() {
            warnings.push(format!(
                "{CATALOG_FILE}: API key `{}` belongs to app `{app}`, which is not in the catalog: every request with it is refused (app_not_registered)",
                k["id"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok(warnings)
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The routes an app can reach: those whose scope requirement its allowed scopes can satisfy
/// (roles, tenant and claim rules still apply to each caller), anonymous routes aside.
fn routes_of(authn: &AuthnConfig, app: &App) -> Vec<String> {
    authn
        .routes
        .iter()
        .filter_map(|(_, r)| match (&r.rule, &app.scopes) {
            (Rule::Require { .. }, Grant::All) => Some(r.name.clone()),
            (Rule::Require { scopes, .. }, Grant::Only(l)) => {
                scopes.satisfied_by(l).then(|| r.name.clone())
            }
            (Rule::Anonymous, _) => None,
        })
        .collect()
}

/// The data classes an app sees unmasked, each with the rules of that class it can reveal:
/// the class is granted and one of the rule's scopes is allowed (or the rule reveals by the
/// record's consent alone).
fn classes_of(pii: &PiiConfig, app: &App) -> Vec<(String, Vec<String>)> {
    pii.classes
        .iter()
        .filter(|c| app.data_classes.allows(c))
        .filter_map(|c| {
            let rules: Vec<String> = pii
                .rules
                .iter()
                .filter(|r| r.data_class.as_ref() == Some(c))
                .filter(|r| {
                    (r.written_scopes.is_empty() && r.consent.is_some())
                        || r.written_scopes.iter().any(|s| app.scopes.allows(s))
                })
                .map(|r| r.name.clone())
                .collect();
            (!rules.is_empty()).then(|| (c.clone(), rules))
        })
        .collect()
}

/// `portcullis catalog`: every app with its owner, tier, status, credentials and reach.
pub fn report(p: &Policies) -> Result<String> {
    let Some((authn, catalog)) = of(p)? else {
        return Err(CliError(format!(
            "{}: no {CATALOG_FILE}: every app is admitted as its credential says",
            p.dir.display()
        )));
    };
    let pii = policy::compile_pii(&p.pii, policy::PII_FILE)?;
    let keys = p.authn["api_keys"]["keys"].as_array().cloned();
    let keys = keys.unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} app(s); callers without an app: {}",
        catalog.apps.len(),
        if catalog.require_app {
            "refused (require_app)"
        } else {
            "judged by their own scopes"
        }
    );
    for a in &catalog.apps {
        let _ = writeln!(out);
        let status = match a.status {
            Status::Active => "active",
            Status::Suspended => "SUSPENDED (every request refused: app_suspended)",
        };
        let _ = writeln!(out, "{}  [{status}]", a.id);
        let _ = writeln!(out, "  owner:        {}", a.owner);
        if let Some(d) = &a.description {
            let _ = writeln!(out, "  description:  {d}");
        }
        let _ = writeln!(
            out,
            "  tier:         {}",
            a.tier.as_deref().unwrap_or("(the credential's)")
        );
        let key_ids = keys
            .iter()
            .filter(|k| k["app"].as_str() == Some(a.id.as_str()))
            .filter(|k| k["disabled"].as_bool() != Some(true))
            .filter_map(|k| k["id"].as_str());
        let _ = writeln!(out, "  api keys:     {}", join(key_ids));
        let scopes = match &a.scopes {
            Grant::All => "all (the credential's own)".to_string(),
            Grant::Only(l) => join(l.iter().map(String::as_str)),
        };
        let _ = writeln!(out, "  scopes:       {scopes}");
        if a.status == Status::Suspended {
            continue;
        }
        let routes = routes_of(&authn, a);
        let _ = writeln!(
            out,
            "  routes:       {}",
            join(routes.iter().map(String::as_str))
        );
        let classes = classes_of(&pii, a);
        let shown: Vec<String> = classes
            .iter()
            .map(|(c, rules)| format!("{c} ({})", rules.join(", ")))
            .collect();
        let _ = writeln!(
            out,
            "  unmasked:     {}",
            join(shown.iter().map(String::as_str))
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn demo() -> Policies {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        policy::load(&root.join("policies")).unwrap()
    }

    fn with_catalog(apps: Value) -> Policies {
        let mut p = demo();
        p.authn["catalog"] = json!({ "apps": apps });
        p
    }

    fn section<'a>(report: &'a str, app: &str) -> &'a str {
        let start = report
            .find(&format!("\n{app}  ["))
            .unwrap_or_else(|| panic!("{app} in {report}"));
        let rest = &report[start + 1..];
        rest.find("\n\n").map_or(rest, |end| &rest[..end])
    }

    #[test]
    fn the_demo_catalog_is_inlined_and_checks_clean() {
        let p = demo();
        assert!(p.authn["catalog"]["apps"].is_array());
        let warnings = check(&p).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn an_app_reaches_the_routes_its_scopes_satisfy_and_the_classes_it_is_granted() {
        let p = with_catalog(json!([
            {"id": "inventory-widget", "owner": "team-inventory", "tier": "standard",
             "scopes": ["customers:read", "pii:email:read", "pii:card:read"],
             "data_classes": ["contact"]},
            {"id": "old", "owner": "team-b", "status": "suspended", "scopes": ["*"]},
            {"id": "crm-sync", "owner": "crm", "scopes": ["*"], "data_classes": ["*"]},
        ]));
        let r = report(&p).unwrap();
        let w = section(&r, "inventory-widget");
        assert!(w.contains("owner:        team-inventory"), "{w}");
        assert!(w.contains("tier:         standard"), "{w}");
        assert!(w.contains("api keys:     demo-inventory-widget"), "{w}");
        let routes = w.lines().find(|l| l.contains("routes:")).unwrap();
        assert!(routes.contains("list-customers"), "{routes}");
        assert!(!routes.contains("customer-audit"), "{routes}");
        assert!(!routes.contains("create-customer"), "{routes}");
        let unmasked = w.lines().find(|l| l.contains("unmasked:")).unwrap();
        assert!(unmasked.contains("contact (email"), "{unmasked}");
        assert!(
            !unmasked.contains("financial"),
            "granted the scope, not the class: {unmasked}"
        );
        let old = section(&r, "old");
        assert!(old.contains("SUSPENDED"), "{old}");
        assert!(!old.contains("routes:"), "{old}");
        let crm = section(&r, "crm-sync");
        assert!(
            crm.contains("customer-audit") && crm.contains("financial"),
            "{crm}"
        );
    }

    #[test]
    fn check_refuses_unknown_scopes_and_classes_and_warns_of_orphan_keys() {
        let e = check(&with_catalog(json!([
            {"id": "a", "owner": "o", "scopes": ["customers:raed"]}
        ])))
        .unwrap_err()
        .0;
        assert!(e.contains("customers:raed"), "{e}");
        let e = check(&with_catalog(json!([
            {"id": "a", "owner": "o", "data_classes": ["contcat"]}
        ])))
        .unwrap_err()
        .0;
        assert!(e.contains("contcat") && e.contains("contact"), "{e}");
        let w = check(&with_catalog(json!([{"id": "a", "owner": "o"}]))).unwrap();
        assert!(w.iter().any(|w| w.contains("inventory-widget")), "{w:?}");
    }

    #[test]
    fn check_refuses_a_revealing_pii_rule_without_a_class() {
        let mut p = demo();
        p.pii["rules"][0]
            .as_object_mut()
            .unwrap()
            .remove("data_class");
        let e = check(&p).unwrap_err().0;
        assert!(e.contains("pii.yaml") && e.contains("data_class"), "{e}");
    }

    #[test]
    fn without_a_catalog_nothing_is_checked_and_the_listing_says_so() {
        let mut p = demo();
        p.authn.as_object_mut().unwrap().remove("catalog");
        p.pii["rules"][0]
            .as_object_mut()
            .unwrap()
            .remove("data_class");
        assert!(check(&p).unwrap().is_empty());
        p.dir = PathBuf::from("x");
        assert!(report(&p).unwrap_err().0.contains("no catalog.yaml"));
    }

    #[test]
    fn a_catalog_in_authn_yaml_itself_is_refused() {
        let dir = std::env::temp_dir().join(format!("pc-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CATALOG_FILE), "apps: []\n").unwrap();
        let mut doc = json!({"catalog": {}});
        assert!(inline(&dir, &mut doc).is_err());
        let mut doc = json!({});
        inline(&dir, &mut doc).unwrap();
        assert_eq!(doc["catalog"]["apps"], json!([]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
