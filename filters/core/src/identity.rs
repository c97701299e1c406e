//! The verified caller, as authn hands it to the later filters.
//!
//! authn stores it as Envoy filter state (`set_property(["portcullis.identity"], bytes)`), which
//! no client can write; the other filters read it back with [`Identity::from_filter_state`]. The
//! forwarded `x-portcullis-*` headers are for the upstream only: filters never trust headers.
//!
//! The bytes are a compact binary form, written and read on every request (JSON cost more than
//! the rest of the hand-over; see tests/bench/README.md, "Profiling"): a version byte
//! ([`FORMAT_VERSION`]), the method byte, then the optional strings (issuer, tenant, app,
//! subject, tier) and the two lists (scopes, roles), each length-prefixed. Version 2
//! ([`FORMAT_VERSION_CLASSES`]) is the same followed by one more list, the data classes the app
//! catalog grants; it is written only when the identity carries them, so a gateway without a
//! catalog writes exactly the bytes it always did. Anything else — another version, a short or
//! overlong length, bytes left over, text that is not UTF-8 — reads as no identity.

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
    /// Data classes the app catalog grants the caller's app: pii reveals only values of these
    /// classes. `None` is no restriction (no catalog, an app granted every class, or a caller
    /// without an app); `Some(vec![])` reveals nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_classes: Option<Vec<String>>,
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
            data_classes: None,
        }
    }

    /// True when pii may reveal a value of `class` to this caller (scopes permitting).
    pub fn sees_class(&self, class: &str) -> bool {
        self.data_classes
            .as_ref()
            .is_none_or(|c| c.iter().any(|x| x == class))
    }

    /// True when the identity grants `scope` (whole-token match: `read` never satisfies
    /// `read:admin`, nor the reverse).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Serialized form stored in filter state (see the module docs for the layout).
    pub fn to_filter_state(&self) -> Vec<u8> {
        let strings = [
            &self.issuer,
            &self.tenant,
            &self.app,
            &self.subject,
            &self.tier,
        ];
        let size = 2
            + strings
                .iter()
                .map(|s| 4 + s.as_ref().map_or(0, String::len))
                .sum::<usize>()
            + [&self.scopes, &self.roles]
                .iter()
                .map(|l| 4 + l.iter().map(|s| 4 + s.len()).sum::<usize>())
                .sum::<usize>()
            + self
                .data_classes
                .as_ref()
                .map_or(0, |l| 4 + l.iter().map(|s| 4 + s.len()).sum::<usize>());
        let mut out = Vec::with_capacity(size);
        out.push(if self.data_classes.is_some() {
            FORMAT_VERSION_CLASSES
        } else {
            FORMAT_VERSION
        });
        out.push(match self.method {
            AuthMethod::Anonymous => 0,
            AuthMethod::Jwt => 1,
            AuthMethod::ApiKey => 2,
        });
        for s in strings {
            match s {
                // A string's length is below 2^32 - 1 here: the credential it came from fits
                // in a request header.
                Some(s) => put(&mut out, s.as_bytes()),
                None => out.extend_from_slice(&ABSENT.to_le_bytes()),
            }
        }
        for list in [
            Some(&self.scopes),
            Some(&self.roles),
            self.data_classes.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            out.extend_from_slice(&len32(list.len()).to_le_bytes());
            for s in list {
                put(&mut out, s.as_bytes());
            }
        }
        out
    }

    /// Reads the identity back from filter state; `None` if absent or unreadable, which later
    /// filters must treat as "not authenticated".
    pub fn from_filter_state(bytes: Option<&[u8]>) -> Option<Self> {
        let mut r = Reader(bytes?);
        let (classes, method) = r.head()?;
        let issuer = r.optional()?;
        let tenant = r.optional()?;
        let app = r.optional()?;
        let subject = r.optional()?;
        let tier = r.optional()?;
        let scopes = r.list()?;
        let roles = r.list()?;
        let data_classes = if classes { Some(r.list()?) } else { None };
        if !r.0.is_empty() {
            return None;
        }
        Some(Identity {
            method,
            issuer,
            tenant,
            app,
            subject,
            scopes,
            roles,
            tier,
            data_classes,
        })
    }

    /// The borrowed view of this identity a rate limit reads.
    pub fn view(&self) -> IdentityView<'_> {
        IdentityView {
            method: self.method,
            tenant: self.tenant.as_deref(),
            app: self.app.as_deref(),
            subject: self.subject.as_deref(),
            tier: self.tier.as_deref(),
        }
    }
}

/// What a rate limit keys by, borrowed from the identity's filter-state bytes: read on every
/// request by each ratelimit instance, where [`Identity::from_filter_state`] allocated every
/// string and list only to drop them (allocations are dear in a wasm VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityView<'a> {
    /// How it was proven.
    pub method: AuthMethod,
    /// Tenant the caller belongs to.
    pub tenant: Option<&'a str>,
    /// Application / OAuth client id.
    pub app: Option<&'a str>,
    /// Subject (user or service account).
    pub subject: Option<&'a str>,
    /// Plan tier.
    pub tier: Option<&'a str>,
}

impl<'a> IdentityView<'a> {
    /// Reads the view from filter state. The bytes are checked exactly as
    /// [`Identity::from_filter_state`] checks them — every string and list, UTF-8 included —
    /// so a view exists exactly when the identity does, and agrees with it.
    pub fn from_filter_state(bytes: Option<&'a [u8]>) -> Option<Self> {
        let mut r = Reader(bytes?);
        let (classes, method) = r.head()?;
        let _issuer = r.optional_str()?;
        let tenant = r.optional_str()?;
        let app = r.optional_str()?;
        let subject = r.optional_str()?;
        let tier = r.optional_str()?;
        r.skip_list()?;
        r.skip_list()?;
        if classes {
            r.skip_list()?;
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(IdentityView {
            method,
            tenant,
            app,
            subject,
            tier,
        })
    }
}

/// First byte of the filter-state form without data classes.
pub const FORMAT_VERSION: u8 = 1;

/// First byte of the form with data classes (one more list at the end); a reader refuses any
/// version but these two.
pub const FORMAT_VERSION_CLASSES: u8 = 2;

/// Length marking an absent optional string.
const ABSENT: u32 = u32::MAX;

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(ABSENT - 1)
}

fn put(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&len32(s.len()).to_le_bytes());
    out.extend_from_slice(s);
}

/// A cursor over filter-state bytes; every read fails (`None`) past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The version byte (whether data classes follow) and the method.
    fn head(&mut self) -> Option<(bool, AuthMethod)> {
        let classes = match self.byte()? {
            FORMAT_VERSION => false,
            FORMAT_VERSION_CLASSES => true,
            _ => return None,
        };
        let method = match self.byte()? {
            0 => AuthMethod::Anonymous,
            1 => AuthMethod::Jwt,
            2 => AuthMethod::ApiKey,
            _ => return None,
        };
        Some((classes, method))
    }

    fn str_of(&mut self, len: u32) -> Option<&'a str> {
        let len = usize::try_from(len).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(s).ok()
    }

    fn optional_str(&mut self) -> Option<Option<&'a str>> {
        match self.len()? {
            ABSENT => Some(None),
            n => self.str_of(n).map(Some),
        }
    }

    /// Checks a list as [`Reader::list`] reads it, keeping nothing.
    fn skip_list(&mut self) -> Option<()> {
        let n = usize::try_from(self.len()?).ok()?;
        if n > self.0.len() / 4 {
            return None;
        }
        for _ in 0..n {
            let len = self.len()?;
            self.str_of(len)?;
        }
        Some(())
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn len(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_le_bytes(*head))
    }

    fn string_of(&mut self, len: u32) -> Option<String> {
        self.str_of(len).map(str::to_string)
    }

    fn optional(&mut self) -> Option<Option<String>> {
        match self.len()? {
            ABSENT => Some(None),
            n => self.string_of(n).map(Some),
        }
    }

    fn list(&mut self) -> Option<Vec<String>> {
        let n = usize::try_from(self.len()?).ok()?;
        // Each entry takes at least its 4-byte length: a count the bytes cannot hold is refused
        // before anything is allocated for it.
        if n > self.0.len() / 4 {
            return None;
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let len = self.len()?;
            v.push(self.string_of(len)?);
        }
        Some(v)
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

    fn full() -> Identity {
        Identity {
            method: AuthMethod::ApiKey,
            issuer: Some("https://idp".into()),
            tenant: Some("acme".into()),
            app: Some("widget".into()),
            subject: Some("".into()),
            scopes: vec!["a".into(), "b:c".into()],
            roles: vec!["admin".into()],
            tier: Some("gold".into()),
            data_classes: None,
        }
    }

    fn with_classes(classes: &[&str]) -> Identity {
        let mut id = full();
        id.data_classes = Some(classes.iter().map(|c| (*c).to_string()).collect());
        id
    }

    #[test]
    fn data_classes_round_trip_in_version_2_and_leave_version_1_bytes_alone() {
        assert_eq!(full().to_filter_state()[0], FORMAT_VERSION);
        for id in [with_classes(&["contact", "financial"]), with_classes(&[])] {
            let b = id.to_filter_state();
            assert_eq!(b[0], FORMAT_VERSION_CLASSES);
            assert_eq!(b.len(), b.capacity(), "size computed exactly");
            assert_eq!(Identity::from_filter_state(Some(&b)), Some(id));
        }
        // An empty grant differs from no restriction, and reveals nothing.
        assert!(!with_classes(&[]).sees_class("contact"));
        assert!(with_classes(&["contact"]).sees_class("contact"));
        assert!(!with_classes(&["contact"]).sees_class("financial"));
        assert!(full().sees_class("financial"));
        // Version 1 bytes relabelled as version 2 lack the list: no identity.
        let mut v = full().to_filter_state();
        v[0] = FORMAT_VERSION_CLASSES;
        assert_eq!(Identity::from_filter_state(Some(&v)), None);
        let good = with_classes(&["contact"]).to_filter_state();
        for n in 0..good.len() {
            assert_eq!(Identity::from_filter_state(Some(&good[..n])), None, "{n}");
        }
    }

    #[test]
    fn every_field_round_trips_and_empty_differs_from_absent() {
        for id in [full(), Identity::anonymous()] {
            assert_eq!(
                Identity::from_filter_state(Some(&id.to_filter_state())),
                Some(id)
            );
        }
        let mut none = full();
        none.subject = None;
        assert_ne!(none.to_filter_state(), full().to_filter_state());
    }

    #[test]
    fn malformed_filter_state_is_no_identity() {
        let good = full().to_filter_state();
        // Every truncation, and one byte too many.
        for n in 0..good.len() {
            assert_eq!(Identity::from_filter_state(Some(&good[..n])), None, "{n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Identity::from_filter_state(Some(&long)), None);
        // Another version, an unknown method.
        let mut v = good.clone();
        v[0] = FORMAT_VERSION_CLASSES + 1;
        assert_eq!(Identity::from_filter_state(Some(&v)), None);
        let mut m = good.clone();
        m[1] = 9;
        assert_eq!(Identity::from_filter_state(Some(&m)), None);
        // The JSON form of earlier releases.
        assert_eq!(
            Identity::from_filter_state(Some(br#"{"method":"jwt","tenant":"acme"}"#)),
            None
        );
        // A list count far beyond the bytes, and text that is not UTF-8.
        let mut id = Identity::anonymous();
        id.tenant = Some("é".into());
        let mut b = id.to_filter_state();
        let at = b.len() - 8;
        b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Identity::from_filter_state(Some(&b)), None);
        let mut b = id.to_filter_state();
        let at = b.iter().position(|&x| x == 0xc3).unwrap_or(0);
        b[at] = 0xff;
        assert_eq!(Identity::from_filter_state(Some(&b)), None);
    }

    /// The borrowed view exists exactly when the identity does and agrees with it: on good
    /// bytes of every shape, every truncation, every single-byte change, and one byte too many.
    #[test]
    fn the_view_reads_exactly_what_the_identity_reads() {
        let mut anon_tenant = Identity::anonymous();
        anon_tenant.tenant = Some("é".into());
        for id in [
            full(),
            Identity::anonymous(),
            with_classes(&["contact", "financial"]),
            with_classes(&[]),
            anon_tenant,
        ] {
            let good = id.to_filter_state();
            let agree = |b: &[u8]| {
                let full = Identity::from_filter_state(Some(b));
                let view = IdentityView::from_filter_state(Some(b));
                assert_eq!(full.as_ref().map(Identity::view), view, "{b:?}");
            };
            agree(&good);
            for n in 0..good.len() {
                agree(&good[..n]);
            }
            let mut long = good.clone();
            long.push(0);
            agree(&long);
            for i in 0..good.len() {
                for x in [0x00, 0x01, 0x02, 0x03, 0x80, 0xc3, 0xff] {
                    let mut b = good.clone();
                    b[i] = x;
                    agree(&b);
                }
            }
        }
        assert_eq!(IdentityView::from_filter_state(None), None);
    }
}
