//! DPoP (RFC 9449): proof-of-possession for access tokens presented as `Authorization: DPoP`.
//!
//! [`check_proof`] performs every check of RFC 9449 §4.3 that needs no state and returns what
//! the replay check needs ([`ReplayCheck`]); the one stateful check — the `jti` was not seen
//! before, across all workers — is [`record`]: [`replay_update`] applied to Envoy's shared data
//! through the core's CAS loop. Slots bound the memory: a `jti` lives in one of [`SLOTS`] keys
//! (chosen by a keyed hash), each holding at most [`SLOT_CAPACITY`] unexpired entries.

use crate::decide::AuthnReason;
use crate::jwk::{Alg, Jwk, KeyPolicy};
use crate::jws;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_core::deny::Denial;
use portcullis_core::headers::HeaderMap;
use portcullis_core::shared::{self, SharedStore, Step};
use portcullis_core::slots::Secret;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Shared-data slots for seen `jti`s.
pub const SLOTS: u32 = 4096;
/// Unexpired entries one slot holds (beyond that new proofs are refused, never forgotten).
pub const SLOT_CAPACITY: usize = 256;
const ENTRY: usize = 24;

/// DPoP configuration as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpop {
    /// The gateway's external origin (`https://api.example.com`): `htu` is built from it and
    /// the request path, never from `Host` or forwarding headers a client controls.
    pub external_origin: String,
    /// Proof algorithms accepted (asymmetric only; default ES256, EdDSA, RS256, PS256).
    #[serde(default = "default_algs")]
    pub algorithms: Vec<String>,
    /// How far `iat` may be from now, in seconds (default 60); also how long a `jti` is kept.
    #[serde(default = "default_window")]
    pub iat_window_seconds: u64,
}

fn default_algs() -> Vec<String> {
    ["ES256", "EdDSA", "RS256", "PS256"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_window() -> u64 {
    60
}

/// Compiled DPoP configuration.
#[derive(Debug, Clone)]
pub struct Dpop {
    /// Normalised external origin, no trailing slash.
    pub origin: String,
    /// Accepted proof algorithms.
    pub algorithms: Vec<Alg>,
    /// `iat` window.
    pub window: u64,
}

impl Dpop {
    /// Compiles; errors name the field.
    pub fn compile(raw: RawDpop) -> Result<Dpop, portcullis_core::config::ConfigError> {
        use portcullis_core::config::ConfigError;
        let origin = normalize_htu(&raw.external_origin)
            .filter(|o| o.ends_with('/') && o.matches('/').count() == 3)
            .map(|o| o.trim_end_matches('/').to_string())
            .ok_or_else(|| {
                ConfigError::new(
                    "external_origin",
                    "must be an origin like https://api.example.com (no path)",
                )
            })?;
        let mut algorithms = Vec::new();
        for (i, a) in raw.algorithms.iter().enumerate() {
            match Alg::parse(a) {
                Some(alg) if !alg.is_symmetric() => algorithms.push(alg),
                _ => {
                    return Err(ConfigError::new(
                        format!("algorithms[{i}]"),
                        format!("`{a}` is not an asymmetric JWS algorithm"),
                    ))
                }
            }
        }
        if raw.iat_window_seconds == 0 || raw.iat_window_seconds > 3600 {
            return Err(ConfigError::new(
                "iat_window_seconds",
                "must be between 1 and 3600",
            ));
        }
        Ok(Dpop {
            origin,
            algorithms,
            window: raw.iat_window_seconds,
        })
    }

    /// The `WWW-Authenticate` challenge.
    pub fn challenge(&self, error: &str) -> String {
        let algs: Vec<&str> = self.algorithms.iter().map(|a| a.name()).collect();
        format!("DPoP algs=\"{}\", error=\"{error}\"", algs.join(" "))
    }
}

/// Lower-cases scheme and host, drops the default port, the query and the fragment (RFC 9449
/// §4.3 point 9, RFC 3986 §6.2.2–6.2.3). `None` for anything that is not an absolute http(s) URI.
pub fn normalize_htu(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    if let Some(a) = authority.strip_suffix(default) {
        authority = a.to_string();
    }
    Some(format!("{scheme}://{authority}{path}"))
}

/// RFC 7638 JWK thumbprint (base64url SHA-256 of the required members, in order).
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let s = |k: &str| {
        jwk.get(k)
            .and_then(Value::as_str)
            .map(|v| Value::from(v).to_string())
    };
    let canonical = match jwk.get("kty").and_then(Value::as_str)? {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            s("crv")?,
            s("x")?,
            s("y")?
        ),
        "OKP" => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, s("crv")?, s("x")?),
        "RSA" => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, s("e")?, s("n")?),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// What the replay check needs: the proof's hash, and until when it must be remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayCheck {
    /// SHA-256 of (thumbprint, `jti`), first 16 bytes.
    pub id: [u8; 16],
    /// Unix second after which the entry may be dropped.
    pub until: u64,
}

/// The outcome of adding a proof to its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// First use: write this slot value (with the CAS read).
    Fresh(Vec<u8>),
    /// Seen before within the window.
    Replayed,
    /// The slot is full of unexpired entries: refuse rather than forget one.
    Full,
}

/// Adds `check` to a slot's current value, dropping expired entries.
pub fn replay_update(existing: Option<&[u8]>, check: &ReplayCheck, now: u64) -> ReplayOutcome {
    let mut out = Vec::with_capacity(existing.map_or(0, <[u8]>::len) + ENTRY);
    for e in existing.unwrap_or_default().chunks_exact(ENTRY) {
        let mut until = [0u8; 8];
        until.copy_from_slice(&e[16..]);
        if u64::from_be_bytes(until) < now {
            continue;
        }
        if e[..16] == check.id {
            return ReplayOutcome::Replayed;
        }
        out.extend_from_slice(e);
    }
    if out.len() / ENTRY >= SLOT_CAPACITY {
        return ReplayOutcome::Full;
    }
    out.extend_from_slice(&check.id);
    out.extend_from_slice(&check.until.to_be_bytes());
    ReplayOutcome::Fresh(out)
}

fn invalid(cfg: &Dpop, detail: &'static str) -> Denial {
    crate::decide::deny(AuthnReason::InvalidDpopProof, detail, Some(cfg))
}

const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Checks the `DPoP` proof of a request presenting `token` with `Authorization: DPoP`.
/// `cnf_jkt` is the token's `cnf.jkt`; `method` and `path` are as received.
pub fn check_proof(
    cfg: &Dpop,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    token: &str,
    cnf_jkt: Option<&str>,
    now: u64,
) -> Result<ReplayCheck, Denial> {
    // Exactly one proof, and one value in it.
    let proofs: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| *k == "dpop")
        .map(|(_, v)| v)
        .collect();
    let [proof] = proofs.as_slice() else {
        return Err(invalid(cfg, "Send exactly one DPoP proof."));
    };
    let proof = proof.trim();
    if proof.len() > 8192 || proof.contains(',') {
        return Err(invalid(cfg, "Send exactly one DPoP proof."));
    }
    let compact =
        jws::parse(proof).map_err(|_| invalid(cfg, "The DPoP proof is not a well-formed JWS."))?;
    let head_b64 = proof.split('.').next().unwrap_or("");
    let header: Value = jws::b64url(head_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid(cfg, "The DPoP proof header is not JSON."))?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(invalid(cfg, "The DPoP proof's typ must be dpop+jwt."));
    }
    if compact.alg.is_symmetric() || !cfg.algorithms.contains(&compact.alg) {
        return Err(invalid(cfg, "The DPoP proof's algorithm is not accepted."));
    }
    let jwk_value = header
        .get("jwk")
        .filter(|j| j.is_object())
        .ok_or_else(|| invalid(cfg, "The DPoP proof has no jwk."))?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk_value.get(m).is_some()) {
        return Err(invalid(
            cfg,
            "The DPoP proof's jwk contains private key material.",
        ));
    }
    // The proof's key verifies this one proof: a per-key table would cost more than it saves.
    let policy = KeyPolicy {
        allow_symmetric: false,
        precompute: false,
        ..KeyPolicy::default()
    };
    let jwk = Jwk::parse(jwk_value, &policy)
        .map_err(|_| invalid(cfg, "The DPoP proof's jwk is not an acceptable public key."))?;
    if !jwk.supports(compact.alg)
        || !jws::verify_signature(
            &jwk,
            compact.alg,
            compact.signing_input.as_bytes(),
            compact.signature(),
        )
    {
        return Err(invalid(cfg, "The DPoP proof's signature does not verify."));
    }
    let claims: serde_json::Map<String, Value> = serde_json::from_slice(compact.payload())
        .ok()
        .ok_or_else(|| invalid(cfg, "The DPoP proof's claims are not a JSON object."))?;
    if claims.get("htm").and_then(Value::as_str) != Some(method) {
        return Err(invalid(
            cfg,
            "The DPoP proof's htm does not match the request method.",
        ));
    }
    let path_only = path.split(['?', '#']).next().unwrap_or("/");
    let expected = normalize_htu(&format!("{}{path_only}", cfg.origin));
    let got = claims
        .get("htu")
        .and_then(Value::as_str)
        .and_then(normalize_htu);
    if got.is_none() || got != expected {
        return Err(invalid(
            cfg,
            "The DPoP proof's htu does not match the request URI.",
        ));
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(cfg, "The DPoP proof has no numeric iat."))?;
    if iat.abs_diff(now) > cfg.window {
        return Err(invalid(
            cfg,
            "The DPoP proof's iat is outside the accepted window.",
        ));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| invalid(cfg, "The DPoP proof has no usable jti."))?;
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
    if claims.get("ath").and_then(Value::as_str) != Some(ath.as_str()) {
        return Err(invalid(
            cfg,
            "The DPoP proof's ath does not match the access token.",
        ));
    }
    let jkt = thumbprint(jwk_value)
        .ok_or_else(|| invalid(cfg, "The DPoP proof's jwk has no thumbprint."))?;
    match cnf_jkt {
        Some(want) if want == jkt => {}
        Some(_) => {
            return Err(crate::decide::deny(
                AuthnReason::DpopKeyMismatch,
                "The access token is bound to a different key.",
                Some(cfg),
            ))
        }
        None => {
            return Err(crate::decide::deny(
                AuthnReason::TokenNotBound,
                "A DPoP proof needs a DPoP-bound access token.",
                Some(cfg),
            ))
        }
    }
    let digest = Sha256::new()
        .chain_update(jkt.as_bytes())
        .chain_update([0u8])
        .chain_update(jti.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    Ok(ReplayCheck {
        id,
        until: iat.max(now) + cfg.window,
    })
}

/// The denial for a replayed proof.
pub fn replayed(cfg: &Dpop) -> Denial {
    crate::decide::deny(
        AuthnReason::DpopProofReplayed,
        "This DPoP proof was already used.",
        Some(cfg),
    )
}

/// The shared-data key of the slot a proof is remembered in. The slot comes from a keyed hash
/// with the process secret: `jti` is chosen by the client, and a plain hash would let one
/// aim proofs at a single slot until it is full (then every proof landing there is refused).
pub fn replay_key(prefix: &str, secret: &Secret, check: &ReplayCheck) -> String {
    let slot = secret.hash(&[b"dpop-replay", &check.id]) % u128::from(SLOTS);
    format!("portcullis.{prefix}.dpop.{slot:04x}")
}

/// Records a proof's first use in shared data (CAS loop, bounded retries): `Ok` on first use,
/// the replay denial when seen before, and 503 when the store cannot answer or the slot is
/// full of unexpired proofs — the check fails closed.
pub fn record(
    store: &dyn SharedStore,
    secret: &Secret,
    prefix: &str,
    cfg: &Dpop,
    check: &ReplayCheck,
    now: u64,
) -> Result<(), Denial> {
    let key = replay_key(prefix, secret, check);
    let u = shared::update(store, &key, REPLAY_RETRIES, |v| {
        match replay_update(v, check, now) {
            ReplayOutcome::Fresh(next) => Step::Write(next, Ok(())),
            ReplayOutcome::Replayed => Step::Keep(Err(replayed(cfg))),
            ReplayOutcome::Full => Step::Keep(Err(replay_unavailable())),
        }
    });
    u.result.unwrap_or_else(|_| Err(replay_unavailable()))
}

/// CAS retries for a replay record: proofs in one slot contend only with each other.
pub const REPLAY_RETRIES: u32 = 32;

/// The denial when the replay store cannot answer (full slot, host error): fail closed.
pub fn replay_unavailable() -> Denial {
    Denial::of(
        AuthnReason::DpopReplayUnavailable,
        "DPoP proofs cannot be checked for replay right now.",
    )
    .with_header("retry-after", "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn htu_normalisation() {
        let n = |s| normalize_htu(s);
        assert_eq!(
            n("HTTPS://API.Example.com:443/a/b?x=1#f").as_deref(),
            Some("https://api.example.com/a/b")
        );
        assert_eq!(n("http://h:80"), Some("http://h/".into()));
        assert_eq!(n("http://h:8080/p").as_deref(), Some("http://h:8080/p"));
        assert_eq!(n("https://u@h/p"), None);
        assert_eq!(n("ftp://h/p"), None);
        assert_eq!(n("/relative"), None);
    }

    #[test]
    fn replay_slots_remember_expire_and_fill() {
        let c = |i: u8, until| ReplayCheck { id: [i; 16], until };
        let ReplayOutcome::Fresh(v1) = replay_update(None, &c(1, 100), 10) else {
            panic!()
        };
        assert_eq!(
            replay_update(Some(&v1), &c(1, 100), 50),
            ReplayOutcome::Replayed
        );
        // After expiry the entry is dropped (and the slot shrinks).
        let ReplayOutcome::Fresh(v2) = replay_update(Some(&v1), &c(2, 300), 200) else {
            panic!()
        };
        assert_eq!(v2.len(), ENTRY);
        let mut v = Vec::new();
        for i in 0..SLOT_CAPACITY {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let ReplayOutcome::Fresh(n) =
                replay_update(Some(&v), &ReplayCheck { id, until: 1000 }, 10)
            else {
                panic!()
            };
            v = n;
        }
        assert_eq!(
            replay_update(Some(&v), &c(9, 1000), 10),
            ReplayOutcome::Full
        );
    }
}

// Two attributes, not `cfg(all(test, …))`: clippy only sees a plain `cfg(test)` as test code.
#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod store_tests {
    use super::*;
    use portcullis_core::shared::memory::{Fault, MemoryStore};

    fn cfg() -> Dpop {
        Dpop::compile(RawDpop {
            external_origin: "https://api.example.com".into(),
            algorithms: default_algs(),
            iat_window_seconds: 60,
        })
        .unwrap()
    }

    #[test]
    fn a_proof_is_recorded_once_under_cas_mismatches_and_host_errors() {
        let (s, c) = (MemoryStore::new(), cfg());
        let secret = Secret::from_bytes([5; 16]);
        let check = ReplayCheck {
            id: [1; 16],
            until: 100,
        };
        let key = replay_key("authn", &secret, &check);
        // Another worker records a different proof between our read and our write.
        let other = ReplayCheck {
            id: [2; 16],
            until: 100,
        };
        let ReplayOutcome::Fresh(v) = replay_update(None, &other, 10) else {
            panic!()
        };
        s.fault_next_set(Fault::CompetingWrite(key.clone(), v));
        assert_eq!(record(&s, &secret, "authn", &c, &check, 10), Ok(()));
        assert_eq!(s.value(&key).unwrap().len(), 2 * ENTRY, "both proofs kept");
        let again = record(&s, &secret, "authn", &c, &check, 11).unwrap_err();
        assert_eq!(again.reason, "dpop_proof_replayed");
        // Exhausted retries and host errors fail closed.
        for _ in 0..=REPLAY_RETRIES {
            s.fault_next_set(Fault::Bump);
        }
        let third = ReplayCheck {
            id: [3; 16],
            until: 100,
        };
        let key3 = replay_key("authn", &secret, &third);
        s.raw_set(&key3, &[]);
        assert_eq!(
            record(&s, &secret, "authn", &c, &third, 10)
                .unwrap_err()
                .reason,
            "dpop_replay_unavailable"
        );
        s.fault_next_get(Fault::HostError);
        assert_eq!(
            record(&s, &secret, "authn", &c, &third, 10)
                .unwrap_err()
                .reason,
            "dpop_replay_unavailable"
        );
    }

    #[test]
    fn slots_depend_on_the_secret_so_jti_values_cannot_be_aimed() {
        let (a, b) = (Secret::from_bytes([1; 16]), Secret::from_bytes([2; 16]));
        let same = (0..64u8)
            .filter(|i| {
                let c = ReplayCheck {
                    id: [*i; 16],
                    until: 0,
                };
                replay_key("p", &a, &c) == replay_key("p", &b, &c)
            })
            .count();
        assert!(
            same < 4,
            "{same} of 64 proofs land in the same slot under two secrets"
        );
    }
}
