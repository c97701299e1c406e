//! Verified-token cache, one per VM (per worker): SHA-256 of the token to what verification
//! established, so repeat requests skip the signature check. Bounded LRU; an entry is never
//! served past the token's `exp` (plus the provider's skew, the same bound verification uses).

use lru::LruCache;
use portcullis_core::identity::Identity;
use sha2::{Digest, Sha256};
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

/// A cache key: the token's SHA-256, so the cache never holds the token itself.
pub type TokenDigest = [u8; 32];

/// Hashes a token for the cache.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Bounded LRU of verified tokens, and a smaller one of tokens whose signature failed: a
/// forged token replayed in a flood costs one signature check, not one per request.
pub struct TokenCache {
    inner: Option<LruCache<TokenDigest, Rc<Verified>>>,
    rejected: Option<LruCache<TokenDigest, ()>>,
}

/// Most remembered bad signatures per worker.
pub const MAX_REJECTED: usize = 4096;

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            inner: NonZeroUsize::new(capacity).map(LruCache::new),
            rejected: NonZeroUsize::new(capacity.min(MAX_REJECTED)).map(LruCache::new),
        }
    }

    /// The entry for a token, if present and still valid at `now`; an expired entry is evicted.
    pub fn get(&mut self, key: &TokenDigest, now: u64) -> Option<Rc<Verified>> {
        let cache = self.inner.as_mut()?;
        let hit = cache.get(key)?.clone();
        if now > hit.valid_until {
            cache.pop(key);
            return None;
        }
        Some(hit)
    }

    /// True when this exact token already failed signature verification.
    pub fn is_rejected(&mut self, key: &TokenDigest) -> bool {
        self.rejected.as_mut().is_some_and(|c| c.get(key).is_some())
    }

    /// Remembers a token whose signature failed (the digest covers header, claims and signature,
    /// so a different signature or key id is a different entry).
    pub fn reject(&mut self, key: TokenDigest) {
        if let Some(c) = self.rejected.as_mut() {
            c.put(key, ());
        }
    }

    /// Stores a verified token.
    pub fn put(&mut self, key: TokenDigest, v: Rc<Verified>) {
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
        let k = digest("t");
        c.put(k, Rc::new(v(100)));
        assert!(c.get(&k, 100).is_some());
        assert!(c.get(&k, 101).is_none());
        assert!(c.is_empty(), "an expired entry is evicted");
    }

    #[test]
    fn capacity_is_bounded_and_lru() {
        let mut c = TokenCache::new(2);
        c.put(digest("a"), Rc::new(v(10)));
        c.put(digest("b"), Rc::new(v(10)));
        assert!(c.get(&digest("a"), 0).is_some());
        c.put(digest("c"), Rc::new(v(10)));
        assert_eq!(c.len(), 2);
        assert!(
            c.get(&digest("b"), 0).is_none(),
            "least recently used went first"
        );
        assert!(TokenCache::new(0).get(&digest("a"), 0).is_none());
    }
}
