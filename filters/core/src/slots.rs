//! Fixed-capacity tables in shared data, so that state keyed by client input (addresses,
//! identities, proof ids) can never grow Envoy's memory without bound.
//!
//! Shared data never forgets a key, so a key per client would let anyone who rotates source
//! addresses (an IPv6 client has 2^64) grow the process until it dies. Instead an id is hashed
//! with a process-wide secret ([`Secret`], keyed SipHash: a client cannot aim ids at one slot)
//! to one of `slots` shared-data keys; each slot value holds at most `ways` entries of
//! `fingerprint (8 bytes) + payload`. The table's users decide what an idle entry is (one
//! that holds nothing a fresh one would not, such as a bucket that has refilled completely),
//! and idle entries are reused. When every entry of a slot is busy, [`SlotTable::find`]
//! answers [`Place::Shared`]: the slot's one overflow entry, which every id without room of its
//! own is charged to, so a collision can make a limit stricter, never looser. Not another id's
//! entry: under a flood of fresh ids (an attacker rotating addresses fills every slot) each
//! newcomer would take from a client that has an entry, and an active client keeps its own.

use crate::shared::{self, SharedStore, Step, UpdateError};
use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// The process-wide key of every keyed hash (created once, shared by all workers' VMs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret([u8; 16]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Shared-data key of the process-wide secret.
pub const SECRET_KEY: &str = "portcullis.secret.v1";

impl Secret {
    /// A fixed secret (tests).
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        Secret(b)
    }

    /// Reads the process-wide secret, creating it from `random` when no worker has yet; every
    /// VM of the process ends up with the same value (creation goes through the CAS rule).
    pub fn obtain(
        store: &dyn SharedStore,
        random: impl FnOnce(&mut [u8]),
    ) -> Result<Secret, UpdateError> {
        let mut fresh = [0u8; 16];
        random(&mut fresh);
        let u = shared::update(store, SECRET_KEY, 8, |v| match v {
            Some(b) if b.len() == 16 => {
                let mut s = [0u8; 16];
                s.copy_from_slice(b);
                Step::Keep(Secret(s))
            }
            _ => Step::Write(fresh.to_vec(), Secret(fresh)),
        });
        u.result
    }

    /// The 128-bit keyed hash of `parts` (each length-prefixed, so part boundaries matter).
    pub fn hash(&self, parts: &[&[u8]]) -> u128 {
        let mut h = SipHasher13::new_with_key(&self.0);
        for p in parts {
            h.write_u64(p.len() as u64);
            h.write(p);
        }
        h.finish128().as_u128()
    }
}

/// Where an id lives: its shared-data key and its fingerprint inside the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Shared-data key of the slot.
    pub key: String,
    /// Identifies the id among the slot's entries.
    pub fingerprint: u64,
}

/// Where an id's entry is, or would go, in a slot's current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'v> {
    /// The id's own entry, at this index.
    Own(usize, &'v [u8]),
    /// The id has no entry; this idle entry may be reused for it.
    Reuse(usize),
    /// The id has no entry; there is room for one more.
    Append,
    /// The id has no entry and there is no room: the slot's overflow entry, at this index, is
    /// charged instead (shared by every id of the slot without an entry).
    Shared(usize, &'v [u8]),
    /// As [`Place::Shared`], but the slot has no overflow entry yet: one is added.
    Overflow,
}

/// A table of `slots` shared-data keys with at most `ways` entries of `width`-byte payloads.
#[derive(Debug, Clone)]
pub struct SlotTable {
    prefix: String,
    slots: u32,
    ways: usize,
    width: usize,
}

const FP: usize = 8;

/// Fingerprint of a slot's overflow entry: an id's fingerprint is never 0.
const OVERFLOW: u64 = 0;

impl SlotTable {
    /// A table holding at least `capacity` ids, under the shared-data key prefix `prefix`.
    pub fn new(prefix: impl Into<String>, capacity: usize, ways: usize, width: usize) -> Self {
        let ways = ways.max(1);
        let slots = capacity.div_ceil(ways).clamp(1, u32::MAX as usize);
        SlotTable {
            prefix: prefix.into(),
            slots: u32::try_from(slots).unwrap_or(u32::MAX),
            ways,
            width,
        }
    }

    /// Number of slots (shared-data keys this table can ever create).
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Entries per slot.
    pub fn ways(&self) -> usize {
        self.ways
    }

    /// Largest value a slot can hold, in bytes: `ways` ids' entries and the overflow entry.
    pub fn max_value_bytes(&self) -> usize {
        (self.ways + 1) * (FP + self.width)
    }

    /// The slot and fingerprint of `id`.
    pub fn locate(&self, secret: &Secret, id: &[u8]) -> Slot {
        let h = secret.hash(&[self.prefix.as_bytes(), id]);
        let index = (h as u64) % u64::from(self.slots);
        // Pushed, not `format!`ed: one per limit per request.
        let mut key = String::with_capacity(self.prefix.len() + 12);
        key.push_str(&self.prefix);
        key.push_str(".s");
        crate::push_decimal(&mut key, index);
        Slot {
            key,
            // Never 0, so an all-zero entry can never pass for an id's own.
            fingerprint: ((h >> 64) as u64).max(1),
        }
    }

    fn entries<'v>(&self, value: &'v [u8]) -> impl Iterator<Item = (u64, &'v [u8])> {
        value.chunks_exact(FP + self.width).map(|e| {
            let mut fp = [0u8; FP];
            fp.copy_from_slice(&e[..FP]);
            (u64::from_le_bytes(fp), &e[FP..])
        })
    }

    /// Where `fingerprint`'s entry is in `value`. `idle` says whether an entry holds nothing a
    /// fresh one would not (an idle id's entry is reused; the overflow entry never is).
    pub fn find<'v>(
        &self,
        value: Option<&'v [u8]>,
        fingerprint: u64,
        idle: impl Fn(&[u8]) -> bool,
    ) -> Place<'v> {
        let value = value.unwrap_or_default();
        let mut reuse = None;
        let mut overflow = None;
        let mut count = 0;
        for (i, (fp, payload)) in self.entries(value).enumerate() {
            if fp == OVERFLOW {
                overflow = Some((i, payload));
                continue;
            }
            count += 1;
            if fp == fingerprint {
                return Place::Own(i, payload);
            }
            if reuse.is_none() && idle(payload) {
                reuse = Some(i);
            }
        }
        if let Some(i) = reuse {
            return Place::Reuse(i);
        }
        if count < self.ways {
            return Place::Append;
        }
        match overflow {
            Some((i, payload)) => Place::Shared(i, payload),
            None => Place::Overflow,
        }
    }

    /// The slot value with `payload` stored at `place` (an own or shared entry keeps its
    /// fingerprint; a reused or appended one takes `fingerprint`, a new overflow entry its own).
    pub fn put(
        &self,
        value: Option<&[u8]>,
        place: Place<'_>,
        fingerprint: u64,
        payload: &[u8],
    ) -> Vec<u8> {
        debug_assert_eq!(payload.len(), self.width);
        let mut out = value.unwrap_or_default().to_vec();
        // A value of another shape (a table resized between versions) starts over.
        if !out.len().is_multiple_of(FP + self.width) || out.len() > self.max_value_bytes() {
            out.clear();
        }
        let entry = |fp: u64| {
            let mut e = Vec::with_capacity(FP + self.width);
            e.extend_from_slice(&fp.to_le_bytes());
            e.extend_from_slice(payload);
            e
        };
        let w = FP + self.width;
        match place {
            Place::Own(i, _) | Place::Shared(i, _) if (i + 1) * w <= out.len() => {
                out[i * w + FP..(i + 1) * w].copy_from_slice(payload);
            }
            Place::Reuse(i) if (i + 1) * w <= out.len() => {
                out[i * w..(i + 1) * w].copy_from_slice(&entry(fingerprint));
            }
            Place::Overflow if out.len() < self.max_value_bytes() => {
                out.extend_from_slice(&entry(OVERFLOW));
            }
            _ if out.len() < self.max_value_bytes() => out.extend_from_slice(&entry(fingerprint)),
            // A full slot and an index out of range cannot happen with a value `find` read;
            // replace the first entry rather than grow past the bound.
            _ => out[..w].copy_from_slice(&entry(fingerprint)),
        }
        out
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::shared::memory::MemoryStore;

    const S: Secret = Secret::from_bytes([7; 16]);

    #[test]
    fn the_secret_is_created_once_and_shared() {
        let store = MemoryStore::new();
        let a = Secret::obtain(&store, |b| b.fill(1)).unwrap();
        let b = Secret::obtain(&store, |b| b.fill(2)).unwrap();
        assert_eq!(a, b, "the second worker reads the first one's secret");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn the_slot_depends_on_the_secret_and_stays_in_range() {
        let t = SlotTable::new("p", 64, 4, 2);
        assert_eq!(t.slots(), 16);
        let other = Secret::from_bytes([8; 16]);
        let moved = (0..200u32)
            .filter(|i| {
                t.locate(&S, &i.to_le_bytes()).key != t.locate(&other, &i.to_le_bytes()).key
            })
            .count();
        assert!(
            moved > 150,
            "another secret scatters ids elsewhere ({moved}/200)"
        );
        for i in 0..1000u32 {
            let slot = t.locate(&S, &i.to_le_bytes());
            let n: u32 = slot.key.rsplit(".s").next().unwrap().parse().unwrap();
            assert!(n < 16);
        }
    }

    #[test]
    fn own_reuse_append_and_shared_places() {
        let t = SlotTable::new("p", 2, 2, 1);
        let idle = |p: &[u8]| p[0] == 0;
        let v = t.put(None, Place::Append, 11, &[5]);
        assert_eq!(t.find(Some(&v), 11, idle), Place::Own(0, &[5][..]));
        assert_eq!(t.find(Some(&v), 22, idle), Place::Append);
        let v = t.put(Some(&v), Place::Append, 22, &[3]);
        // Full, both busy: a newcomer goes to the overflow entry, created on first use…
        assert_eq!(t.find(Some(&v), 33, idle), Place::Overflow);
        let v = t.put(Some(&v), Place::Overflow, 33, &[2]);
        assert_eq!(t.find(Some(&v), 33, idle), Place::Shared(2, &[2][..]));
        // …and shared by every id without room, never charged to 11's or 22's entry.
        assert_eq!(t.find(Some(&v), 44, idle), Place::Shared(2, &[2][..]));
        let v = t.put(Some(&v), Place::Shared(2, &[2]), 44, &[1]);
        assert_eq!(t.find(Some(&v), 11, idle), Place::Own(0, &[5][..]));
        assert_eq!(t.find(Some(&v), 22, idle), Place::Own(1, &[3][..]));
        assert_eq!(t.find(Some(&v), 33, idle), Place::Shared(2, &[1][..]));
        // An idle id's entry is reused for a newcomer; the overflow entry never is, even idle.
        let v = t.put(Some(&v), Place::Shared(2, &[1]), 33, &[0]);
        let v = t.put(Some(&v), Place::Own(0, &[5]), 11, &[0]);
        assert_eq!(t.find(Some(&v), 55, idle), Place::Reuse(0));
        let v = t.put(Some(&v), Place::Reuse(0), 55, &[9]);
        assert_eq!(t.find(Some(&v), 55, idle), Place::Own(0, &[9][..]));
        assert_eq!(t.find(Some(&v), 66, idle), Place::Shared(2, &[0][..]));
        assert_eq!(
            v.len(),
            t.max_value_bytes(),
            "never more than `ways` entries and the overflow entry"
        );
    }
}
