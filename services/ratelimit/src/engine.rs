//! From a `RateLimitRequest` to the script's keys and arguments, and from the script's reply to
//! the `RateLimitResponse` — pure, so every mapping rule is tested without Redis.

use crate::config::{ServiceConfig, ServiceLimit};
use crate::script::{self, Verdict};
use portcullis_ratelimit::bucket::Limit;
use portcullis_ratelimit::rls::{
    Code, CurrentLimit, DescriptorStatus, RateLimitRequest, RateLimitResponse, Unit,
};
use std::collections::HashMap;

/// Most descriptors one request may carry (the filter sends one per global limit).
pub const MAX_DESCRIPTORS: usize = 64;
/// Longest descriptor value accepted (verified identity fields are far shorter).
pub const MAX_VALUE_BYTES: usize = 512;

/// One distinct Redis key to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Redis key.
    pub key: String,
    /// Limit name (for the response).
    pub name: String,
    /// Amount.
    pub amount: Limit,
    /// Units to take.
    pub cost: u64,
}

/// What to ask Redis, and how to map the answer back to the request's descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Distinct keys, in first-seen order.
    pub checks: Vec<Check>,
    /// For each request descriptor: the check that decides it, or `None` when the service knows
    /// no limit for it (answered OK without a limit, as envoyproxy/ratelimit does).
    pub slots: Vec<Option<usize>>,
}

/// Why a request is refused outright (gRPC `INVALID_ARGUMENT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// A descriptor resolved to its limit: name, amount (tier applied), and the keyed entry.
struct Resolved<'c> {
    name: &'c str,
    amount: Limit,
    subject: Option<(String, String)>,
}

fn limit_for<'c>(
    cfg: &'c ServiceConfig,
    domain: &str,
    d: &portcullis_ratelimit::rls::Descriptor,
) -> Option<Resolved<'c>> {
    let limits = cfg.domains.get(domain)?;
    let mut it = d.entries.iter();
    let first = it.next()?;
    if first.key != "limit" {
        return None;
    }
    let (name, limit): (&String, &ServiceLimit) = limits.get_key_value(first.value.as_str())?;
    let mut amount = limit.amount;
    let mut rest: Vec<_> = it.collect();
    if let Some(t) = rest.first().filter(|e| e.key == "tier") {
        if let Some(a) = limit.tiers.get(&t.value) {
            amount = *a;
        }
        rest.remove(0);
    }
    let subject = match (rest.as_slice(), limit.kinds.is_empty()) {
        ([], true) => None,
        ([e], false) if limit.kinds.contains(&e.key.as_str()) && !e.value.is_empty() => {
            Some((e.key.clone(), e.value.clone()))
        }
        _ => return None,
    };
    Some(Resolved {
        name: name.as_str(),
        amount,
        subject,
    })
}

/// Plans a request: validates sizes, resolves each descriptor to a limit and key, merges
/// descriptors that name the same key (their costs add up, so one request cannot read one key
/// twice before writing it).
pub fn plan(cfg: &ServiceConfig, prefix: &str, req: &RateLimitRequest) -> Result<Plan, Invalid> {
    if req.descriptors.len() > MAX_DESCRIPTORS {
        return Err(Invalid("too many descriptors"));
    }
    let mut p = Plan::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, d) in req.descriptors.iter().enumerate() {
        if d.entries
            .iter()
            .any(|e| e.value.len() > MAX_VALUE_BYTES || e.key.len() > 64)
        {
            return Err(Invalid("descriptor entry too long"));
        }
        let Some(Resolved {
            name,
            amount,
            subject,
        }) = limit_for(cfg, &req.domain, d)
        else {
            p.slots.push(None);
            continue;
        };
        // `|` cannot occur in a domain or limit name, and the value comes last: unambiguous.
        let key = match &subject {
            Some((k, v)) => format!("{prefix}|{}|{name}|{k}|{v}", req.domain),
            None => format!("{prefix}|{}|{name}", req.domain),
        };
        let cost = req.hits_for(i);
        match seen.get(&key) {
            Some(&j) => {
                if let Some(c) = p.checks.get_mut(j) {
                    c.cost = c.cost.saturating_add(cost);
                }
                p.slots.push(Some(j));
            }
            None => {
                seen.insert(key.clone(), p.checks.len());
                p.slots.push(Some(p.checks.len()));
                p.checks.push(Check {
                    key,
                    name: name.to_string(),
                    amount,
                    cost,
                });
            }
        }
    }
    Ok(p)
}

/// The script arguments of a plan: the clock (0: Redis' own), then five per check.
pub fn script_args(p: &Plan) -> Vec<u64> {
    std::iter::once(0)
        .chain(
            p.checks
                .iter()
                .flat_map(|c| script::args(&c.amount, c.cost)),
        )
        .collect()
}

fn unit(window_secs: u64) -> Unit {
    match window_secs {
        1 => Unit::Second,
        60 => Unit::Minute,
        3_600 => Unit::Hour,
        86_400 => Unit::Day,
        _ => Unit::Unknown,
    }
}

/// The response for a plan and the script's verdicts (one per check).
pub fn respond(p: &Plan, verdicts: &[Verdict]) -> RateLimitResponse {
    let mut overall = Code::Ok;
    let statuses = p
        .slots
        .iter()
        .map(|slot| {
            let decided = slot.and_then(|j| Some((p.checks.get(j)?, verdicts.get(j)?)));
            match decided {
                None => DescriptorStatus {
                    code: Code::Ok,
                    current_limit: None,
                    limit_remaining: 0,
                    duration_until_reset_secs: None,
                },
                Some((c, v)) => {
                    let code = if v.allowed { Code::Ok } else { Code::OverLimit };
                    if !v.allowed {
                        overall = Code::OverLimit;
                    }
                    DescriptorStatus {
                        code,
                        current_limit: Some(CurrentLimit {
                            requests_per_unit: u32::try_from(c.amount.capacity())
                                .unwrap_or(u32::MAX),
                            unit: unit(c.amount.window_secs()),
                            name: c.name.clone(),
                        }),
                        limit_remaining: u32::try_from(v.remaining).unwrap_or(u32::MAX),
                        duration_until_reset_secs: Some(if v.allowed {
                            v.reset_secs
                        } else {
                            v.retry_after_secs
                        }),
                    }
                }
            }
        })
        .collect();
    RateLimitResponse {
        overall_code: overall,
        statuses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_ratelimit::global::{descriptor, request};

    fn cfg() -> ServiceConfig {
        ServiceConfig::parse(
            "domains:\n  d:\n    tenant: { key: tenant, rate: { burst: 10, refill: 1 }, tiers: { gold: { rate: { burst: 99, refill: 9 } } } }\n    all: { key: global, quota: { limit: 5, window: minute } }\n",
        )
        .unwrap()
    }

    #[test]
    fn filter_descriptors_resolve_to_keys_amounts_and_costs() {
        let req = request(
            "d",
            vec![
                (descriptor("tenant", Some("gold"), "tenant:acme"), 3),
                (descriptor("all", None, "global"), 1),
                (descriptor("tenant", None, "ip:2001:db8::1"), 3),
                (descriptor("nope", None, "tenant:acme"), 1),
            ],
        );
        let p = plan(&cfg(), "pc", &req).unwrap();
        assert_eq!(p.checks[0].key, "pc|d|tenant|tenant|acme");
        assert_eq!(p.checks[0].amount.capacity(), 99);
        assert_eq!(p.checks[0].cost, 3);
        assert_eq!(p.checks[1].key, "pc|d|all");
        assert_eq!(p.checks[1].cost, 1);
        assert_eq!(p.checks[2].key, "pc|d|tenant|remote_address|2001:db8::1");
        assert_eq!(p.slots, vec![Some(0), Some(1), Some(2), None]);
    }

    #[test]
    fn malformed_descriptors_know_no_limit_and_duplicates_merge() {
        use portcullis_ratelimit::rls::{Descriptor, Entry};
        let e = |k: &str, v: &str| Entry {
            key: k.into(),
            value: v.into(),
        };
        let d = |entries| Descriptor {
            entries,
            hits_addend: None,
        };
        let req = RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![
                d(vec![e("limit", "tenant"), e("app", "x")]), // wrong kind
                d(vec![e("limit", "tenant")]),                // missing subject
                d(vec![e("tenant", "acme")]),                 // no limit entry
                d(vec![e("limit", "all"), e("tenant", "acme")]), // global takes none
                d(vec![e("limit", "tenant"), e("tenant", "")]), // empty value
                d(vec![e("limit", "tenant"), e("tenant", "a")]),
                d(vec![e("limit", "tenant"), e("tenant", "a")]),
            ],
            hits_addend: 2,
        };
        let p = plan(&cfg(), "pc", &req).unwrap();
        assert_eq!(
            p.slots,
            vec![None, None, None, None, None, Some(0), Some(0)]
        );
        assert_eq!(p.checks[0].cost, 4);
        let other_domain = RateLimitRequest {
            domain: "x".into(),
            ..req.clone()
        };
        assert!(plan(&cfg(), "pc", &other_domain).unwrap().checks.is_empty());
        let long = RateLimitRequest {
            descriptors: vec![d(vec![e("limit", &"x".repeat(600))])],
            ..req
        };
        assert!(plan(&cfg(), "pc", &long).is_err());
    }

    #[test]
    fn responses_carry_remaining_and_the_retry_time_of_a_refusal() {
        let req = request(
            "d",
            vec![
                (descriptor("tenant", None, "tenant:acme"), 1),
                (descriptor("all", None, "global"), 1),
                (descriptor("nope", None, "global"), 1),
            ],
        );
        let p = plan(&cfg(), "pc", &req).unwrap();
        let v = [
            Verdict {
                allowed: true,
                remaining: 9,
                reset_secs: 1,
                retry_after_secs: 0,
            },
            Verdict {
                allowed: false,
                remaining: 0,
                reset_secs: 40,
                retry_after_secs: 40,
            },
        ];
        let r = respond(&p, &v);
        assert_eq!(r.overall_code, Code::OverLimit);
        assert_eq!(r.statuses[0].limit_remaining, 9);
        assert_eq!(r.statuses[1].code, Code::OverLimit);
        assert_eq!(r.statuses[1].duration_until_reset_secs, Some(40));
        let l = r.statuses[1].current_limit.as_ref().unwrap();
        assert_eq!(
            (l.requests_per_unit, l.unit, l.name.as_str()),
            (5, Unit::Minute, "all")
        );
        assert_eq!(r.statuses[2].code, Code::Ok);
        assert!(r.statuses[2].current_limit.is_none());
    }
}
