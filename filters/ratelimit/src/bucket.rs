//! Limit arithmetic, pure: token buckets refilled lazily from timestamps, and fixed-window
//! quotas. States are small fixed-size values so they fit one shared-data entry each.
//!
//! Time only moves forward here: a clock that steps backwards is treated as "no time passed",
//! so it can never mint tokens.

/// Tokens are kept in thousandths so slow refill rates (1 per minute) accrue exactly.
const MILLI: u64 = 1_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// What a limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Token bucket: `burst` tokens at most, refilled at `per_second` / `period_secs`.
    Bucket {
        /// Capacity.
        burst: u64,
        /// Tokens added per `period_secs`.
        refill: u64,
        /// Refill period in seconds.
        period_secs: u64,
    },
    /// At most `limit` units per fixed window of `window_secs` (minute, hour, day).
    Quota {
        /// Units per window.
        limit: u64,
        /// Window length in seconds.
        window_secs: u64,
    },
}

/// Bytes of an encoded [`State`].
pub const STATE_BYTES: usize = 16;

/// Stored state of one limit key (encoded in 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Bucket: tokens × 1000. Quota: units used in the window.
    pub level: u64,
    /// Bucket: last refill time (ns since epoch). Quota: window index.
    pub stamp: u64,
}

impl State {
    /// 16-byte little-endian encoding.
    pub fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.level.to_le_bytes());
        out[8..].copy_from_slice(&self.stamp.to_le_bytes());
        out
    }

    /// Decodes; anything but 16 bytes is `None` (treated as a fresh key).
    pub fn decode(b: &[u8]) -> Option<State> {
        let level = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let stamp = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        (b.len() == 16).then_some(State { level, stamp })
    }
}

/// The outcome of one attempt to take `cost` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The units were available (and, when `commit`, taken).
    pub allowed: bool,
    /// Whole units left after this request.
    pub remaining: u64,
    /// Seconds until the limit is fully available again (bucket full / window reset).
    pub reset_secs: u64,
    /// Seconds until `cost` units would be available (0 when allowed).
    pub retry_after_secs: u64,
    /// The state to store.
    pub next: State,
}

fn ceil_div(a: u64, b: u64) -> u64 {
    if b == 0 {
        0
    } else {
        a.div_ceil(b)
    }
}

impl Limit {
    /// The most a limit can ever admit at once (burst or window limit).
    pub fn capacity(&self) -> u64 {
        match *self {
            Limit::Bucket { burst, .. } => burst,
            Limit::Quota { limit, .. } => limit,
        }
    }

    /// Window (quota) or time to refill from empty (bucket), in seconds: the `w` of
    /// `RateLimit-Policy`.
    pub fn window_secs(&self) -> u64 {
        match *self {
            Limit::Bucket {
                burst,
                refill,
                period_secs,
            } => ceil_div(burst * period_secs, refill.max(1)),
            Limit::Quota { window_secs, .. } => window_secs,
        }
    }

    /// The state of a key seen for the first time.
    pub fn fresh(&self, now_ns: u64) -> State {
        match *self {
            Limit::Bucket { burst, .. } => State {
                level: burst * MILLI,
                stamp: now_ns,
            },
            Limit::Quota { window_secs, .. } => State {
                level: 0,
                stamp: now_ns / (window_secs.max(1) * NANOS_PER_SEC),
            },
        }
    }

    /// Tries to take `cost` units at `now_ns` from `state` (a fresh state when `None`).
    pub fn take(&self, state: Option<State>, now_ns: u64, cost: u64) -> Outcome {
        let state = state.unwrap_or_else(|| self.fresh(now_ns));
        match *self {
            Limit::Bucket {
                burst,
                refill,
                period_secs,
            } => {
                // A clock that went backwards counts as no elapsed time.
                let now = now_ns.max(state.stamp);
                let elapsed = now - state.stamp;
                let period_ns = period_secs.max(1) * NANOS_PER_SEC;
                // Tokens gained, in thousandths (u128: long idle periods cannot overflow).
                let rate = u128::from(refill) * u128::from(MILLI);
                let gained = u128::from(elapsed) * rate / u128::from(period_ns);
                let cap = burst * MILLI;
                let (level, stamp) = if u128::from(state.level) + gained >= u128::from(cap) {
                    (cap, now)
                } else {
                    // Advance the stamp only by the time that produced `gained` (rounded up),
                    // so frequent checks never discard partial progress toward the next token.
                    let used_ns = if rate == 0 {
                        elapsed
                    } else {
                        (gained * u128::from(period_ns)).div_ceil(rate) as u64
                    };
                    (
                        state.level + gained as u64,
                        state.stamp + used_ns.min(elapsed),
                    )
                };
                let want = cost * MILLI;
                let per_token_ns = ceil_div(period_ns, refill.max(1));
                let (allowed, level) = if level >= want {
                    (true, level - want)
                } else {
                    (false, level)
                };
                let missing_to_full = (cap - level) / MILLI;
                let reset_secs = ceil_div(missing_to_full * per_token_ns, NANOS_PER_SEC);
                let retry_after_secs = if allowed {
                    0
                } else if want > cap || refill == 0 {
                    // Can never be satisfied by waiting: report a full refill.
                    reset_secs.max(1)
                } else {
                    ceil_div(ceil_div(want - level, MILLI) * per_token_ns, NANOS_PER_SEC).max(1)
                };
                Outcome {
                    allowed,
                    remaining: level / MILLI,
                    reset_secs,
                    retry_after_secs,
                    next: State { level, stamp },
                }
            }
            Limit::Quota { limit, window_secs } => {
                let window_ns = window_secs.max(1) * NANOS_PER_SEC;
                let window = (now_ns / window_ns).max(state.stamp);
                let used = if window == state.stamp {
                    state.level
                } else {
                    0
                };
                let (allowed, used) = if used + cost <= limit {
                    (true, used + cost)
                } else {
                    (false, used)
                };
                let reset_secs = ceil_div(
                    (window + 1) * window_ns - now_ns.max(window * window_ns),
                    NANOS_PER_SEC,
                );
                Outcome {
                    allowed,
                    remaining: limit - used,
                    reset_secs,
                    retry_after_secs: if allowed { 0 } else { reset_secs.max(1) },
                    next: State {
                        level: used,
                        stamp: window,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;

    #[test]
    fn bucket_admits_burst_then_refills_lazily() {
        let l = Limit::Bucket {
            burst: 3,
            refill: 1,
            period_secs: 10,
        };
        let mut st = None;
        for i in 0..3 {
            let o = l.take(st, 100 * S, 1);
            assert!(o.allowed, "{i}");
            assert_eq!(o.remaining, 2 - i);
            st = Some(o.next);
        }
        let o = l.take(st, 100 * S, 1);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_secs, 10);
        assert_eq!(o.reset_secs, 30);
        // 9.999 s later: still nothing; at 10 s: one token.
        assert!(!l.take(st, 110 * S - 1, 1).allowed);
        let o = l.take(st, 110 * S, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
    }

    #[test]
    fn partial_refill_progress_is_not_lost() {
        let l = Limit::Bucket {
            burst: 1,
            refill: 1,
            period_secs: 10,
        };
        let empty = l.take(None, 0, 1).next;
        // Three checks at 4 s intervals: tokens accrue across them (4 + 4 + 4 >= 10).
        let a = l.take(Some(empty), 4 * S, 1);
        assert!(!a.allowed);
        let b = l.take(Some(a.next), 8 * S, 1);
        assert!(!b.allowed);
        assert!(l.take(Some(b.next), 12 * S, 1).allowed);
    }

    #[test]
    fn frequent_checks_do_not_starve_a_slow_refill() {
        let l = Limit::Bucket {
            burst: 1,
            refill: 1,
            period_secs: 3600,
        };
        let mut st = l.take(None, 0, 1).next;
        let mut admitted_at = None;
        for sec in 1..=3601u64 {
            let o = l.take(Some(st), sec * S, 1);
            st = o.next;
            if o.allowed {
                admitted_at = Some(sec);
                break;
            }
        }
        assert_eq!(admitted_at, Some(3600));
    }

    #[test]
    fn clock_stepping_back_never_mints_tokens() {
        let l = Limit::Bucket {
            burst: 2,
            refill: 1,
            period_secs: 1,
        };
        let a = l.take(None, 1_000 * S, 2);
        assert!(a.allowed);
        let b = l.take(Some(a.next), 10 * S, 1);
        assert!(!b.allowed, "a clock 990 s in the past gives nothing");
        let c = l.take(Some(b.next), 1_000 * S, 1);
        assert!(
            !c.allowed,
            "and returning to the old time gives nothing either"
        );
        assert!(l.take(Some(c.next), 1_001 * S, 1).allowed);
    }

    #[test]
    fn cost_larger_than_available_takes_nothing() {
        let l = Limit::Bucket {
            burst: 10,
            refill: 1,
            period_secs: 1,
        };
        let a = l.take(None, 0, 7);
        assert!(a.allowed);
        let b = l.take(Some(a.next), 0, 5);
        assert!(!b.allowed);
        assert_eq!(
            b.next, a.next,
            "a denied request leaves the bucket as it was"
        );
        assert_eq!(b.retry_after_secs, 2);
        let never = l.take(None, 0, 11);
        assert!(!never.allowed);
        assert!(never.retry_after_secs >= 1);
    }

    #[test]
    fn quota_resets_at_the_window_boundary() {
        let l = Limit::Quota {
            limit: 2,
            window_secs: 60,
        };
        let t0 = 120 * S + 5 * S;
        let a = l.take(None, t0, 1);
        let b = l.take(Some(a.next), t0, 1);
        assert!(a.allowed && b.allowed);
        let c = l.take(Some(b.next), t0, 1);
        assert!(!c.allowed);
        assert_eq!(c.retry_after_secs, 55);
        assert_eq!(c.remaining, 0);
        let d = l.take(Some(c.next), 180 * S, 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 1);
        // Clock back into the old window: still counted in the newer one.
        assert!(l.take(Some(d.next), 170 * S, 1).allowed);
    }

    #[test]
    fn states_round_trip_and_garbage_is_fresh() {
        let s = State {
            level: 12_345,
            stamp: 678,
        };
        assert_eq!(State::decode(&s.encode()), Some(s));
        assert_eq!(State::decode(b"short"), None);
        assert_eq!(State::decode(&[0u8; 17]), None);
    }
}
