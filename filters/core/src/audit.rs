//! The audit trail: each filter's part of the one record Envoy's access log writes per request,
//! published as filter state (`portcullis.audit.*`, which no client can write), the keyed hash
//! that links a caller's records without naming the caller, and the aggregator that keeps
//! denials from writing one application-log line each.
//!
//! Values are flat strings: Envoy's `%FILTER_STATE(wasm.portcullis.audit.<field>:PLAIN)%`
//! reads each one into its own JSON field (a wasm filter-state value is bytes to Envoy; its
//! `TYPED` form would be a base64 `BytesValue`, not an object). Nothing written here may carry
//! a token, a key, a claim value or personal data: names, codes, counts and keyed hashes only.

use crate::deny::Denial;
use crate::port::Host;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Filter-state prefix of every audit field (Envoy stores them as `wasm.portcullis.audit.*`).
pub const PREFIX: &str = "portcullis.audit.";

/// Shortest audit hash key accepted (bytes): 256 bits, the HMAC-SHA-256 block strength.
pub const MIN_KEY_BYTES: usize = 32;

/// Bytes of HMAC output kept in a hash (hex-encoded to 32 characters).
const HASH_BYTES: usize = 16;

/// HMAC-SHA-256 (RFC 2104) of the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The key audit hashes are made with (configured, never logged).
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey(Vec<u8>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    /// A key from its hex form; at least [`MIN_KEY_BYTES`] bytes.
    pub fn from_hex(hex: &str) -> Result<Self, &'static str> {
        let hex = hex.trim();
        if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("must be hex (e.g. `openssl rand -hex 32`)");
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect();
        if bytes.len() < MIN_KEY_BYTES {
            return Err("must hold at least 32 bytes (64 hex characters)");
        }
        Ok(HashKey(bytes))
    }

    /// The keyed hash of one identifier of a kind (`sub`, `client`, `ip`), as 32 hex
    /// characters. The kind and the scope (the issuer, for subjects) are part of the input, so
    /// equal strings of different kinds or issuers never link.
    pub fn hash(&self, kind: &str, scope: &str, id: &str) -> String {
        let mac = hmac_sha256(
            &self.0,
            &[
                kind.as_bytes(),
                b"\0",
                scope.as_bytes(),
                b"\0",
                id.as_bytes(),
            ],
        );
        mac[..HASH_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Writes one audit field (`portcullis.audit.<field>`). A host that refuses costs the record a
/// field, never the request.
pub fn set<H: Host>(host: &H, field: &str, value: &str) {
    let key = format!("{PREFIX}{field}");
    if host.set_property(&[&key], value.as_bytes()).is_err() {
        log::debug!("portcullis: could not record audit field {field}");
    }
}

/// Whether a filter writes its own part of the audit record: on only where the access log
/// reads it (`portcullis render --audit-log` sets each filter's `audit: true`). Off, the
/// request path makes none of these host calls — about a dozen `set_property` calls across the
/// chain, which `make bench` saw as tens of µs per request. A denial is recorded either way
/// ([`denied`]): which filter refused, and why, is never optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorder {
    on: bool,
}

impl Recorder {
    /// A recorder that writes when `on`.
    pub fn new(on: bool) -> Self {
        Recorder { on }
    }

    /// True when the filter's fields are written.
    pub fn is_on(self) -> bool {
        self.on
    }

    /// [`set`], when on.
    pub fn set<H: Host>(self, host: &H, field: &str, value: &str) {
        if self.on {
            set(host, field, value);
        }
    }

    /// [`upstream_status`], when on.
    pub fn upstream_status<H: Host>(self, host: &H) {
        if self.on {
            upstream_status(host);
        }
    }
}

/// Records which filter decided a denial, and why (`shadow`: a shadow-mode filter that would
/// have denied; the request went on).
pub fn denied<H: Host>(host: &H, filter: &str, denial: &Denial, shadow: bool) {
    if shadow {
        set(host, "shadow", &format!("{filter}:{}", denial.reason));
        return;
    }
    set(host, "decision", "deny");
    set(host, "decided_by", filter);
    set(host, "reason", denial.reason);
}

/// Records the upstream's own status (`upstream_status`) from the first response headers that
/// came from an upstream connection, so a response a filter later replaced (a 502 for an
/// unmaskable body) still shows what the upstream answered. Call from the filter closest to the
/// router.
pub fn upstream_status<H: Host>(host: &H) {
    if host.property(&["upstream", "address"]).is_none()
        || host
            .property(&[&format!("{PREFIX}upstream_status")])
            .is_some()
    {
        return;
    }
    if let Some(status) = host.response_header(":status") {
        set(host, "upstream_status", &status);
    }
}

/// Counts by rule name in one compact field: `email:2,phone:1` (names sorted).
pub fn counts(by_name: &BTreeMap<String, u64>) -> String {
    by_name
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Denials of one filter on one worker, counted by reason and written as one application-log
/// line per window instead of one per request (a replay flood would otherwise be a log flood).
/// The first denial after a quiet window is written at once; the rest of a window is written
/// by the first denial (or [`DenialSummary::due`] check) after the window ends.
#[derive(Debug, Clone, Default)]
pub struct DenialSummary {
    /// When the open window began (ns), if one is open.
    since: Option<u64>,
    /// Denials in the open window, by reason.
    counts: BTreeMap<&'static str, u64>,
}

/// Length of a summary window.
pub const SUMMARY_WINDOW_NANOS: u64 = 10_000_000_000;

/// One summary line's content: denials by reason over `seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Total denials.
    pub total: u64,
    /// Seconds the counts cover (0: a first denial written at once).
    pub seconds: u64,
    /// `reason count` pairs, most frequent first.
    pub by_reason: Vec<(&'static str, u64)>,
}

impl Summary {
    /// The line (reason codes and counts only).
    pub fn line(&self, filter: &str, verb: &str) -> String {
        let parts: Vec<String> = self
            .by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        // `denials` / `shadow denials`, singular for one.
        let noun = if self.total == 1 {
            verb.strip_suffix('s').unwrap_or(verb)
        } else {
            verb
        };
        if self.seconds == 0 {
            format!(
                "portcullis {filter}: {} {noun}: {} (further {verb} are summarised every {} s; per-request detail in the access log)",
                self.total,
                parts.join(", "),
                SUMMARY_WINDOW_NANOS / 1_000_000_000
            )
        } else {
            format!(
                "portcullis {filter}: {} {noun} in the last {} s: {}",
                self.total,
                self.seconds,
                parts.join(", ")
            )
        }
    }
}

impl DenialSummary {
    /// Counts a denial at `now` (ns); returns a summary to write when one is due.
    pub fn record(&mut self, reason: &'static str, now: u64) -> Option<Summary> {
        *self.counts.entry(reason).or_insert(0) += 1;
        match self.since {
            // A quiet worker: the first denial is news, written at once.
            None => {
                self.since = Some(now);
                self.take(0)
            }
            Some(_) => self.due(now),
        }
    }

    /// True while a window is open (a denial was counted and its window has not been
    /// closed): only then can [`DenialSummary::due`] have anything to say.
    pub fn is_open(&self) -> bool {
        self.since.is_some()
    }

    /// The window's summary if the window is over and holds anything; the window closes.
    pub fn due(&mut self, now: u64) -> Option<Summary> {
        let since = self.since?;
        if now.saturating_sub(since) < SUMMARY_WINDOW_NANOS {
            return None;
        }
        if self.counts.is_empty() {
            // A whole window without denials: the next one is news again.
            self.since = None;
            return None;
        }
        self.since = Some(now);
        self.take(now.saturating_sub(since) / 1_000_000_000)
    }

    fn take(&mut self, seconds: u64) -> Option<Summary> {
        let mut by_reason: Vec<(&'static str, u64)> =
            std::mem::take(&mut self.counts).into_iter().collect();
        by_reason.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let total = by_reason.iter().map(|(_, n)| n).sum();
        (total > 0).then_some(Summary {
            total,
            seconds,
            by_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex(&hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn hashes_link_one_identifier_and_separate_kinds_scopes_and_keys() {
        let k = HashKey::from_hex(&"11".repeat(32)).unwrap();
        let a = k.hash("sub", "https://idp", "alice");
        assert_eq!(a.len(), 32);
        assert_eq!(a, k.hash("sub", "https://idp", "alice"));
        assert_ne!(a, k.hash("sub", "https://idp", "bob"));
        assert_ne!(a, k.hash("sub", "https://other", "alice"));
        assert_ne!(a, k.hash("client", "https://idp", "alice"));
        // Part boundaries matter.
        assert_ne!(k.hash("sub", "a", "bc"), k.hash("sub", "ab", "c"));
        let other = HashKey::from_hex(&"22".repeat(32)).unwrap();
        assert_ne!(a, other.hash("sub", "https://idp", "alice"));
        assert!(!a.contains("alice"));
    }

    #[test]
    fn short_or_malformed_keys_are_refused() {
        assert!(HashKey::from_hex(&"ab".repeat(31)).is_err());
        assert!(HashKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(HashKey::from_hex(&"a".repeat(65)).is_err());
        assert!(HashKey::from_hex(&format!(" {}\n", "ab".repeat(32))).is_ok());
        assert_eq!(
            format!("{:?}", HashKey::from_hex(&"ab".repeat(32)).unwrap()),
            "HashKey(..)"
        );
    }

    #[test]
    fn first_denial_is_written_then_one_summary_per_window() {
        let mut s = DenialSummary::default();
        let first = s.record("dpop_proof_replayed", 100 * S).unwrap();
        assert_eq!((first.total, first.seconds), (1, 0));
        assert!(first
            .line("authn", "denials")
            .starts_with("portcullis authn: 1 denial: dpop_proof_replayed 1 (further denials"));
        // A flood inside the window writes nothing.
        for i in 0..9_999 {
            assert_eq!(s.record("dpop_proof_replayed", 100 * S + i * 900_000), None);
        }
        assert_eq!(s.record("token_expired", 105 * S), None);
        // The first denial after the window ends writes the window.
        let sum = s.record("token_expired", 110 * S).unwrap();
        assert_eq!(sum.total, 10_001);
        assert_eq!(sum.seconds, 10);
        assert_eq!(
            sum.by_reason,
            vec![("dpop_proof_replayed", 9_999), ("token_expired", 2)]
        );
        let line = sum.line("authn", "denials");
        assert_eq!(
            line,
            "portcullis authn: 10001 denials in the last 10 s: dpop_proof_replayed 9999, token_expired 2"
        );
    }

    #[test]
    fn a_pending_window_is_written_when_due_and_quiet_resets() {
        let mut s = DenialSummary::default();
        assert!(s.record("missing_token", 0).is_some());
        assert_eq!(s.record("missing_token", S), None);
        assert_eq!(s.due(5 * S), None);
        let sum = s.due(12 * S).unwrap();
        assert_eq!((sum.total, sum.seconds), (1, 12));
        // A window with nothing in it closes; the next denial is news again.
        assert_eq!(s.due(30 * S), None);
        assert_eq!(s.record("missing_token", 31 * S).unwrap().seconds, 0);
        assert_eq!(DenialSummary::default().due(99 * S), None);
    }

    #[test]
    fn counts_are_compact_and_sorted() {
        let mut m = BTreeMap::new();
        m.insert("phone".to_string(), 1);
        m.insert("email".to_string(), 2);
        m.insert("ssn".to_string(), 0);
        assert_eq!(counts(&m), "email:2,phone:1");
        assert_eq!(counts(&BTreeMap::new()), "");
    }
}
