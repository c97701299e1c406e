//! authn's part of the audit record: the route, how the caller proved who it is, tenant and
//! app in clear, and the subject, client and address as keyed hashes (so one caller's records
//! link together without naming the caller). Never a token, a key or a claim value.

use portcullis_core::audit::HashKey;
use portcullis_core::identity::{AuthMethod, Identity};

/// The client's address without its port (`1.2.3.4:5678` → `1.2.3.4`, `[::1]:80` → `[::1]`).
pub fn address_of(source: &str) -> &str {
    match source.rsplit_once(':') {
        // IPv4 `a.b.c.d:port` or bracketed IPv6 `[…]:port`; a bare IPv6 address has no port.
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (host.starts_with('[') || !host.contains(':')) =>
        {
            host
        }
        _ => source,
    }
}

/// The audit fields of an authn decision: `route` and `ip` on every request; on an allowed one,
/// `decision`, `auth`, `tenant`, `app`, and the `subject` and `client` hashes. Hashes need a key;
/// without one they are left out.
pub fn fields(
    key: Option<&HashKey>,
    route: Option<&str>,
    source: Option<&str>,
    allowed: Option<&Identity>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(r) = route {
        out.push(("route", r.to_string()));
    }
    if let (Some(k), Some(s)) = (key, source) {
        out.push(("ip", k.hash("ip", "", address_of(s))));
    }
    let Some(id) = allowed else {
        return out;
    };
    out.push(("decision", "allow".to_string()));
    let method = match id.method {
        AuthMethod::Anonymous => "anonymous",
        AuthMethod::Jwt => "jwt",
        AuthMethod::ApiKey => "api_key",
    };
    out.push(("auth", method.to_string()));
    if let Some(t) = &id.tenant {
        out.push(("tenant", t.clone()));
    }
    if let Some(a) = &id.app {
        out.push(("app", a.clone()));
    }
    let Some(k) = key else {
        return out;
    };
    let issuer = id.issuer.as_deref().unwrap_or_default();
    if let Some(s) = &id.subject {
        out.push(("subject", k.hash("sub", issuer, s)));
    }
    // The credential's client: an API key's id, or a token's client (app).
    let client = match id.method {
        AuthMethod::ApiKey => id.issuer.as_deref().map(|kid| k.hash("api_key", "", kid)),
        _ => id.app.as_deref().map(|app| k.hash("client", issuer, app)),
    };
    if let Some(c) = client {
        out.push(("client", c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HashKey {
        HashKey::from_hex(&"5a".repeat(32)).unwrap()
    }

    fn alice() -> Identity {
        let mut id = Identity::anonymous();
        id.method = AuthMethod::Jwt;
        id.issuer = Some("https://idp.example".into());
        id.tenant = Some("acme".into());
        id.app = Some("crm-web".into());
        id.subject = Some("alice@example.com".into());
        id
    }

    fn get<'a>(f: &'a [(&'static str, String)], k: &str) -> Option<&'a str> {
        f.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn address_drops_the_port_only() {
        assert_eq!(address_of("10.0.0.1:5555"), "10.0.0.1");
        assert_eq!(address_of("[2001:db8::1]:443"), "[2001:db8::1]");
        assert_eq!(address_of("2001:db8::1"), "2001:db8::1");
        assert_eq!(address_of("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn an_allowed_caller_is_recorded_by_hash_never_by_subject() {
        let k = key();
        let f = fields(
            Some(&k),
            Some("list-customers"),
            Some("10.0.0.1:5555"),
            Some(&alice()),
        );
        assert_eq!(get(&f, "route"), Some("list-customers"));
        assert_eq!(get(&f, "decision"), Some("allow"));
        assert_eq!(get(&f, "auth"), Some("jwt"));
        assert_eq!(get(&f, "tenant"), Some("acme"));
        assert_eq!(get(&f, "app"), Some("crm-web"));
        let sub = get(&f, "subject").unwrap();
        assert_eq!(sub.len(), 32);
        assert!(f.iter().all(|(_, v)| !v.contains("alice")));
        // The same subject links; another does not; the port does not matter for the address.
        let again = fields(Some(&k), None, Some("10.0.0.1:6000"), Some(&alice()));
        assert_eq!(get(&again, "subject"), Some(sub));
        assert_eq!(get(&again, "ip"), get(&f, "ip"));
        let mut bob = alice();
        bob.subject = Some("bob@example.com".into());
        let other = fields(Some(&k), None, None, Some(&bob));
        assert_ne!(get(&other, "subject"), Some(sub));
        assert_eq!(get(&other, "client"), get(&f, "client"));
    }

    #[test]
    fn api_keys_are_linked_by_key_id_and_denials_carry_route_and_address_only() {
        let k = key();
        let mut id = Identity::anonymous();
        id.method = AuthMethod::ApiKey;
        id.issuer = Some("reports-2024".into());
        id.app = Some("reports".into());
        let f = fields(Some(&k), None, None, Some(&id));
        assert_eq!(get(&f, "auth"), Some("api_key"));
        assert_eq!(
            get(&f, "client").unwrap(),
            k.hash("api_key", "", "reports-2024")
        );
        let denied = fields(Some(&k), Some("r"), Some("10.0.0.1:1"), None);
        let names: Vec<&str> = denied.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["route", "ip"]);
        // Without a key, no hashes at all.
        let unkeyed = fields(None, Some("r"), Some("10.0.0.1:1"), Some(&alice()));
        assert!(get(&unkeyed, "subject").is_none() && get(&unkeyed, "ip").is_none());
        assert_eq!(get(&unkeyed, "tenant"), Some("acme"));
    }
}
