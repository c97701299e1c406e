//! The one Redis operation per decision: a Lua script that checks every descriptor of a request
//! and, only if all admit it, takes from all of them — atomically, because Redis runs a script
//! alone. The arithmetic is `portcullis_ratelimit::bucket` transcribed: lazily refilled token
//! buckets in thousandths of a token and fixed windows, with Redis' own clock (`TIME`, in µs)
//! so that every service replica agrees on time.
//!
//! Lua numbers are doubles: every product stays below 2^53 because global buckets are limited
//! to `burst × period_seconds ≤ 9·10^6` at configuration time, and divisions are corrected to
//! exact integer floor/ceil ([`SCRIPT`]'s `fdiv` / `cdiv`).

use portcullis_ratelimit::bucket::Limit;

/// The script. `KEYS[i]` is descriptor i's state (a hash: `l` = level, `s` = stamp);
/// `ARGV[1]` is 0 (use Redis' clock) or a time in µs (tests replay the filter's arithmetic with
/// it); then five numbers per descriptor: kind (1 bucket, 2 quota), then
/// `burst, refill, period_s` or `limit, window_s, 0`, then the cost. It returns four integers
/// per descriptor: allowed (1/0), remaining, seconds until full / window reset, seconds until
/// the request could pass (0 when allowed).
pub const SCRIPT: &str = r#"
local function fdiv(x, y)
  local q = math.floor(x / y)
  local r = x - q * y
  if r < 0 then q = q - 1 elseif r >= y then q = q + 1 end
  return q
end
local function cdiv(x, y)
  local q = fdiv(x, y)
  if q * y < x then q = q + 1 end
  return q
end
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local n = #KEYS
local out, next_state, all = {}, {}, true
for i = 1, n do
  local o = 1 + (i - 1) * 5
  local kind, a, b, c, cost = tonumber(ARGV[o+1]), tonumber(ARGV[o+2]), tonumber(ARGV[o+3]), tonumber(ARGV[o+4]), tonumber(ARGV[o+5])
  local st = redis.call('HMGET', KEYS[i], 'l', 's')
  local level, stamp = tonumber(st[1]), tonumber(st[2])
  local allowed, remaining, reset, retry, nl, ns, ttl
  if kind == 1 then
    local cap, rate, period = a * 1000, b * 1000, c * 1000000
    if level == nil or stamp == nil then level, stamp = cap, now end
    local tnow = math.max(now, stamp)
    local elapsed = tnow - stamp
    if rate == 0 then
      if level >= cap then nl = cap else nl = level end
      ns = tnow
    elseif level >= cap or elapsed >= cdiv((cap - level) * period, rate) then
      nl, ns = cap, tnow
    else
      local gained = fdiv(elapsed * rate, period)
      local used = cdiv(gained * period, rate)
      nl, ns = level + gained, stamp + math.min(used, elapsed)
    end
    local want = cost * 1000
    local per_token = cdiv(period, math.max(b, 1))
    allowed = nl >= want
    if allowed then nl = nl - want end
    reset = cdiv(fdiv(cap - nl, 1000) * per_token, 1000000)
    if allowed then retry = 0
    elseif want > cap or b == 0 then retry = math.max(reset, 1)
    else retry = math.max(cdiv(cdiv(want - nl, 1000) * per_token, 1000000), 1) end
    remaining = fdiv(nl, 1000)
    if rate > 0 then ttl = cdiv((cap - nl) * period, rate * 1000) + 1000 end
  else
    local wus = b * 1000000
    local win = fdiv(now, wus)
    if stamp ~= nil and stamp > win then win = stamp end
    local used = 0
    if stamp ~= nil and stamp == win and level ~= nil then used = level end
    allowed = used + cost <= a
    if allowed then used = used + cost end
    reset = cdiv((win + 1) * wus - math.max(now, win * wus), 1000000)
    if allowed then retry = 0 else retry = math.max(reset, 1) end
    remaining = a - used
    nl, ns = used, win
    ttl = fdiv((win + 1) * wus - now, 1000) + 1000
  end
  if not allowed then all = false end
  out[#out+1] = allowed and 1 or 0
  out[#out+1] = remaining
  out[#out+1] = reset
  out[#out+1] = retry
  next_state[i] = {nl, ns, ttl}
end
if all then
  for i = 1, n do
    local s = next_state[i]
    redis.call('HSET', KEYS[i], 'l', string.format('%.0f', s[1]), 's', string.format('%.0f', s[2]))
    if s[3] then redis.call('PEXPIRE', KEYS[i], string.format('%.0f', s[3])) else redis.call('PERSIST', KEYS[i]) end
  end
end
return out
"#;

/// The five script arguments of one descriptor.
pub fn args(limit: &Limit, cost: u64) -> [u64; 5] {
    match *limit {
        Limit::Bucket {
            burst,
            refill,
            period_secs,
        } => [1, burst, refill, period_secs, cost],
        Limit::Quota { limit, window_secs } => [2, limit, window_secs, 0, cost],
    }
}

/// One descriptor's verdict as the script returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Admitted.
    pub allowed: bool,
    /// Whole units left.
    pub remaining: u64,
    /// Seconds until full (bucket) or until the window resets (quota).
    pub reset_secs: u64,
    /// Seconds until the request could pass (0 when allowed).
    pub retry_after_secs: u64,
}

/// Reads the script's flat reply (four integers per descriptor); `None` if its shape is wrong.
pub fn verdicts(flat: &[i64], n: usize) -> Option<Vec<Verdict>> {
    if flat.len() != 4 * n {
        return None;
    }
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    Some(
        flat.chunks_exact(4)
            .map(|c| Verdict {
                allowed: c[0] == 1,
                remaining: u(c[1]),
                reset_secs: u(c[2]),
                retry_after_secs: u(c[3]),
            })
            .collect(),
    )
}
