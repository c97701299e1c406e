//! Atomic updates of limit state through a narrow store port: get → compute → set-with-CAS,
//! retried on mismatch up to a bound. Envoy's shared data implements the port in the adapter;
//! a fleet-wide backend (Envoy's rate limit service) would implement the same trait.
//!
//! Creation needs care: the host ignores the CAS value on a key that does not exist yet, so two
//! workers could both "create" a bucket and both start from full. A new key is therefore written
//! with CAS [`CREATE_CAS`]: on a missing key the host ignores it (the write creates the key); if
//! another worker created the key in the meantime its real CAS differs, the write fails with a
//! mismatch, and the loop starts over from the stored state.

use crate::bucket::{Limit, Outcome, State};

/// CAS used when creating a key; never the CAS of an existing key in practice (the host's CAS
/// counter would have to land on exactly this value for this key at this moment).
pub const CREATE_CAS: u32 = u32::MAX;

/// Why a store call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the key since our read.
    CasMismatch,
    /// The host refused the call.
    Unavailable,
}

/// The state store: Envoy shared data, or a fake in tests.
pub trait Store {
    /// The value and CAS of a key (`None` when absent).
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError>;
    /// Writes a value if the key's CAS still equals `cas`.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// Why an atomic take gave no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeError {
    /// Every attempt lost the CAS race.
    Contended,
    /// The store failed.
    Unavailable,
}

/// Result of [`take`]: the outcome or an error, plus how many CAS retries it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Verdict.
    pub result: Result<Outcome, TakeError>,
    /// CAS mismatches encountered.
    pub retries: u32,
}

/// Reads the current outcome without writing (used to check every limit before taking any).
pub fn peek(
    store: &dyn Store,
    key: &str,
    limit: &Limit,
    now_ns: u64,
    cost: u64,
) -> Result<Outcome, TakeError> {
    let (value, _) = store.get(key).map_err(|_| TakeError::Unavailable)?;
    Ok(limit.take(value.as_deref().and_then(State::decode), now_ns, cost))
}

/// Atomically takes `cost` units (or, when denied, changes nothing).
pub fn take(
    store: &dyn Store,
    key: &str,
    limit: &Limit,
    now_ns: u64,
    cost: u64,
    max_retries: u32,
) -> Taken {
    let mut retries = 0;
    loop {
        let (value, cas) = match store.get(key) {
            Ok(v) => v,
            Err(_) => {
                return Taken {
                    result: Err(TakeError::Unavailable),
                    retries,
                }
            }
        };
        let state = value.as_deref().and_then(State::decode);
        let outcome = limit.take(state, now_ns, cost);
        if !outcome.allowed {
            // Nothing to write: a denied request leaves the bucket as it is.
            return Taken {
                result: Ok(outcome),
                retries,
            };
        }
        let cas = if value.is_none() { CREATE_CAS } else { cas };
        match store.set(key, &outcome.next.encode(), cas) {
            Ok(()) => {
                return Taken {
                    result: Ok(outcome),
                    retries,
                }
            }
            Err(StoreError::CasMismatch) if retries < max_retries => retries += 1,
            Err(StoreError::CasMismatch) => {
                return Taken {
                    result: Err(TakeError::Contended),
                    retries,
                }
            }
            Err(StoreError::Unavailable) => {
                return Taken {
                    result: Err(TakeError::Unavailable),
                    retries,
                }
            }
        }
    }
}

/// Gives `cost` units back (after a later limit of the same request denied), best effort.
pub fn refund(store: &dyn Store, key: &str, limit: &Limit, cost: u64, max_retries: u32) {
    for _ in 0..=max_retries {
        let Ok((Some(value), cas)) = store.get(key) else {
            return;
        };
        let Some(mut st) = State::decode(&value) else {
            return;
        };
        match *limit {
            Limit::Bucket { burst, .. } => st.level = (st.level + cost * 1_000).min(burst * 1_000),
            Limit::Quota { .. } => st.level = st.level.saturating_sub(cost),
        }
        if store.set(key, &st.encode(), cas) != Err(StoreError::CasMismatch) {
            return;
        }
    }
}

#[cfg(test)]
pub mod fake {
    //! An in-memory store with the host's CAS semantics, able to inject mismatches.
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A competing write run just before one of our `set`s.
    pub type Interference = Box<dyn Fn(&FakeStore)>;

    /// Mirrors proxy-wasm-cpp-host: CAS checked only on existing keys; every write bumps a
    /// global CAS counter.
    #[derive(Default)]
    pub struct FakeStore {
        pub data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        pub next_cas: RefCell<u32>,
        /// Before each `set`, run this (e.g. a competing worker's write).
        pub interfere: RefCell<Vec<Interference>>,
    }

    impl FakeStore {
        pub fn raw_set(&self, key: &str, value: &[u8]) {
            let mut c = self.next_cas.borrow_mut();
            *c += 1;
            self.data
                .borrow_mut()
                .insert(key.to_string(), (value.to_vec(), *c));
        }
    }

    impl Store for FakeStore {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
            Ok(match self.data.borrow().get(key) {
                Some((v, c)) => (Some(v.clone()), *c),
                None => (None, 0),
            })
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            let hook = self.interfere.borrow_mut().pop();
            if let Some(h) = hook {
                h(self);
            }
            if let Some((_, current)) = self.data.borrow().get(key) {
                if cas != 0 && cas != *current {
                    return Err(StoreError::CasMismatch);
                }
            }
            self.raw_set(key, value);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeStore;
    use super::*;

    const L: Limit = Limit::Bucket {
        burst: 5,
        refill: 1,
        period_secs: 3600,
    };

    fn level(s: &FakeStore, key: &str) -> u64 {
        State::decode(&s.data.borrow()[key].0).unwrap().level / 1000
    }

    #[test]
    fn cas_mismatch_is_retried_from_the_fresh_state() {
        let s = FakeStore::default();
        take(&s, "k", &L, 0, 1, 3);
        // Another worker takes 2 between our read and our write.
        s.interfere.borrow_mut().push(Box::new(|s: &FakeStore| {
            let st = State::decode(&s.data.borrow()["k"].0).unwrap();
            let st = State {
                level: st.level - 2_000,
                ..st
            };
            s.raw_set("k", &st.encode());
        }));
        let t = take(&s, "k", &L, 0, 1, 3);
        assert_eq!(t.retries, 1);
        assert_eq!(t.result.unwrap().remaining, 1);
        assert_eq!(
            level(&s, "k"),
            1,
            "5 - 1 - 2 - 1: the competing take was not overwritten"
        );
    }

    #[test]
    fn retries_are_bounded() {
        let s = FakeStore::default();
        take(&s, "k", &L, 0, 1, 3);
        for _ in 0..10 {
            s.interfere.borrow_mut().push(Box::new(|s: &FakeStore| {
                let v = s.data.borrow()["k"].0.clone();
                s.raw_set("k", &v);
            }));
        }
        let t = take(&s, "k", &L, 0, 1, 3);
        assert_eq!(t.result, Err(TakeError::Contended));
        assert_eq!(t.retries, 3);
    }

    #[test]
    fn concurrent_creation_cannot_start_two_full_buckets() {
        let s = FakeStore::default();
        // Worker B creates the key (and takes 1) between A's read (absent) and A's create.
        s.interfere.borrow_mut().push(Box::new(|s: &FakeStore| {
            let t = take(s, "k", &L, 0, 1, 0);
            assert!(t.result.unwrap().allowed);
        }));
        let t = take(&s, "k", &L, 0, 1, 3);
        assert_eq!(t.retries, 1, "A's create hit B's key and was retried");
        assert_eq!(level(&s, "k"), 3, "both takes counted: 5 - 1 - 1");
    }

    #[test]
    fn denied_take_writes_nothing_and_refund_restores() {
        let s = FakeStore::default();
        assert!(take(&s, "k", &L, 0, 5, 3).result.unwrap().allowed);
        let before = s.data.borrow()["k"].clone();
        assert!(!take(&s, "k", &L, 0, 1, 3).result.unwrap().allowed);
        assert_eq!(s.data.borrow()["k"], before);
        refund(&s, "k", &L, 2, 3);
        assert_eq!(level(&s, "k"), 2);
    }
}
