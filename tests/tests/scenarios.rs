//! One scenario table, three runners: every case of `policies/tests/*.yaml` — which
//! `portcullis test` runs on the fake host, and `cli/tests/policytest.rs` runs natively — is
//! sent here through real Envoy with the built filters, and must get the same verdict: status,
//! reason, deciding filter, the headers and body the client receives, and the headers and body
//! the upstream receives. The upstream answers each request as its case scripts it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::chain::{Outcome, SimRequest, SimResponse};
use portcullis_cli::policytest::{self, CaseRequest, CaseUpstream, Expect};
use portcullis_tests::harness::{self, test_id, Gateway, GatewayOptions, Policies};
use portcullis_tests::http::{Conn, Request};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Cases whose verdict cannot be reproduced against a real gateway, each with the reason.
/// (Empty is the goal: every entry is a place where the simulator and Envoy differ.)
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// The demo policies as the scenario gateway runs them: one trusted proxy, so each case's
/// `client_ip` can be given as the X-Forwarded-For entry that proxy would add (the simulator
/// takes it as the peer address directly).
fn policies() -> Policies {
    let mut p = harness::demo_policies();
    p.gateway.trusted_hops = 1;
    p
}

fn script(g: &Gateway, id: &str, up: &SimResponse) {
    use base64::Engine as _;
    let body = json!({
        "id": id,
        "status": up.status,
        "headers": up.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "body_b64": base64::engine::general_purpose::STANDARD.encode(&up.body),
    });
    let r = portcullis_tests::http::send(
        g.upstream_addr,
        &Request {
            body: Some(body.to_string().into_bytes()),
            ..Request::new("PUT", "/__admin/script")
        },
    )
    .unwrap_or_else(|e| panic!("scripting the upstream: {e}"));
    assert_eq!(r.status, 204);
}

/// Sends one simulated request through Envoy and describes what happened the way the
/// simulator does.
fn send(
    g: &Gateway,
    conn: &mut Option<Conn>,
    req: &SimRequest,
    up: &SimResponse,
    policies: &Policies,
) -> Outcome {
    let id = test_id("scenario");
    script(g, &id, up);
    let mut r = Request::new(&req.method, &req.path)
        .header("x-test-id", &id)
        .header("x-forwarded-for", &req.client_ip);
    for (k, v) in &req.headers {
        r = r.header(k, v);
    }
    r.body = req.body.clone();
    let resp = loop {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(Conn::connect(g.addr).unwrap_or_else(|e| panic!("connect: {e}"))),
        };
        match c.send(&r) {
            Ok(resp) => break resp,
            // A closed keep-alive connection (a filter's reply closed it): reconnect once.
            Err(_) => *conn = None,
        }
    };
    if resp
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        *conn = None;
    }
    let reason = resp.header("x-portcullis-reason").map(str::to_string);
    let body_json: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let decided_by = match &reason {
        None => "upstream".to_string(),
        Some(_) => {
            let filter = body_json["filter"].as_str().unwrap_or("envoy").to_string();
            // Both ratelimit instances answer as "ratelimit"; the policy names which.
            let ip_limit = body_json["policy"].as_str().is_some_and(|p| {
                policies.ratelimit_ip["limits"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x["name"] == p))
            });
            if filter == "ratelimit" && ip_limit {
                "ratelimit_ip".into()
            } else {
                filter
            }
        }
    };
    let upstream_request = g.upstream_saw(&id).map(|rec| {
        let headers: Vec<(String, String)> = rec["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv[0].as_str()?.to_string(), kv[1].as_str()?.to_string())))
            .collect();
        let body = rec["body"].as_str().unwrap_or("").as_bytes().to_vec();
        (headers, (!body.is_empty()).then_some(body))
    });
    Outcome {
        status: resp.status,
        reason,
        decided_by,
        headers: resp
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        body: resp.body.clone(),
        upstream_request,
        trace: Vec::new(),
        hits: Default::default(),
        audit: Default::default(),
    }
}

#[test]
fn every_policy_test_case_gets_the_same_verdict_from_real_envoy() {
    every_case(false);
}

/// The same table through the one-module build: the filters are the same code, so every
/// verdict must be too (and a root context that ran the wrong filter would show here).
#[test]
fn every_policy_test_case_gets_the_same_verdict_from_the_one_module() {
    every_case(true);
}

fn every_case(one_module: bool) {
    if harness::envoy_binary().is_none() {
        return;
    }
    let port = harness::free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let p = policies();
    let Some(g) = Gateway::start(GatewayOptions {
        policies: p.clone(),
        listen_port: Some(port),
        external_origin: Some(origin.clone()),
        envoy_normalize_path: true,
        one_module,
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    let suites = policytest::load(&harness::repo_root().join("policies/tests"))
        .unwrap_or_else(|e| panic!("{e}"));
    // Emergency rows run against a second gateway rendered with the mode on (what `portcullis
    // emergency on` publishes), on its own port with the same origin scheme.
    let emergency_port = harness::free_port();
    let emergency_origin = format!("http://127.0.0.1:{emergency_port}");
    let emergency = suites
        .iter()
        .any(|s| s.file.cases.iter().any(|c| c.emergency))
        .then(|| {
            Gateway::start(GatewayOptions {
                policies: portcullis_cli::render::emergency_policies(&p),
                listen_port: Some(emergency_port),
                external_origin: Some(emergency_origin.clone()),
                envoy_normalize_path: true,
                one_module,
                ..GatewayOptions::default()
            })
        })
        .flatten();
    let _elog = emergency.as_ref().map(Gateway::log_on_failure);
    let mut failures = Vec::new();
    let mut ran = 0;
    for suite in &suites {
        for case in &suite.file.cases {
            if let Some((_, why)) = KNOWN_DIFFERENCES.iter().find(|(n, _)| *n == case.name) {
                eprintln!("known difference, not compared: {} ({why})", case.name);
                continue;
            }
            let steps: Vec<(f64, &CaseRequest, Option<&CaseUpstream>, Expect)> = match &case.request
            {
                Some(r) => vec![(
                    0.0,
                    r,
                    case.upstream.as_ref(),
                    case.expect.clone().unwrap_or_default(),
                )],
                None => case
                    .sequence
                    .iter()
                    .map(|s| (s.at, &s.request, s.upstream.as_ref(), s.expect.clone()))
                    .collect(),
            };
            let start = Instant::now();
            let mut conn = None;
            for (i, (at, req, up, expect)) in steps.iter().enumerate() {
                // The simulator's clock jumps; here time passes for real.
                let due = Duration::from_secs_f64(at.max(0.0));
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                let (gw, origin) = match (&emergency, case.emergency) {
                    (Some(e), true) => (e, &emergency_origin),
                    (None, true) => panic!("{}: no emergency gateway", case.name),
                    _ => (&g, &origin),
                };
                let sim = suite
                    .sim_request(req, harness::now() as u64, origin)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
                let outcome = send(gw, &mut conn, &sim, &policytest::sim_response(*up), &p);
                ran += 1;
                for d in policytest::compare(&outcome, expect) {
                    failures.push(format!("{} (step {}): {d}", case.name, i + 1));
                }
            }
        }
    }
    assert!(
        ran >= 60,
        "the scenario table has {ran} requests; it must keep at least 60"
    );
    assert!(
        failures.is_empty(),
        "{} difference(s) between the simulator's verdicts and Envoy's:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
