//! Verified-token cache, one per VM (per worker): a keyed 128-bit hash of the token to what
//! verification established, so repeat requests skip the signature check. Bounded LRU; an entry
//! is never served past the token's `exp` (plus the provider's skew, the same bound
//! verification uses).

use lru::LruCache;
use portcullis_core::identity::Identity;
use sha2::{Digest, Sha256};
use siphasher::sip128::{Hasher128, SipHasher24};
use std::hash::Hasher;
use std::num::NonZeroUsize;
use std::rc::Rc;

/// What a successful verification established about a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Index of the provider that issued it.
    pub provider: usize,
    /// Last second at which the token is still accepted (`exp + skew`); `u64::MAX` without `exp`.
    pub valid_until: u64,
    /// The identity built from its claims.
    pub identity: Identity,
    /// Values of the claims route bindings refer to (only those are kept).
    pub bound: Vec<(String, serde_json::Value)>,
    /// RFC 8705 certificate binding: `cnf["x5t#S256"]`, the base64url SHA-256 of the client
    /// certificate the token was issued to.
    pub cnf_x5t: Option<String>,
    /// RFC 9449 key binding: `cnf.jkt`, the thumbprint of the key DPoP proofs must be signed with.
    pub cnf_jkt: Option<String>,
}

/// A SHA-256 digest (API keys are configured by theirs).
pub type TokenDigest = [u8; 32];

/// SHA-256 of a token or key.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// A cache key: 128 bits derived from the token, so the cache never holds the token itself.
pub type CacheKey = [u8; 16];

/// How tokens become cache keys. Two tokens with one key would share an entry, so a key must be
/// impossible to collide on purpose: a forged token landing on a verified one's entry would be
/// accepted without a signature check.
#[derive(Clone)]
enum Keyer {
    /// SipHash-2-4 (128-bit output) under a secret random key of this VM: a PRF, so without the
    /// key a collision with a given token takes about 2^128 tries, and it costs a small fraction
    /// of SHA-256 on a typical token (tests/bench/README.md, "Profiling"). The key must stay
    /// secret: with a known key SipHash collisions can be built.
    Secret(SipHasher24),
    /// SHA-256, truncated: when no secure random source gave a key.
    Sha256,
    /// No hash at all: the cache is off (capacity 0), so a key is never stored or looked up,
    /// and every token verifies in full.
    Off,
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str(match self {
            Keyer::Secret(_) => "Keyer::Secret",
            Keyer::Sha256 => "Keyer::Sha256",
            Keyer::Off => "Keyer::Off",
        })
    }
}

impl Keyer {
    fn key(&self, token: &str) -> CacheKey {
        match self {
            Keyer::Secret(h) => {
                let mut h = *h;
                h.write(token.as_bytes());
                h.finish128().as_bytes()
            }
            Keyer::Sha256 => {
                let d = digest(token);
                let mut k = [0u8; 16];
                k.copy_from_slice(&d[..16]);
                k
            }
            Keyer::Off => [0; 16],
        }
    }
}

/// Bounded LRU of verified tokens, and a smaller one of tokens whose signature failed: a
/// forged token replayed in a flood costs one signature check, not one per request.
pub struct TokenCache {
    keyer: Keyer,
    inner: Option<LruCache<CacheKey, Rc<Verified>>>,
    rejected: Option<LruCache<CacheKey, ()>>,
}

/// Most remembered bad signatures per worker.
pub const MAX_REJECTED: usize = 4096;

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables it), keyed by SHA-256.
    pub fn new(capacity: usize) -> Self {
        Self::with_keyer(capacity, Keyer::Sha256)
    }

    /// The same, keyed by SipHash under `secret` (16 bytes from a secure random source, never
    /// shown to anyone): how the filter builds it.
    pub fn keyed(capacity: usize, secret: [u8; 16]) -> Self {
        Self::with_keyer(capacity, Keyer::Secret(SipHasher24::new_with_key(&secret)))
    }

    fn with_keyer(capacity: usize, keyer: Keyer) -> Self {
        TokenCache {
            // Both caches are off together (capacity 0): no key is ever used, so none is hashed
            // (it was a keyed hash of the whole token on every request for nothing).
            keyer: if capacity == 0 { Keyer::Off } else { keyer },
            inner: NonZeroUsize::new(capacity).map(LruCache::new),
            rejected: NonZeroUsize::new(capacity.min(MAX_REJECTED)).map(LruCache::new),
        }
    }

    /// The cache key of a token.
    pub fn key(&self, token: &str) -> CacheKey {
        self.keyer.key(token)
    }

    /// The entry for a token, if present and still valid at `now`; an expired entry is evicted.
    pub fn get(&mut self, key: &CacheKey, now: u64) -> Option<Rc<Verified>> {
        let cache = self.inner.as_mut()?;
        let hit = cache.get(key)?.clone();
        if now > hit.valid_until {
            cache.pop(key);
            return None;
        }
        Some(hit)
    }

    /// True when this exact token already failed signature verification.
    pub fn is_rejected(&mut self, key: &CacheKey) -> bool {
        self.rejected.as_mut().is_some_and(|c| c.get(key).is_some())
    }

    /// Remembers a token whose signature failed (the digest covers header, claims and signature,
    /// so a different signature or key id is a different entry).
    pub fn reject(&mut self, key: CacheKey) {
        if let Some(c) = self.rejected.as_mut() {
            c.put(key, ());
        }
    }

    /// Stores a verified token.
    pub fn put(&mut self, key: CacheKey, v: Rc<Verified>) {
        if let Some(c) = self.inner.as_mut() {
            c.put(key, v);
        }
    }

    /// Drops every entry (e.g. when a provider's key set changed: a removed key must not keep
    /// vouching for tokens verified with it).
    pub fn clear(&mut self) {
        if let Some(c) = self.inner.as_mut() {
            c.clear();
        }
        if let Some(c) = self.rejected.as_mut() {
            c.clear();
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, LruCache::len)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(until: u64) -> Verified {
        Verified {
            provider: 0,
            valid_until: until,
            identity: Identity::anonymous(),
            bound: vec![],
            cnf_x5t: None,
            cnf_jkt: None,
        }
    }

    #[test]
    fn entries_never_outlive_their_token() {
        let mut c = TokenCache::new(4);
        let k = c.key("t");
        c.put(k, Rc::new(v(100)));
        assert!(c.get(&k, 100).is_some());
        assert!(c.get(&k, 101).is_none());
        assert!(c.is_empty(), "an expired entry is evicted");
    }

    #[test]
    fn capacity_is_bounded_and_lru() {
        let mut c = TokenCache::keyed(2, [7; 16]);
        let (a, b, cc) = (c.key("a"), c.key("b"), c.key("c"));
        c.put(a, Rc::new(v(10)));
        c.put(b, Rc::new(v(10)));
        assert!(c.get(&a, 0).is_some());
        c.put(cc, Rc::new(v(10)));
        assert_eq!(c.len(), 2);
        assert!(c.get(&b, 0).is_none(), "least recently used went first");
        let mut off = TokenCache::keyed(0, [7; 16]);
        let k = off.key("a");
        off.put(k, Rc::new(v(10)));
        off.reject(k);
        assert!(off.get(&k, 0).is_none() && !off.is_rejected(&k) && off.is_empty());
    }

    #[test]
    fn keys_depend_on_the_secret_and_never_collide_in_practice() {
        let one = TokenCache::keyed(1, [1; 16]);
        let two = TokenCache::keyed(1, [2; 16]);
        let sha = TokenCache::new(1);
        assert_eq!(one.key("token"), one.key("token"), "stable within a VM");
        assert_ne!(
            one.key("token"),
            two.key("token"),
            "another VM's secret, another key"
        );
        assert_ne!(one.key("token"), sha.key("token"));
        assert_eq!(sha.key("token")[..], digest("token")[..16]);
        // Tokens differing in one character (a forged signature's last byte) or in length.
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000u32 {
            assert!(seen.insert(one.key(&format!("eyJhbGciOiJIUzI1NiJ9.e30.sig{i}"))));
        }
        assert!(seen.insert(one.key("")));
        assert_eq!(
            format!("{:?}", one.keyer),
            "Keyer::Secret",
            "Debug never shows the key"
        );
    }
}
