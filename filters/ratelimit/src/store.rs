//! Limit state in shared data, through the core's store port and CAS loop
//! ([`portcullis_core::shared::update`]), in bounded key tables ([`SlotTable`]).
//!
//! Each limit (per tier) owns a table: a key such as `tenant:acme` or `ip:192.0.2.7` is hashed
//! with the process secret to one slot, where its bucket is one entry. A bucket that has refilled
//! completely (a quota whose window has passed) holds nothing a fresh one would not, so another key
//! may take its place; when every entry of the slot is busy, the key is charged to the slot's
//! overflow bucket, shared by every key of the slot without room (a bucket of the same size, so
//! a collision can only make a limit stricter), never to another key's bucket. The shared data
//! a limit can ever use is therefore `max_keys` entries plus one overflow entry per slot.

use crate::bucket::{Limit, Outcome, State};
use crate::config::RateLimitConfig;
use portcullis_core::shared::{self, SharedStore, Snapshot, Step, UpdateError};
use portcullis_core::slots::{Place, Slot, SlotTable};

/// Why an atomic take gave no verdict.
pub type TakeError = UpdateError;

/// Result of [`take`]: the outcome or an error, plus how many CAS retries it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Verdict.
    pub result: Result<Outcome, TakeError>,
    /// CAS mismatches encountered.
    pub retries: u32,
    /// This take created the slot's shared-data key (counted: the number of keys a limit
    /// ever creates is bounded by its table).
    pub created_slot: bool,
}

/// Where a key's bucket lives.
#[derive(Debug, Clone)]
pub struct Bucket<'t> {
    /// The table of the limit (and tier).
    pub table: &'t SlotTable,
    /// The key's slot and fingerprint.
    pub slot: Slot,
    /// The amount the table's entries share.
    pub limit: Limit,
}

/// Units taken for one request, to give back if a later decision refuses it (owned: it
/// outlives the callback, e.g. while the rate limit service is asked about global limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// Index of the limit in the configuration.
    pub limit: usize,
    /// The tier whose table holds the bucket (`None`: the default amount's).
    pub tier: Option<String>,
    /// The bucket's slot.
    pub slot: Slot,
    /// The amount taken against.
    pub amount: Limit,
    /// Units taken.
    pub cost: u64,
}

impl Charge {
    /// Gives the units back, best effort.
    pub fn refund(&self, cfg: &RateLimitConfig, store: &dyn SharedStore, now_ns: u64) {
        let Some(l) = cfg.limits.get(self.limit) else {
            return;
        };
        let (_, table) = l.amount(self.tier.as_deref());
        let b = Bucket {
            table,
            slot: self.slot.clone(),
            limit: self.amount,
        };
        refund(store, &b, now_ns, self.cost, cfg.max_cas_retries);
    }
}

fn decode(payload: &[u8]) -> Option<State> {
    State::decode(payload)
}

impl Bucket<'_> {
    /// The key's state in a slot value, and where it is (or would go).
    fn place<'v>(&self, value: Option<&'v [u8]>, now_ns: u64) -> (Place<'v>, Option<State>) {
        let left = |p: &[u8]| self.limit.take(decode(p), now_ns, 0).remaining;
        let capacity = self.limit.capacity();
        let place = self
            .table
            .find(value, self.slot.fingerprint, |p| left(p) >= capacity);
        let state = match place {
            Place::Own(_, p) | Place::Shared(_, p) => decode(p),
            Place::Reuse(_) | Place::Append | Place::Overflow => None,
        };
        (place, state)
    }
}

/// Reads the current outcome without writing (used to check every limit before taking any).
pub fn peek(
    store: &dyn SharedStore,
    b: &Bucket<'_>,
    now_ns: u64,
    cost: u64,
) -> Result<Outcome, TakeError> {
    peek_snapshot(store, b, now_ns, cost).map(|(o, _)| o)
}

/// [`peek`], also returning what was read, so the [`take_from`] that follows needs no second
/// read of the key.
pub fn peek_snapshot(
    store: &dyn SharedStore,
    b: &Bucket<'_>,
    now_ns: u64,
    cost: u64,
) -> Result<(Outcome, Snapshot), TakeError> {
    let (value, cas) = store
        .get(&b.slot.key)
        .map_err(|_| UpdateError::Unavailable)?;
    let (_, state) = b.place(value.as_deref(), now_ns);
    Ok((b.limit.take(state, now_ns, cost), (value, cas)))
}

/// Atomically takes `cost` units (or, when denied, changes nothing).
pub fn take(
    store: &dyn SharedStore,
    b: &Bucket<'_>,
    now_ns: u64,
    cost: u64,
    max_retries: u32,
) -> Taken {
    take_from(store, b, now_ns, cost, max_retries, None)
}

/// [`take`], starting from a `snapshot` of the key [`peek_snapshot`] read.
pub fn take_from(
    store: &dyn SharedStore,
    b: &Bucket<'_>,
    now_ns: u64,
    cost: u64,
    max_retries: u32,
    snapshot: Option<Snapshot>,
) -> Taken {
    let u = shared::update_from(store, &b.slot.key, max_retries, snapshot, |v| {
        let (place, state) = b.place(v, now_ns);
        let outcome = b.limit.take(state, now_ns, cost);
        if !outcome.allowed {
            // A denied request leaves the bucket as it is.
            return Step::Keep((outcome, false));
        }
        let value = b
            .table
            .put(v, place, b.slot.fingerprint, &outcome.next.encode());
        Step::Write(value, (outcome, v.is_none()))
    });
    Taken {
        result: u.result.map(|(o, _)| o),
        retries: u.retries,
        created_slot: u.result.is_ok_and(|(_, created)| created),
    }
}

/// Gives `cost` units back (after a later limit of the same request denied), best effort.
pub fn refund(store: &dyn SharedStore, b: &Bucket<'_>, now_ns: u64, cost: u64, max_retries: u32) {
    let _ = shared::update(store, &b.slot.key, max_retries, |v| {
        let (place, state) = b.place(v, now_ns);
        let Some(mut st) = state else {
            return Step::Keep(());
        };
        match b.limit {
            Limit::Bucket { burst, .. } => st.level = (st.level + cost * 1_000).min(burst * 1_000),
            Limit::Quota { .. } => st.level = st.level.saturating_sub(cost),
        }
        Step::Write(b.table.put(v, place, b.slot.fingerprint, &st.encode()), ())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::shared::memory::{Fault, MemoryStore};
    use portcullis_core::slots::Secret;

    const L: Limit = Limit::Bucket {
        burst: 5,
        refill: 1,
        period_secs: 3600,
    };
    const SECRET: Secret = Secret::from_bytes([3; 16]);

    fn bucket<'t>(t: &'t SlotTable, id: &str) -> Bucket<'t> {
        Bucket {
            table: t,
            slot: t.locate(&SECRET, id.as_bytes()),
            limit: L,
        }
    }

    fn left(s: &MemoryStore, b: &Bucket<'_>) -> u64 {
        peek(s, b, 0, 0).unwrap().remaining
    }

    /// A flood of fresh keys through one slot (eight ways, all busy) is charged to the slot's
    /// overflow bucket: together they get one bucket's units, and a key with its own bucket
    /// loses none of its units to them.
    #[test]
    fn a_flood_of_new_keys_shares_the_overflow_bucket_and_spares_existing_ones() {
        let t = SlotTable::new("t", 8, 8, 16);
        let s = MemoryStore::new();
        let active = bucket(&t, "active");
        for _ in 0..4 {
            assert!(take(&s, &active, 0, 1, 3).result.unwrap().allowed);
        }
        for i in 0..7 {
            assert!(
                take(&s, &bucket(&t, &format!("k{i}")), 0, 1, 3)
                    .result
                    .unwrap()
                    .allowed
            );
        }
        let admitted = (0..100)
            .filter(|i| {
                let b = bucket(&t, &format!("flood{i}"));
                take(&s, &b, 0, 1, 3).result.unwrap().allowed
            })
            .count();
        assert_eq!(
            admitted, 5,
            "the flood shares one bucket of the limit's size"
        );
        assert_eq!(left(&s, &active), 1, "the active key kept its own units");
        for i in 0..7 {
            assert_eq!(left(&s, &bucket(&t, &format!("k{i}"))), 4);
        }
        assert!(s.value(&active.slot.key).unwrap().len() <= t.max_value_bytes());
    }

    #[test]
    fn cas_mismatch_is_retried_from_the_fresh_state() {
        let t = SlotTable::new("t", 64, 8, 16);
        let s = MemoryStore::new();
        let b = bucket(&t, "k");
        take(&s, &b, 0, 1, 3);
        // Another worker takes 2 between our read and our write.
        let mut other = s.value(&b.slot.key).unwrap();
        let st = State::decode(&other[8..24]).unwrap();
        other[8..24].copy_from_slice(
            &State {
                level: st.level - 2_000,
                ..st
            }
            .encode(),
        );
        s.fault_next_set(Fault::CompetingWrite(b.slot.key.clone(), other));
        let tk = take(&s, &b, 0, 1, 3);
        assert_eq!(tk.retries, 1);
        assert_eq!(tk.result.unwrap().remaining, 1);
        assert_eq!(left(&s, &b), 1, "5 - 1 - 2 - 1: the competing take counted");
    }

    #[test]
    fn retries_are_bounded() {
        let t = SlotTable::new("t", 64, 8, 16);
        let s = MemoryStore::new();
        let b = bucket(&t, "k");
        take(&s, &b, 0, 1, 3);
        for _ in 0..10 {
            s.fault_next_set(Fault::Bump);
        }
        let tk = take(&s, &b, 0, 1, 3);
        assert_eq!(tk.result, Err(UpdateError::Contended));
        assert_eq!(tk.retries, 4);
    }

    #[test]
    fn concurrent_creation_cannot_start_two_full_buckets() {
        let t = SlotTable::new("t", 64, 8, 16);
        let s = MemoryStore::new();
        let b = bucket(&t, "k");
        // Worker B creates the slot (taking 1) between A's read (absent) and A's create.
        let other = MemoryStore::new();
        take(&other, &b, 0, 1, 0);
        s.fault_next_set(Fault::CompetingWrite(
            b.slot.key.clone(),
            other.value(&b.slot.key).unwrap(),
        ));
        let tk = take(&s, &b, 0, 1, 3);
        assert_eq!(tk.retries, 1, "A's create hit B's key and was retried");
        assert_eq!(left(&s, &b), 3, "both takes counted: 5 - 1 - 1");
    }

    #[test]
    fn host_errors_give_no_verdict() {
        let t = SlotTable::new("t", 64, 8, 16);
        let s = MemoryStore::new();
        let b = bucket(&t, "k");
        s.fault_next_get(Fault::HostError);
        assert_eq!(take(&s, &b, 0, 1, 3).result, Err(UpdateError::Unavailable));
        s.fault_next_get(Fault::HostError);
        assert_eq!(peek(&s, &b, 0, 1), Err(UpdateError::Unavailable));
        s.fault_next_set(Fault::HostError);
        assert_eq!(take(&s, &b, 0, 1, 3).result, Err(UpdateError::Unavailable));
    }

    #[test]
    fn denied_take_writes_nothing_and_refund_restores() {
        let t = SlotTable::new("t", 64, 8, 16);
        let s = MemoryStore::new();
        let b = bucket(&t, "k");
        assert!(take(&s, &b, 0, 5, 3).result.unwrap().allowed);
        let before = s.value(&b.slot.key);
        assert!(!take(&s, &b, 0, 1, 3).result.unwrap().allowed);
        assert_eq!(s.value(&b.slot.key), before);
        refund(&s, &b, 0, 2, 3);
        assert_eq!(left(&s, &b), 2);
        // A refund under contention is retried too.
        s.fault_next_set(Fault::Bump);
        refund(&s, &b, 0, 1, 3);
        assert_eq!(left(&s, &b), 3);
    }

    /// A million client addresses through one limit: shared data stays within the table, and a
    /// client that keeps sending keeps its own exact bucket.
    #[test]
    fn a_million_keys_stay_within_the_table_and_active_keys_stay_exact() {
        let limit = Limit::Bucket {
            burst: 10,
            refill: 100,
            period_secs: 1,
        };
        let t = SlotTable::new("t", 4096, 8, 16);
        let s = MemoryStore::new();
        let mk = |id: &str| Bucket {
            table: &t,
            slot: t.locate(&SECRET, id.as_bytes()),
            limit,
        };
        let active = mk("ip:198.51.100.1");
        let mut admitted = 0;
        // 1M distinct addresses, 20 000 per (simulated) second. Twice during the flood the
        // active client sends 20 requests within 1 ms: exactly its burst (10) passes each time,
        // so its bucket was neither reset nor shared while in use.
        let mut now = 0u64;
        for i in 0..1_000_000u32 {
            now += 50_000; // 50 µs
            let id = format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            assert!(take(&s, &mk(&id), now, 1, 8).result.is_ok());
            let bursting = (1_000..1_020).contains(&i) || (600_000..600_020).contains(&i);
            if bursting && take(&s, &active, now, 1, 8).result.unwrap().allowed {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 20, "10 per burst, exactly");
        assert!(
            s.len() <= t.slots() as usize,
            "{} keys for {} slots",
            s.len(),
            t.slots()
        );
        assert!(s.bytes() <= t.slots() as usize * (t.max_value_bytes() + 16));
    }
}
