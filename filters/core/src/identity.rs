//! The verified caller, as authn hands it to the later filters.
//!
//! authn stores it as Envoy filter state (`set_property(["portcullis.identity"], json)`), which no
//! client can write; the other filters read it back with [`Identity::from_filter_state`]. The
//! forwarded `x-portcullis-*` headers are for the upstream only: filters never trust headers.

use serde::{Deserialize, Serialize};

/// Filter-state property under which authn publishes the identity (Envoy stores it as
/// `wasm.portcullis.identity`).
pub const IDENTITY_PROPERTY: &str = "portcullis.identity";

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A route that allows anonymous access; nothing was proven.
    Anonymous,
    /// A verified JWT.
    Jwt,
    /// A micro-app API key.
    ApiKey,
}

/// A verified caller. Every field comes from a verified credential, never from request headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// How it was proven.
    pub method: AuthMethod,
    /// Issuer (JWT) or key id (API key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Tenant the caller belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Application / OAuth client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Subject (user or service account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Granted scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Granted roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Plan tier, when the credential carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

impl Identity {
    /// The identity of a caller on an anonymous route.
    pub fn anonymous() -> Self {
        Identity {
            method: AuthMethod::Anonymous,
            issuer: None,
            tenant: None,
            app: None,
            subject: None,
            scopes: Vec::new(),
            roles: Vec::new(),
            tier: None,
        }
    }

    /// True when the identity grants `scope` (whole-token match: `read` never satisfies
    /// `read:admin`, nor the reverse).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Serialized form stored in filter state.
    pub fn to_filter_state(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the identity back from filter state; `None` if absent or unreadable, which later
    /// filters must treat as "not authenticated".
    pub fn from_filter_state(bytes: Option<&[u8]>) -> Option<Self> {
        bytes.and_then(|b| serde_json::from_slice(b).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_filter_state() {
        let mut id = Identity::anonymous();
        id.method = AuthMethod::Jwt;
        id.tenant = Some("acme".into());
        id.scopes = vec!["customers:read".into()];
        let back = Identity::from_filter_state(Some(&id.to_filter_state())).unwrap();
        assert_eq!(back, id);
        assert!(back.has_scope("customers:read"));
        assert!(!back.has_scope("customers"));
        assert!(!back.has_scope("customers:read:admin"));
        assert_eq!(Identity::from_filter_state(Some(b"garbage")), None);
        assert_eq!(Identity::from_filter_state(None), None);
    }
}
