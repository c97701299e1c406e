//! DPoP (RFC 9449) against real Envoy with four workers: a proof is accepted once, even when
//! the same request is fired concurrently at every worker (the `jti` record lives in Envoy's
//! shared data, updated with CAS); downgrade and wrong-URI proofs are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_tests::harness::{self, claims, rs256, Gateway, GatewayOptions};
use portcullis_tests::http::{Request, Response};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};

fn proof(token: &str, method: &str, htu: &str, jti: &str) -> String {
    harness::demo_dpop_proof(token, method, htu, jti)
}

fn denied_with(r: &Response, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{}", r.body_str());
    assert_eq!(r.json()["reason"], reason, "{}", r.body_str());
}

#[test]
fn a_proof_is_accepted_exactly_once_across_workers() {
    if harness::envoy_binary().is_none() {
        return;
    }
    let port = harness::free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut policies = harness::demo_policies();
    policies.authn["dpop"]["external_origin"] = json!(origin);
    let Some(g) = Gateway::start(GatewayOptions {
        policies,
        concurrency: 4,
        listen_port: Some(port),
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    let path = "/api/v1/tenants/acme/customers";
    let mut c = claims("acme", "customers:read");
    c["cnf"] =
        json!({"jkt": portcullis_authn::dpop::thumbprint(&harness::demo_dpop_jwk()).unwrap()});
    let token = rs256(&c);
    let dpop_get = |p: &str| {
        Request::get(path)
            .header("authorization", &format!("DPoP {token}"))
            .header("dpop", p)
    };

    // A fresh proof per request works.
    for i in 0..3 {
        let r = g.send(&dpop_get(&proof(
            &token,
            "GET",
            &format!("{origin}{path}"),
            &format!("fresh-{i}"),
        )));
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(r.json()["customers"][0]["ssn"], "***-**-6780");
    }
    // The same proof, fired at once from 48 connections (spread over the 4 workers).
    let shared = proof(&token, "GET", &format!("{origin}{path}"), "replayed-once");
    let n = 48;
    let barrier = Arc::new(Barrier::new(n));
    let addr = g.addr;
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let req = dpop_get(&shared);
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                portcullis_tests::http::send(addr, &req)
                    .map(|r| (r.status, r.json()["reason"].clone()))
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let replayed = results
        .iter()
        .filter(|(s, r)| *s == 401 && r == "dpop_proof_replayed")
        .count();
    assert_eq!((ok, replayed), (1, n - 1), "{results:?}");

    // Downgrade: the bound token as Bearer. Wrong URI and method. No proof.
    let r = g.send(&Request::get(path).bearer(&token));
    denied_with(&r, 401, "dpop_downgrade");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("DPoP algs="));
    denied_with(
        &g.send(&dpop_get(&proof(
            &token,
            "GET",
            &format!("http://evil.example{path}"),
            "u1",
        ))),
        401,
        "invalid_dpop_proof",
    );
    denied_with(
        &g.send(&dpop_get(&proof(
            &token,
            "POST",
            &format!("{origin}{path}"),
            "u2",
        ))),
        401,
        "invalid_dpop_proof",
    );
    denied_with(
        &g.send(&Request::get(path).header("authorization", &format!("DPoP {token}"))),
        401,
        "invalid_dpop_proof",
    );
    // Forwarding headers cannot move the expected origin.
    let spoofed = proof(
        &token,
        "GET",
        &format!("https://spoofed.example{path}"),
        "u3",
    );
    let r = g.send(
        &dpop_get(&spoofed)
            .header("x-forwarded-host", "spoofed.example")
            .header("x-forwarded-proto", "https")
            .header("host", "spoofed.example"),
    );
    denied_with(&r, 401, "invalid_dpop_proof");
    assert!(
        g.stat("wasmcustom.portcullis.authn.denied.dpop_proof_replayed")
            .unwrap_or(0)
            >= (n as u64) - 1
    );
    // The plain demo tokens (unbound) keep working as Bearer.
    assert_eq!(
        g.send(&Request::get(path).bearer(&rs256(&claims("acme", "customers:read"))))
            .status,
        200
    );
}
