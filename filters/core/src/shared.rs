//! Envoy's shared data as one narrow port, and the one compare-and-swap loop every filter uses
//! on it (rate-limit buckets, the JWKS lease and document, DPoP replay slots).
//!
//! The host's contract (proxy-wasm-cpp-host `shared_data.cc`): every write bumps a
//! process-wide CAS counter; a write carrying a CAS succeeds only if the key still has it; a
//! write with CAS 0 always succeeds; and a write to a key that does not exist yet ignores the
//! CAS, so two workers could both "create" a key. [`update`] therefore creates keys with
//! [`CREATE_CAS`]: on a missing key the host ignores it, and if another worker created the key
//! between our read and our write, the key's real CAS differs and the write fails, so the loop
//! starts over from that worker's value. There is no delete: every key lives until Envoy
//! restarts, which is why keys are never built from unbounded input (see [`crate::slots`]).

/// CAS used when creating a key; never the CAS of an existing key in practice (the host's
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

/// The shared-data port: Envoy's shared data in the proxy-wasm adapter, memory in tests and in
/// the policy simulator.
pub trait SharedStore {
    /// The value and CAS of a key (`(None, 0)` when absent).
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError>;
    /// Writes a value if the key's CAS still equals `cas` (0: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// What an update step decided, given the key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Write this value (with the CAS read), then return `T`.
    Write(Vec<u8>, T),
    /// Write nothing and return `T` (e.g. a denied request leaves a bucket as it is).
    Keep(T),
}

/// Why an update gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost the CAS race (`max_retries` exhausted).
    Contended,
    /// The store failed.
    Unavailable,
}

/// The result of [`update`], with how many CAS mismatches it met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated<T> {
    /// The step's value, or why there is none.
    pub result: Result<T, UpdateError>,
    /// CAS mismatches met (each one a retry, or the last, failed attempt).
    pub retries: u32,
}

/// Atomically updates `key`: read → `step(current)` → write with the CAS read, retried from
/// the fresh value on a mismatch, at most `max_retries` times. A missing key is created with
/// [`CREATE_CAS`], so two workers can never both start from "absent".
pub fn update<T>(
    store: &dyn SharedStore,
    key: &str,
    max_retries: u32,
    step: impl FnMut(Option<&[u8]>) -> Step<T>,
) -> Updated<T> {
    update_from(store, key, max_retries, None, step)
}

/// A key's value and CAS as one `get` returned them.
pub type Snapshot = (Option<Vec<u8>>, u32);

/// [`update`], starting from a `snapshot` the caller already read (no second `get`: each one
/// takes the host's process-wide lock). If the key changed since, the write's CAS fails and the
/// loop goes on from a fresh read, as it would from its own.
pub fn update_from<T>(
    store: &dyn SharedStore,
    key: &str,
    max_retries: u32,
    mut snapshot: Option<Snapshot>,
    mut step: impl FnMut(Option<&[u8]>) -> Step<T>,
) -> Updated<T> {
    let mut retries = 0;
    loop {
        let read = match snapshot.take() {
            Some(s) => Ok(s),
            None => store.get(key),
        };
        let (value, cas) = match read {
            Ok(v) => v,
            Err(_) => {
                return Updated {
                    result: Err(UpdateError::Unavailable),
                    retries,
                }
            }
        };
        let (bytes, out) = match step(value.as_deref()) {
            Step::Keep(out) => {
                return Updated {
                    result: Ok(out),
                    retries,
                }
            }
            Step::Write(bytes, out) => (bytes, out),
        };
        let cas = if value.is_none() { CREATE_CAS } else { cas };
        match store.set(key, &bytes, cas) {
            Ok(()) => {
                return Updated {
                    result: Ok(out),
                    retries,
                }
            }
            Err(StoreError::CasMismatch) => {
                retries += 1;
                if retries > max_retries {
                    return Updated {
                        result: Err(UpdateError::Contended),
                        retries,
                    };
                }
            }
            Err(StoreError::Unavailable) => {
                return Updated {
                    result: Err(UpdateError::Unavailable),
                    retries,
                }
            }
        }
    }
}

/// Reads `key` and decodes it, without writing.
pub fn read<T>(
    store: &dyn SharedStore,
    key: &str,
    decode: impl FnOnce(Option<&[u8]>) -> T,
) -> Result<T, UpdateError> {
    store
        .get(key)
        .map(|(v, _)| decode(v.as_deref()))
        .map_err(|_| UpdateError::Unavailable)
}

#[cfg(not(target_arch = "wasm32"))]
pub mod memory {
    //! Shared data in memory with the host's exact CAS semantics, able to inject CAS
    //! mismatches (a competing worker's write) and host errors at chosen steps: the store of
    //! native tests, the fake host and the policy simulator.

    use super::{SharedStore, StoreError};
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Something done just before one of our calls reaches the store.
    pub enum Fault {
        /// Another worker writes this key (with this value) first: our CAS is stale.
        CompetingWrite(String, Vec<u8>),
        /// Another worker rewrites the key our next `set` targets with its current value.
        Bump,
        /// The host refuses the call.
        HostError,
    }

    /// Envoy's shared data, in memory.
    #[derive(Default)]
    pub struct MemoryStore {
        data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: RefCell<u32>,
        /// Faults applied to the next `set` calls, in order (front first).
        set_faults: RefCell<Vec<Fault>>,
        /// Faults applied to the next `get` calls (only `HostError` is meaningful).
        get_faults: RefCell<Vec<Fault>>,
        sets: RefCell<u64>,
        gets: RefCell<u64>,
    }

    impl MemoryStore {
        /// An empty store.
        pub fn new() -> Self {
            Self::default()
        }

        /// Writes unconditionally (what another worker's successful write looks like).
        pub fn raw_set(&self, key: &str, value: &[u8]) {
            let mut c = self.next_cas.borrow_mut();
            *c = c.wrapping_add(1).max(1);
            self.data
                .borrow_mut()
                .insert(key.to_string(), (value.to_vec(), *c));
        }

        /// The current value of a key.
        pub fn value(&self, key: &str) -> Option<Vec<u8>> {
            self.data.borrow().get(key).map(|(v, _)| v.clone())
        }

        /// Every key, sorted.
        pub fn keys(&self) -> Vec<String> {
            let mut k: Vec<String> = self.data.borrow().keys().cloned().collect();
            k.sort();
            k
        }

        /// Number of keys (shared data never forgets one).
        pub fn len(&self) -> usize {
            self.data.borrow().len()
        }

        /// True when no key was ever written.
        pub fn is_empty(&self) -> bool {
            self.data.borrow().is_empty()
        }

        /// Total bytes of keys and values held.
        pub fn bytes(&self) -> usize {
            self.data
                .borrow()
                .iter()
                .map(|(k, (v, _))| k.len() + v.len())
                .sum()
        }

        /// Successful writes so far.
        pub fn writes(&self) -> u64 {
            *self.sets.borrow()
        }

        /// Reads (`get` calls) so far: each one takes the host's process-wide lock in Envoy.
        pub fn reads(&self) -> u64 {
            *self.gets.borrow()
        }

        /// Queues a fault for a coming `set` (faults apply in the order queued).
        pub fn fault_next_set(&self, f: Fault) {
            self.set_faults.borrow_mut().push(f);
        }

        /// Queues a fault for a coming `get`.
        pub fn fault_next_get(&self, f: Fault) {
            self.get_faults.borrow_mut().push(f);
        }

        fn take_fault(list: &RefCell<Vec<Fault>>) -> Option<Fault> {
            let mut l = list.borrow_mut();
            (!l.is_empty()).then(|| l.remove(0))
        }
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
            *self.gets.borrow_mut() += 1;
            if let Some(Fault::HostError) = Self::take_fault(&self.get_faults) {
                return Err(StoreError::Unavailable);
            }
            Ok(match self.data.borrow().get(key) {
                Some((v, c)) => (Some(v.clone()), *c),
                None => (None, 0),
            })
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            match Self::take_fault(&self.set_faults) {
                Some(Fault::HostError) => return Err(StoreError::Unavailable),
                Some(Fault::CompetingWrite(k, v)) => self.raw_set(&k, &v),
                Some(Fault::Bump) => {
                    let current = self.value(key).unwrap_or_default();
                    self.raw_set(key, &current);
                }
                None => {}
            }
            // The host checks CAS only on keys that exist (and never for CAS 0).
            if let Some((_, current)) = self.data.borrow().get(key) {
                if cas != 0 && cas != *current {
                    return Err(StoreError::CasMismatch);
                }
            }
            self.raw_set(key, value);
            *self.sets.borrow_mut() += 1;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::{Fault, MemoryStore};
    use super::*;

    /// A counter: +1 per update.
    fn incr(store: &MemoryStore, retries: u32) -> Updated<u64> {
        update(store, "n", retries, |v| {
            let n = v.map_or(0, |b| u64::from(b[0])) + 1;
            Step::Write(vec![n as u8], n)
        })
    }

    #[test]
    fn a_mismatch_is_retried_from_the_fresh_value() {
        let s = MemoryStore::new();
        assert_eq!(incr(&s, 3).result, Ok(1));
        // Another worker writes 5 between our read and our write.
        s.fault_next_set(Fault::CompetingWrite("n".into(), vec![5]));
        let u = incr(&s, 3);
        assert_eq!((u.result, u.retries), (Ok(6), 1));
        assert_eq!(s.value("n"), Some(vec![6]));
    }

    #[test]
    fn retries_are_bounded_and_reported() {
        let s = MemoryStore::new();
        incr(&s, 3);
        for _ in 0..10 {
            s.fault_next_set(Fault::Bump);
        }
        let u = incr(&s, 3);
        assert_eq!((u.result, u.retries), (Err(UpdateError::Contended), 4));
    }

    #[test]
    fn concurrent_creation_cannot_start_twice_from_absent() {
        let s = MemoryStore::new();
        // Worker B creates the key between A's read (absent) and A's create.
        s.fault_next_set(Fault::CompetingWrite("n".into(), vec![1]));
        let u = incr(&s, 3);
        assert_eq!((u.result, u.retries), (Ok(2), 1), "A counted on top of B");
    }

    #[test]
    fn an_update_from_a_snapshot_reads_only_after_a_mismatch() {
        let s = MemoryStore::new();
        incr(&s, 3);
        let snap = s.get("n").unwrap();
        let reads = s.reads();
        let step = |v: Option<&[u8]>| {
            let n = v.map_or(0, |b| u64::from(b[0])) + 1;
            Step::Write(vec![n as u8], n)
        };
        let u = update_from(&s, "n", 3, Some(snap.clone()), step);
        assert_eq!((u.result, s.reads() - reads), (Ok(2), 0));
        // The snapshot is stale now: the CAS fails, and the loop reads the fresh value.
        let u = update_from(&s, "n", 3, Some(snap), step);
        assert_eq!((u.result, u.retries, s.reads() - reads), (Ok(3), 1, 1));
    }

    #[test]
    fn host_errors_and_keep_steps() {
        let s = MemoryStore::new();
        s.fault_next_get(Fault::HostError);
        assert_eq!(incr(&s, 3).result, Err(UpdateError::Unavailable));
        s.fault_next_set(Fault::HostError);
        assert_eq!(incr(&s, 3).result, Err(UpdateError::Unavailable));
        let kept = update(&s, "n", 3, |_| Step::Keep(7u8));
        assert_eq!(kept.result, Ok(7));
        assert!(s.is_empty(), "a Keep step writes nothing");
    }
}
