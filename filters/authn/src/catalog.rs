//! The app catalog: which micro apps may call at all, and what each may be granted.
//!
//! The catalog is compiled once with the rest of authn's configuration (`catalog:`, which
//! `portcullis render` fills from `policies/catalog.yaml`). Every verified caller that names an
//! app — an API key's `app`, a token's app claim (`client_id`, `azp`) — is admitted here after
//! its credential is verified and before the route's requirements: an unknown app is refused
//! (`app_not_registered`), a suspended one too (`app_suspended`), whichever credential it
//! brings. An admitted app keeps only the scopes the catalog allows it, takes the catalog's
//! tier when the entry has one, and carries the data classes it is granted to pii.

use portcullis_core::config::ConfigError;
use portcullis_core::identity::Identity;
use serde::Deserialize;
use std::collections::HashMap;

/// Grants everything of a kind (`scopes: ["*"]`, `data_classes: ["*"]`): for first-party apps
/// whose callers are governed by their own token's scopes.
pub const ALL: &str = "*";

/// The catalog as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    /// Refuse callers whose credential names no app (default false: end-user tokens without an
    /// app claim are judged by their scopes alone).
    #[serde(default)]
    pub require_app: bool,
    /// The registered apps.
    #[serde(default)]
    pub apps: Vec<RawApp>,
}

/// Whether an app may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Admitted.
    #[default]
    Active,
    /// Refused (`app_suspended`), whatever credential it brings.
    Suspended,
}

/// One app as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    /// The app id: an API key's `app`, or the value of a token's app claim.
    pub id: String,
    /// Team or person answerable for the app (shown by `portcullis catalog`).
    pub owner: String,
    /// Plan tier the app's requests are rate-limited as; when absent, the credential's tier.
    #[serde(default)]
    pub tier: Option<String>,
    /// `active` (default) or `suspended`.
    #[serde(default)]
    pub status: Status,
    /// Scopes the app may hold; a credential's other scopes are dropped. `["*"]`: no limit.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Data classes pii may reveal to the app (scopes permitting). `["*"]`: every class.
    #[serde(default)]
    pub data_classes: Vec<String>,
    /// Free text for humans (never sent to clients).
    #[serde(default)]
    pub description: Option<String>,
}

/// A set of grants: everything, or these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// No restriction (`["*"]`).
    All,
    /// Only these.
    Only(Vec<String>),
}

impl Grant {
    fn compile(field: &str, list: &[String]) -> Result<Grant, ConfigError> {
        if list.iter().any(|s| s == ALL) {
            if list.len() > 1 {
                return Err(ConfigError::new(field, "`*` stands alone"));
            }
            return Ok(Grant::All);
        }
        for (i, s) in list.iter().enumerate() {
            if !clean(s) {
                return Err(ConfigError::new(
                    format!("{field}[{i}]"),
                    "must be 1 to 256 characters without spaces or control characters",
                ));
            }
        }
        Ok(Grant::Only(list.to_vec()))
    }

    /// True when `item` is granted.
    pub fn allows(&self, item: &str) -> bool {
        match self {
            Grant::All => true,
            Grant::Only(l) => l.iter().any(|x| x == item),
        }
    }

    /// The granted items, `None` for all.
    pub fn items(&self) -> Option<&[String]> {
        match self {
            Grant::All => None,
            Grant::Only(l) => Some(l),
        }
    }
}

/// A compiled app.
#[derive(Debug, Clone)]
pub struct App {
    /// Id.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Tier replacing the credential's, if any.
    pub tier: Option<String>,
    /// Status.
    pub status: Status,
    /// Allowed scopes.
    pub scopes: Grant,
    /// Allowed data classes.
    pub data_classes: Grant,
    /// Description.
    pub description: Option<String>,
}

/// The compiled catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Refuse callers without an app.
    pub require_app: bool,
    /// Apps in the order written.
    pub apps: Vec<App>,
    index: HashMap<String, usize>,
}

/// Why the catalog refuses a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The app is not in the catalog (or the caller names none and the catalog requires one).
    NotRegistered,
    /// The app is suspended.
    Suspended,
}

fn clean(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.chars().any(|c| c.is_control() || c == ' ')
}

impl Catalog {
    /// Compiles the catalog; errors name the field.
    pub fn compile(raw: RawCatalog) -> Result<Catalog, ConfigError> {
        let mut apps = Vec::with_capacity(raw.apps.len());
        let mut index = HashMap::new();
        for (i, a) in raw.apps.into_iter().enumerate() {
            let at = |f: &str| format!("apps[{i}].{f}");
            if !clean(&a.id) {
                return Err(ConfigError::new(
                    at("id"),
                    "must be 1 to 256 characters without spaces or control characters",
                ));
            }
            if index.insert(a.id.clone(), i).is_some() {
                return Err(ConfigError::new(
                    at("id"),
                    format!("duplicate app `{}`", a.id),
                ));
            }
            if a.owner.trim().is_empty() {
                return Err(ConfigError::new(
                    at("owner"),
                    "every app needs an owner to answer for it",
                ));
            }
            if a.tier.as_deref().is_some_and(|t| !clean(t)) {
                return Err(ConfigError::new(
                    at("tier"),
                    "must be 1 to 256 characters without spaces or control characters",
                ));
            }
            apps.push(App {
                scopes: Grant::compile(&at("scopes"), &a.scopes)?,
                data_classes: Grant::compile(&at("data_classes"), &a.data_classes)?,
                id: a.id,
                owner: a.owner,
                tier: a.tier,
                status: a.status,
                description: a.description,
            });
        }
        Ok(Catalog {
            require_app: raw.require_app,
            apps,
            index,
        })
    }

    /// The entry of an app.
    pub fn get(&self, id: &str) -> Option<&App> {
        self.index.get(id).and_then(|&i| self.apps.get(i))
    }

    /// Admits a verified caller: `Ok(None)` leaves the identity as it is (a caller without an
    /// app, where the catalog allows that), `Ok(Some(identity))` is the identity narrowed to
    /// what the catalog grants its app.
    pub fn admit(&self, id: &Identity) -> Result<Option<Identity>, Refusal> {
        Ok(self.admission(id)?.map(|app| {
            let mut out = id.clone();
            app.narrow(&mut out);
            out
        }))
    }

    /// [`admit`](Self::admit) in two steps, for a caller that owns the identity and can narrow
    /// it in place: refused, `Ok(None)` (left as it is), or `Ok(Some(app))`, whose
    /// [`App::narrow`] gives the admitted identity.
    pub fn admission(&self, id: &Identity) -> Result<Option<&App>, Refusal> {
        let Some(app_id) = id.app.as_deref() else {
            return if self.require_app {
                Err(Refusal::NotRegistered)
            } else {
                Ok(None)
            };
        };
        let app = self.get(app_id).ok_or(Refusal::NotRegistered)?;
        if app.status == Status::Suspended {
            return Err(Refusal::Suspended);
        }
        Ok(Some(app))
    }
}

impl App {
    /// Narrows an admitted identity to what this app is granted: scopes, tier, data classes.
    pub fn narrow(&self, id: &mut Identity) {
        id.scopes.retain(|s| self.scopes.allows(s));
        if let Some(t) = &self.tier {
            id.tier = Some(t.clone());
        }
        id.data_classes = self.data_classes.items().map(<[String]>::to_vec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::identity::AuthMethod;
    use serde_json::json;

    fn catalog(v: serde_json::Value) -> Result<Catalog, ConfigError> {
        Catalog::compile(serde_json::from_value(v).unwrap())
    }

    fn demo() -> Catalog {
        catalog(json!({"apps": [
            {"id": "widget", "owner": "team-a", "tier": "standard",
             "scopes": ["customers:read"], "data_classes": ["contact"]},
            {"id": "old", "owner": "team-b", "status": "suspended", "scopes": ["*"]},
            {"id": "first-party", "owner": "team-c", "scopes": ["*"], "data_classes": ["*"]},
        ]}))
        .unwrap()
    }

    fn caller(app: Option<&str>, scopes: &[&str]) -> Identity {
        let mut id = Identity::anonymous();
        id.method = AuthMethod::Jwt;
        id.app = app.map(str::to_string);
        id.scopes = scopes.iter().map(|s| (*s).to_string()).collect();
        id.tier = Some("gold".into());
        id
    }

    #[test]
    fn unknown_and_suspended_apps_are_refused() {
        let c = demo();
        assert_eq!(
            c.admit(&caller(Some("nobody"), &[])),
            Err(Refusal::NotRegistered)
        );
        assert_eq!(
            c.admit(&caller(Some("old"), &["x"])),
            Err(Refusal::Suspended)
        );
        // App ids match exactly.
        assert_eq!(
            c.admit(&caller(Some("Widget"), &[])),
            Err(Refusal::NotRegistered)
        );
    }

    #[test]
    fn an_app_keeps_only_its_allowed_scopes_and_takes_the_catalog_tier_and_classes() {
        let got = demo()
            .admit(&caller(Some("widget"), &["customers:read", "pii:ssn:read"]))
            .unwrap()
            .unwrap();
        assert_eq!(got.scopes, vec!["customers:read".to_string()]);
        assert_eq!(got.tier.as_deref(), Some("standard"));
        assert_eq!(got.data_classes, Some(vec!["contact".to_string()]));
    }

    #[test]
    fn a_first_party_app_keeps_its_scopes_tier_and_every_class() {
        let id = caller(Some("first-party"), &["a", "b"]);
        let got = demo().admit(&id).unwrap().unwrap();
        assert_eq!(got, id);
        assert_eq!(got.data_classes, None);
    }

    #[test]
    fn a_caller_without_an_app_passes_unless_the_catalog_requires_one() {
        assert_eq!(demo().admit(&caller(None, &["a"])), Ok(None));
        let strict = catalog(json!({"require_app": true, "apps": []})).unwrap();
        assert_eq!(
            strict.admit(&caller(None, &["a"])),
            Err(Refusal::NotRegistered)
        );
    }

    #[test]
    fn an_app_without_classes_is_granted_none() {
        let c = catalog(json!({"apps": [{"id": "a", "owner": "o"}]})).unwrap();
        let got = c.admit(&caller(Some("a"), &["x"])).unwrap().unwrap();
        assert_eq!(got.data_classes, Some(vec![]));
        assert!(got.scopes.is_empty());
        assert_eq!(got.tier.as_deref(), Some("gold"), "no catalog tier: kept");
    }

    #[test]
    fn bad_catalogs_name_the_field() {
        let err = |v| catalog(v).unwrap_err().to_string();
        assert!(
            err(json!({"apps": [{"id": "a", "owner": "o"}, {"id": "a", "owner": "p"}]}))
                .contains("apps[1].id")
        );
        assert!(err(json!({"apps": [{"id": "a", "owner": " "}]})).contains("apps[0].owner"));
        assert!(err(json!({"apps": [{"id": "a b", "owner": "o"}]})).contains("apps[0].id"));
        assert!(
            err(json!({"apps": [{"id": "a", "owner": "o", "scopes": ["*", "x"]}]}))
                .contains("apps[0].scopes")
        );
        assert!(
            err(json!({"apps": [{"id": "a", "owner": "o", "data_classes": ["\u{1f}"]}]}))
                .contains("apps[0].data_classes[0]")
        );
        assert!(serde_json::from_value::<RawCatalog>(
            json!({"apps": [{"id": "a", "owner": "o", "status": "paused"}]})
        )
        .is_err());
    }
}
