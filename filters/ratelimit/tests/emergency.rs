//! Emergency amounts: checked whether or not the mode is on, in force only while it is, kept
//! under their own keys, refused on fleet-wide limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_ratelimit::bucket::Limit;
use portcullis_ratelimit::config::RateLimitConfig;
use serde_json::json;

fn policy(emergency: bool) -> serde_json::Value {
    json!({
        "emergency": emergency,
        "limits": [
            {"name": "tenant", "key": "tenant", "rate": {"burst": 200, "refill": 100},
             "tiers": {"gold": {"rate": {"burst": 1000, "refill": 500}}},
             "emergency": {"rate": {"burst": 10, "refill": 2}}},
            {"name": "app", "key": "app", "rate": {"burst": 50, "refill": 5}}
        ]
    })
}

#[test]
fn the_emergency_amount_replaces_every_tier_only_while_the_mode_is_on() {
    let off = RateLimitConfig::from_value(policy(false)).unwrap();
    assert!(!off.emergency);
    let (amount, _) = off.limits[0].amount(Some("gold"));
    assert_eq!(
        amount,
        Limit::Bucket {
            burst: 1000,
            refill: 500,
            period_secs: 1
        }
    );
    let on = RateLimitConfig::from_value(policy(true)).unwrap();
    let ten = Limit::Bucket {
        burst: 10,
        refill: 2,
        period_secs: 1,
    };
    assert_eq!(on.limits[0].amount(Some("gold")).0, ten);
    assert_eq!(on.limits[0].amount(None).0, ten);
    // Its buckets live apart from the ordinary ones, which wait where they were.
    assert_ne!(
        format!("{:?}", on.limits[0].amount(None).1),
        format!("{:?}", off.limits[0].amount(None).1)
    );
    // A limit without an emergency amount keeps its own.
    assert_eq!(
        on.limits[1].amount(None).0,
        Limit::Bucket {
            burst: 50,
            refill: 5,
            period_secs: 1
        }
    );
}

#[test]
fn an_emergency_amount_is_checked_even_while_the_mode_is_off() {
    let mut p = policy(false);
    p["limits"][0]["emergency"] = json!({"rate": {"burst": 0, "refill": 1}});
    let e = RateLimitConfig::from_value(p).unwrap_err().to_string();
    assert!(e.contains("limits[0].emergency"), "{e}");
    let mut p = policy(false);
    p["limits"][0]["scope"] = json!("global");
    let e = RateLimitConfig::from_value(p).unwrap_err().to_string();
    assert!(e.contains("limits[0].emergency"), "{e}");
}
