//! Remote JWKS: keys fetched from a provider's `jwks_uri` through an Envoy cluster, kept in
//! Envoy's shared data so one fetch serves every worker.
//!
//! Shared data holds two keys per provider: the last good document (`…jwks.<name>.doc`:
//! fetched-at seconds, then the JSON body) and a small control record (`…jwks.<name>.ctl`,
//! [`Ctl`]) that workers update with CAS. Every worker's root context ticks each second; the
//! one that wins the CAS on an expired lease does the fetch (single flight), the others only
//! read the document when its CAS changes. A token with an unknown `kid` sets a refetch
//! request, granted at most once per cooldown across all workers.
//!
//! Everything here is pure or works through the shared-data port; `filter.rs` makes the calls.

use crate::config::Provider;
use crate::jwk::{Jwk, KeyPolicy};
use portcullis_core::shared::{self, SharedStore, Step};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// `jwks_uri` settings as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteJwks {
    /// Envoy cluster that reaches the identity provider (defined in the Envoy config).
    pub cluster: String,
    /// The JWKS URL: its host becomes `:authority`, its path `:path`.
    pub url: String,
    /// Refresh period (default 300 s).
    #[serde(default = "d_refresh")]
    pub refresh_seconds: u64,
    /// Fetch timeout (default 2000 ms).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// After failed refreshes, last-good keys keep serving this long after their fetch
    /// (default 3600 s); then requests get 503 `jwks_unavailable`.
    #[serde(default = "d_staleness")]
    pub max_staleness_seconds: u64,
    /// At most one refetch for unknown `kid`s per this many seconds (default 30).
    #[serde(default = "d_cooldown")]
    pub unknown_kid_cooldown_seconds: u64,
    /// Largest JWKS body accepted (default 65536 bytes).
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    /// Most keys taken from one document (default 20).
    #[serde(default = "d_keys")]
    pub max_keys: usize,
}

fn d_refresh() -> u64 {
    300
}
fn d_timeout() -> u64 {
    2000
}
fn d_staleness() -> u64 {
    3600
}
fn d_cooldown() -> u64 {
    30
}
fn d_body() -> usize {
    65_536
}
fn d_keys() -> usize {
    20
}

/// Compiled `jwks_uri` settings.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    /// Cluster.
    pub cluster: String,
    /// `:authority`.
    pub authority: String,
    /// `:path`.
    pub path: String,
    /// Refresh period.
    pub refresh: u64,
    /// Timeout in ms.
    pub timeout_ms: u64,
    /// Maximum staleness.
    pub max_staleness: u64,
    /// Unknown-kid cooldown.
    pub cooldown: u64,
    /// Body cap.
    pub max_body_bytes: usize,
    /// Key cap.
    pub max_keys: usize,
}

impl RemoteJwks {
    /// Compiles; errors name the field.
    pub fn compile(raw: RawRemoteJwks) -> Result<Self, portcullis_core::config::ConfigError> {
        use portcullis_core::config::ConfigError;
        let rest = raw
            .url
            .strip_prefix("https://")
            .or_else(|| raw.url.strip_prefix("http://"))
            .ok_or_else(|| ConfigError::new("url", "must be an http(s) URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(ConfigError::new("url", "needs a host (and no user info)"));
        }
        if raw.cluster.is_empty() {
            return Err(ConfigError::new("cluster", "must name an Envoy cluster"));
        }
        if raw.refresh_seconds == 0
            || raw.timeout_ms == 0
            || raw.max_keys == 0
            || raw.max_body_bytes == 0
        {
            return Err(ConfigError::new(
                "",
                "refresh_seconds, timeout_ms, max_keys and max_body_bytes must be positive",
            ));
        }
        if raw.max_staleness_seconds < raw.refresh_seconds {
            return Err(ConfigError::new(
                "max_staleness_seconds",
                "must be at least refresh_seconds",
            ));
        }
        Ok(RemoteJwks {
            cluster: raw.cluster,
            authority: authority.to_string(),
            path: path.to_string(),
            refresh: raw.refresh_seconds,
            timeout_ms: raw.timeout_ms,
            max_staleness: raw.max_staleness_seconds,
            cooldown: raw.unknown_kid_cooldown_seconds,
            max_body_bytes: raw.max_body_bytes,
            max_keys: raw.max_keys,
        })
    }
}

/// Keys loaded from a document.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Usable keys.
    pub keys: Vec<Jwk>,
    /// Keys refused (weak, malformed, encryption keys, wrong algorithm family, over the cap).
    pub rejected: usize,
}

/// Parses a fetched JWKS for `provider`: each key on its own (a bad key is refused and counted,
/// the others load), at most `max_keys`; an error when nothing usable is left.
pub fn load_keys(
    provider: &Provider,
    remote: &RemoteJwks,
    body: &[u8],
) -> Result<Loaded, &'static str> {
    if body.len() > remote.max_body_bytes {
        return Err("JWKS body over max_body_bytes");
    }
    let doc: Value = serde_json::from_slice(body).map_err(|_| "JWKS is not JSON")?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no `keys` array")?;
    let policy = KeyPolicy {
        allow_symmetric: false,
        ..KeyPolicy::default()
    };
    let mut keys: Vec<Jwk> = Vec::new();
    let mut rejected = 0;
    for k in list {
        let usable = keys.len() < remote.max_keys;
        match Jwk::parse(k, &policy) {
            Ok(j) if usable && provider.algorithms.iter().any(|a| j.supports(*a)) => {
                let dup = j.kid.is_some() && keys.iter().any(|q| q.kid == j.kid);
                if dup {
                    rejected += 1;
                } else {
                    keys.push(j);
                }
            }
            _ => rejected += 1,
        }
    }
    if keys.is_empty() {
        return Err("JWKS has no usable key");
    }
    Ok(Loaded { keys, rejected })
}

/// One provider's keys as this worker last read them.
#[derive(Debug, Clone)]
pub struct KeySet {
    /// Keys.
    pub keys: Vec<Jwk>,
    /// When they were fetched (Unix seconds).
    pub fetched_at: u64,
    /// Shared-data CAS of the document they came from.
    pub cas: u32,
}

/// Remote key sets by provider index (empty for providers with inline keys).
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    sets: HashMap<usize, KeySet>,
}

impl KeyStore {
    /// The set of a provider, if fetched.
    pub fn get(&self, provider: usize) -> Option<&KeySet> {
        self.sets.get(&provider)
    }

    /// Replaces a provider's set.
    pub fn set(&mut self, provider: usize, set: KeySet) {
        self.sets.insert(provider, set);
    }
}

/// Encodes the shared document: fetched-at, then the body.
pub fn encode_doc(fetched_at: u64, body: &[u8]) -> Vec<u8> {
    let mut v = fetched_at.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Decodes the shared document.
pub fn decode_doc(v: &[u8]) -> Option<(u64, &[u8])> {
    let (head, body) = v.split_at_checked(8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(head);
    Some((u64::from_be_bytes(b), body))
}

/// The fetch control record every worker shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ctl {
    /// A fetch is in flight until then (Unix seconds); 0 when none.
    pub lease_until: u64,
    /// Start of the last fetch attempt.
    pub last_attempt: u64,
    /// End of the last successful fetch (0: never).
    pub last_success: u64,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// A request saw an unknown `kid` and asked for a refetch.
    pub refetch_requested: bool,
    /// When the last unknown-kid refetch started.
    pub last_kid_refetch: u64,
}

impl Ctl {
    /// 37 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(37);
        for n in [self.lease_until, self.last_attempt, self.last_success] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v.extend_from_slice(&self.failures.to_be_bytes());
        v.push(u8::from(self.refetch_requested));
        v.extend_from_slice(&self.last_kid_refetch.to_be_bytes());
        v
    }

    /// Decodes; a missing or damaged record reads as the initial state.
    pub fn decode(v: Option<&[u8]>) -> Ctl {
        let Some(v) = v.filter(|v| v.len() == 37) else {
            return Ctl::default();
        };
        let u = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let mut f = [0u8; 4];
        f.copy_from_slice(&v[24..28]);
        Ctl {
            lease_until: u(0),
            last_attempt: u(8),
            last_success: u(16),
            failures: u32::from_be_bytes(f),
            refetch_requested: v[28] != 0,
            last_kid_refetch: u(29),
        }
    }

    fn backoff(&self, r: &RemoteJwks) -> u64 {
        // 1, 2, 4 … seconds between failed attempts, never longer than the refresh period
        // (nor than 30 s): a recovered IdP is seen soon, a down one is asked once at a time.
        (1u64 << self.failures.min(5)).min(r.refresh.clamp(1, 30))
    }

    /// Whether a fetch should start now (no fetch in flight, and one is due).
    pub fn due(&self, r: &RemoteJwks, now: u64) -> bool {
        if self.lease_until > now {
            return false;
        }
        let retry_ok = self.failures == 0 || now >= self.last_attempt + self.backoff(r);
        if self.last_success == 0 {
            return retry_ok;
        }
        if self.refetch_requested && now >= self.last_kid_refetch + r.cooldown {
            return true;
        }
        now >= self.last_success + r.refresh && retry_ok
    }

    /// The record that claims the fetch (written with CAS: one worker wins).
    pub fn claim(&self, r: &RemoteJwks, now: u64) -> Ctl {
        let mut c = *self;
        c.lease_until = now + r.timeout_ms.div_ceil(1000) + 2;
        c.last_attempt = now;
        if c.refetch_requested {
            c.refetch_requested = false;
            c.last_kid_refetch = now;
        }
        c
    }

    /// After a successful fetch.
    pub fn succeeded(&self, now: u64) -> Ctl {
        Ctl {
            lease_until: 0,
            last_success: now,
            failures: 0,
            ..*self
        }
    }

    /// After a failed fetch.
    pub fn failed(&self) -> Ctl {
        Ctl {
            lease_until: 0,
            failures: self.failures.saturating_add(1),
            ..*self
        }
    }

    /// An unknown `kid` was seen: the record asking for a refetch, or `None` when one is
    /// already pending or the cooldown has not passed (a flood of random kids costs nothing).
    pub fn with_refetch(&self, r: &RemoteJwks, now: u64) -> Option<Ctl> {
        if self.refetch_requested || now < self.last_kid_refetch + r.cooldown {
            return None;
        }
        Some(Ctl {
            refetch_requested: true,
            ..*self
        })
    }
}

/// CAS retries of every update of a provider's control record or document (workers contend
/// once a second at most).
pub const CTL_RETRIES: u32 = 4;

/// Shared-data keys of one provider's remote JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedKeys {
    /// The last good document.
    pub doc: String,
    /// The control record.
    pub ctl: String,
}

impl SharedKeys {
    /// The keys of `provider` under a filter's stat prefix.
    pub fn new(stat_prefix: &str, provider: &str) -> Self {
        SharedKeys {
            doc: format!("portcullis.{stat_prefix}.jwks.{provider}.doc"),
            ctl: format!("portcullis.{stat_prefix}.jwks.{provider}.ctl"),
        }
    }
}

/// Asks for a refetch after an unknown `kid`: granted once per cooldown across workers; a
/// store that cannot answer grants nothing (the regular refresh still comes).
pub fn request_refetch(store: &dyn SharedStore, keys: &SharedKeys, r: &RemoteJwks, now: u64) {
    let _ = shared::update(store, &keys.ctl, CTL_RETRIES, |v| {
        match Ctl::decode(v).with_refetch(r, now) {
            Some(next) => Step::Write(next.encode(), ()),
            None => Step::Keep(()),
        }
    });
}

/// Claims the fetch when one is due: `Some` on exactly one worker (the CAS winner), which then
/// performs it and must report with [`record_fetch`].
pub fn claim_fetch(
    store: &dyn SharedStore,
    keys: &SharedKeys,
    r: &RemoteJwks,
    now: u64,
) -> Option<Ctl> {
    shared::update(store, &keys.ctl, CTL_RETRIES, |v| {
        let ctl = Ctl::decode(v);
        if ctl.due(r, now) {
            let claimed = ctl.claim(r, now);
            Step::Write(claimed.encode(), Some(claimed))
        } else {
            Step::Keep(None)
        }
    })
    .result
    .ok()
    .flatten()
}

/// Records a fetch's outcome: on success the document (the body, stamped `now`) is published
/// first, then the control record is released as succeeded; on failure only the control record
/// changes (last-good keys stay). `false` when the store could not take it.
pub fn record_fetch(
    store: &dyn SharedStore,
    keys: &SharedKeys,
    body: Result<&[u8], ()>,
    now: u64,
) -> bool {
    if let Ok(b) = body {
        let doc = encode_doc(now, b);
        let u = shared::update(store, &keys.doc, CTL_RETRIES, |_| {
            Step::Write(doc.clone(), ())
        });
        if u.result.is_err() {
            return false;
        }
    }
    shared::update(store, &keys.ctl, CTL_RETRIES, |v| {
        let ctl = Ctl::decode(v);
        let next = if body.is_ok() {
            ctl.succeeded(now)
        } else {
            ctl.failed()
        };
        Step::Write(next.encode(), ())
    })
    .result
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::shared::memory::{Fault, MemoryStore};

    fn remote() -> RemoteJwks {
        RemoteJwks::compile(RawRemoteJwks {
            cluster: "idp".into(),
            url: "https://idp.example/.well-known/jwks.json".into(),
            refresh_seconds: 300,
            timeout_ms: 2000,
            max_staleness_seconds: 3600,
            unknown_kid_cooldown_seconds: 30,
            max_body_bytes: 65536,
            max_keys: 20,
        })
        .unwrap()
    }

    #[test]
    fn fetch_schedule_single_flight_backoff_and_cooldown() {
        let r = remote();
        let c = Ctl::default();
        assert!(c.due(&r, 1000), "first fetch at once");
        let claimed = c.claim(&r, 1000);
        assert!(!claimed.due(&r, 1001), "a fetch is in flight");
        let failed = claimed.failed();
        assert!(!failed.due(&r, 1001) && failed.due(&r, 1002), "backoff 2 s");
        let ok = failed.claim(&r, 1002).succeeded(1002);
        assert!(!ok.due(&r, 1200) && ok.due(&r, 1302), "refresh period");
        // Unknown kid: one request per cooldown, granted once.
        let asked = ok.with_refetch(&r, 1010).unwrap();
        assert_eq!(asked.with_refetch(&r, 1011), None, "already pending");
        assert!(asked.due(&r, 1010));
        let fetching = asked.claim(&r, 1010);
        let done = fetching.succeeded(1010);
        assert_eq!(done.with_refetch(&r, 1020), None, "cooldown");
        assert!(done.with_refetch(&r, 1040).is_some());
        assert_eq!(Ctl::decode(Some(&done.encode())), done);
        assert_eq!(Ctl::decode(Some(b"junk")), Ctl::default());
        // A holder that died: the lease expires.
        assert!(c.claim(&r, 1000).due(&r, 1000 + 5));
    }

    #[test]
    fn documents_round_trip() {
        let d = encode_doc(42, b"{\"keys\":[]}");
        assert_eq!(decode_doc(&d), Some((42, &b"{\"keys\":[]}"[..])));
        assert_eq!(decode_doc(b"short"), None);
    }

    #[test]
    fn one_worker_claims_under_cas_races_and_outcomes_land() {
        let (store, r) = (MemoryStore::new(), remote());
        let k = SharedKeys::new("authn", "corp");
        // Another worker claims between our read and our write: we lose, and see its lease.
        let theirs = Ctl::default().claim(&r, 1000).encode();
        store.fault_next_set(Fault::CompetingWrite(k.ctl.clone(), theirs));
        assert_eq!(
            claim_fetch(&store, &k, &r, 1000),
            None,
            "the lease is taken"
        );
        // After the lease expires we claim; a bump on our write is retried and still wins.
        store.fault_next_set(Fault::Bump);
        assert!(claim_fetch(&store, &k, &r, 1010).is_some());
        assert_eq!(claim_fetch(&store, &k, &r, 1010), None, "single flight");
        // The outcome lands despite a mismatch on each write.
        store.fault_next_set(Fault::Bump);
        store.fault_next_set(Fault::Bump);
        assert!(record_fetch(&store, &k, Ok(b"{\"keys\":[]}"), 1011));
        assert_eq!(decode_doc(&store.value(&k.doc).unwrap()).unwrap().0, 1011);
        let ctl = Ctl::decode(store.value(&k.ctl).as_deref());
        assert_eq!((ctl.lease_until, ctl.last_success), (0, 1011));
        // A refetch request races too, and is granted once.
        store.fault_next_set(Fault::Bump);
        request_refetch(&store, &k, &r, 1100);
        assert!(Ctl::decode(store.value(&k.ctl).as_deref()).refetch_requested);
        // Retries are bounded: an endless race gives up without writing, and host errors too.
        for _ in 0..=CTL_RETRIES {
            store.fault_next_set(Fault::Bump);
        }
        assert!(!record_fetch(&store, &k, Err(()), 1200));
        store.fault_next_get(Fault::HostError);
        assert_eq!(claim_fetch(&store, &k, &r, 5000), None);
    }
}
