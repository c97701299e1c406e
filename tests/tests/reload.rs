//! Hot policy reload and emergency mode against real Envoy: policies changed with `portcullis
//! apply` and the mode switched with `portcullis emergency` while requests keep flowing, with
//! no failed request, shared state (quotas, DPoP replay records) carried across every change,
//! and an invalid policy refused while the running one keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_tests::harness::{
    self, claims, demo_token, rs256, Gateway, GatewayOptions, TempDir,
};
use portcullis_tests::http::{Conn, Request, Response};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The per-IP limit of the test policies: every request of the test comes from 127.0.0.1, so
/// it is set far above what the load can send (the demo's would refuse the load itself).
const RATELIMIT_IP: &str = "stat_prefix: ratelimit_ip
headers: none
limits:
  - name: per-ip
    key: ip
    rate: { burst: 10000000, refill: 10000000, period_seconds: 1 }
    emergency: { rate: { burst: 5000000, refill: 5000000, period_seconds: 1 } }
";

/// The post-authn limits of the test policies: a generous tenant limit (its emergency amount is
/// what the emergency test observes), `probe` on the fixtures route (its burst is what each
/// policy change alters), `counted` on the legacy route (a quota whose count must carry over).
fn ratelimit(probe_burst: u64) -> String {
    format!(
        "stat_prefix: ratelimit
headers: draft_and_legacy
limits:
  - name: tenant
    key: tenant
    rate: {{ burst: 1000000, refill: 1000000, period_seconds: 1 }}
    emergency: {{ rate: {{ burst: 500000, refill: 500000, period_seconds: 1 }} }}
  - name: probe
    key: tenant
    routes: [{{ methods: [GET], template: \"/api/v1/tenants/{{tenant}}/fixtures/{{name}}\" }}]
    rate: {{ burst: {probe_burst}, refill: 1, period_seconds: 1 }}
  - name: counted
    key: tenant
    routes: [{{ methods: [GET], template: \"/api/v1/tenants/{{tenant}}/legacy/{{name}}\" }}]
    quota: {{ limit: 100, window: day }}
"
    )
}

/// A copy of the demo policies with the test's limits.
fn policy_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let src = harness::repo_root().join("policies");
    let ok = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", src.display()))
        .arg(&dir.0)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp policies");
    std::fs::write(dir.0.join("ratelimit-ip.yaml"), RATELIMIT_IP).unwrap();
    std::fs::write(dir.0.join("ratelimit.yaml"), ratelimit(1000)).unwrap();
    dir
}

/// Runs `portcullis` with `args`; returns (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(harness::cli_binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", harness::cli_binary().display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `portcullis apply` of `policies` to the gateway's reload directory, confirmed through the
/// admin endpoint.
fn apply(g: &Gateway, policies: &Path) -> (bool, String) {
    let xds = g.reload_dir.as_ref().unwrap();
    cli(&[
        "apply",
        "--policies",
        &policies.to_string_lossy(),
        "--reload-dir",
        &xds.to_string_lossy(),
        "--admin",
        &g.admin.to_string(),
    ])
}

fn emergency(g: &Gateway, state: &str) -> (bool, String) {
    let xds = g.reload_dir.as_ref().unwrap();
    cli(&[
        "emergency",
        state,
        "--reload-dir",
        &xds.to_string_lossy(),
        "--admin",
        &g.admin.to_string(),
    ])
}

/// One request the load sends, and the statuses it may get.
#[derive(Clone)]
struct Probe {
    req: Request,
    ok: fn(&Response) -> bool,
    essential: bool,
}

/// Requests sent continuously from several threads, each over its own keep-alive
/// connection; every unexpected answer or connection error is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    essential_failures: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(g: &Gateway, probes: Vec<Probe>, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let essential_failures = Arc::new(AtomicU64::new(0));
        let handles = (0..threads)
            .map(|t| {
                let (stop, sent, failures, ef) = (
                    stop.clone(),
                    sent.clone(),
                    failures.clone(),
                    essential_failures.clone(),
                );
                let probes = probes.clone();
                let addr = g.addr;
                std::thread::spawn(move || {
                    let mut conn: Option<Conn> = None;
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let p = &probes[i % probes.len()];
                        i += 1;
                        let c = match &mut conn {
                            Some(c) => c,
                            None => match Conn::connect(addr) {
                                Ok(c) => conn.insert(c),
                                Err(e) => {
                                    failures.lock().unwrap().push(format!("connect: {e}"));
                                    ef.fetch_add(1, Ordering::Relaxed);
                                    std::thread::sleep(Duration::from_millis(10));
                                    continue;
                                }
                            },
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        let bad = match c.send(&p.req) {
                            Ok(r) if (p.ok)(&r) => None,
                            Ok(r) => Some(format!(
                                "{} {}: {} {}",
                                p.req.method,
                                p.req.target,
                                r.status,
                                r.body_str()
                            )),
                            Err(e) => {
                                conn = None;
                                Some(format!("{} {}: {e}", p.req.method, p.req.target))
                            }
                        };
                        if let Some(b) = bad {
                            if p.essential {
                                ef.fetch_add(1, Ordering::Relaxed);
                            }
                            failures.lock().unwrap().push(b);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failures,
            essential_failures,
            threads: handles,
        }
    }

    /// Stops the threads; returns (requests sent, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads {
            h.join().unwrap();
        }
        let f = self.failures.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), f)
    }
}

fn status_200(r: &Response) -> bool {
    r.status == 200
}

/// Reads until `check` holds, at most 10 s; returns how long it took.
fn until(g: &Gateway, req: &Request, check: impl Fn(&Response) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let r = g.send(req);
        if check(&r) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not in force after 10 s: {} {:?} {}",
            r.status,
            r.header("ratelimit-policy"),
            r.body_str()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `counted` quota's remaining units, from the `RateLimit` header of a legacy request.
fn counted_remaining(g: &Gateway, token: &str) -> u64 {
    let r = g.send(&Request::get("/api/v1/tenants/counted/legacy/x").bearer(token));
    let h = r.header("ratelimit").unwrap_or_default().to_string();
    let rest = h
        .strip_prefix("\"counted\";r=")
        .unwrap_or_else(|| panic!("ratelimit header {h:?} ({})", r.status));
    rest.split(';').next().unwrap().parse().unwrap()
}

fn start(tag: &str, policies: &TempDir) -> Option<Gateway> {
    start_with(tag, policies, false)
}

fn start_with(tag: &str, policies: &TempDir, one_module: bool) -> Option<Gateway> {
    let port = harness::free_port();
    Gateway::start(GatewayOptions {
        policies: portcullis_cli::policy::load(&policies.0)
            .unwrap_or_else(|e| panic!("{tag}: {e}")),
        listen_port: Some(port),
        external_origin: Some(format!("http://127.0.0.1:{port}")),
        reload: true,
        one_module,
        wasm_log_level: "info",
        ..GatewayOptions::default()
    })
}

#[test]
fn ten_policy_changes_under_load_fail_no_request_and_keep_shared_state() {
    ten_policy_changes(false);
}

/// The same with every filter in one VM (`render --one-module`): a changed filter's new root
/// context starts in the VM the other filters keep running in, and must pick its own filter.
#[test]
fn ten_policy_changes_in_the_one_module_fail_no_request_and_keep_shared_state() {
    ten_policy_changes(true);
}

fn ten_policy_changes(one_module: bool) {
    if harness::envoy_binary().is_none() {
        return;
    }
    let dir = policy_dir(if one_module { "reload-one" } else { "reload" });
    let Some(g) = start_with("reload", &dir, one_module) else {
        return;
    };
    // What Envoy loads: one module for every filter, or each filter's own.
    let xds = g.reload_dir.clone().unwrap();
    let files: String = std::fs::read_dir(&xds)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert_eq!(files.contains("/portcullis.wasm"), one_module);
    assert_eq!(files.contains("/authn.wasm"), !one_module);
    let _log = g.log_on_failure();
    let origin = format!("http://{}", g.addr);

    // State made before any change: part of a quota used, a DPoP proof used once.
    let counted = demo_token("counted", "customers:read");
    for _ in 0..5 {
        counted_remaining(&g, &counted);
    }
    assert_eq!(counted_remaining(&g, &counted), 94);
    let path = "/api/v1/tenants/acme/customers";
    let mut c = claims("acme", "customers:read");
    c["cnf"] =
        json!({"jkt": portcullis_authn::dpop::thumbprint(&harness::demo_dpop_jwk()).unwrap()});
    let bound = rs256(&c);
    let proof = harness::demo_dpop_proof(
        &bound,
        "GET",
        &format!("{origin}{path}"),
        "used-before-the-reloads",
    );
    let dpop_req = Request::get(path)
        .header("authorization", &format!("DPoP {bound}"))
        .header("dpop", &proof);
    assert_eq!(g.send(&dpop_req).status, 200);

    let reader = demo_token("load", "customers:read");
    let load = Load::start(
        &g,
        vec![
            Probe {
                req: Request::get("/healthz"),
                ok: status_200,
                essential: true,
            },
            Probe {
                req: Request::get("/api/v1/tenants/load/customers/c-1001").bearer(&reader),
                ok: status_200,
                essential: true,
            },
            Probe {
                req: Request::get("/api/v1/tenants/load/customers").bearer(&reader),
                ok: status_200,
                essential: false,
            },
        ],
        4,
    );

    let probe = demo_token("probe", "customers:read");
    let probe_req = Request::get("/api/v1/tenants/probe/fixtures/customers").bearer(&probe);
    let mut took = Vec::new();
    for i in 1..=10u64 {
        let burst = 1000 + i;
        std::fs::write(dir.0.join("ratelimit.yaml"), ratelimit(burst)).unwrap();
        // authn changes too: a route that exists only in this version of the policy.
        let mut authn: Value = serde_norway::from_str(
            &std::fs::read_to_string(harness::repo_root().join("policies/authn.yaml")).unwrap(),
        )
        .unwrap();
        authn["routes"].as_array_mut().unwrap().push(json!({
            "name": format!("marker-{i}"),
            "match": {"methods": ["GET"], "path": format!("/healthz/marker-{i}")},
            "allow": "anonymous",
        }));
        std::fs::write(
            dir.0.join("authn.yaml"),
            serde_norway::to_string(&authn).unwrap(),
        )
        .unwrap();
        let t0 = Instant::now();
        let (ok, out) = apply(&g, &dir.0);
        assert!(ok, "apply {i}: {out}");
        assert!(out.contains("portcullis.ratelimit\n"), "{out}");
        assert!(out.contains("portcullis.authn\n"), "{out}");
        let want = format!("\"probe\";q={burst};");
        until(&g, &probe_req, |r| {
            r.header("ratelimit-policy")
                .is_some_and(|h| h.contains(&want))
        });
        // The marker route answers past authn (the upstream's 404), the previous one is gone.
        until(&g, &Request::get(&format!("/healthz/marker-{i}")), |r| {
            r.status == 404 && r.header("x-portcullis-reason").is_none()
        });
        took.push(t0.elapsed());
        if i > 1 {
            let old = g.send(&Request::get(&format!("/healthz/marker-{}", i - 1)));
            assert_eq!(old.status, 403, "{}", old.body_str());
        }
        // The quota counts on from where it was.
        assert_eq!(counted_remaining(&g, &counted), 94 - i, "after change {i}");
    }

    // An invalid policy is refused before anything is written; the running one keeps serving.
    let xds = g.reload_dir.clone().unwrap();
    let before: Vec<(String, String)> = std::fs::read_dir(&xds)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.0.join("ratelimit.yaml"),
        ratelimit(5).replace("burst: 5,", "burst: 0,"),
    )
    .unwrap();
    let (ok, out) = apply(&g, &dir.0);
    assert!(!ok, "an invalid policy was applied: {out}");
    assert!(out.contains("ratelimit.yaml"), "{out}");
    for (p, text) in &before {
        assert_eq!(&std::fs::read_to_string(p).unwrap(), text, "{p} changed");
    }
    let r = g.send(&probe_req);
    assert!(
        r.header("ratelimit-policy")
            .is_some_and(|h| h.contains("\"probe\";q=1010;")),
        "{:?}",
        r.header("ratelimit-policy")
    );

    let (sent, failures) = load.finish();
    // The proof used before the ten reloads is still remembered.
    let r = g.send(&dpop_req);
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert_eq!(r.json()["reason"], "dpop_proof_replayed");
    eprintln!(
        "reload: {sent} requests under load, {} failed; change to rule in force: {:?}",
        failures.len(),
        took
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed across the reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(sent > 100, "the load sent only {sent} requests");
    assert!(
        took.iter().all(|t| *t <= Duration::from_secs(2)),
        "a change took more than 2 s to be in force: {took:?}"
    );
    // Envoy counted every reload and refused none.
    let stat = |s: &str| {
        g.stat(&format!(
            "extension_config_discovery.http_filter.portcullis.ratelimit.{s}"
        ))
    };
    assert!(stat("update_success").unwrap_or(0) >= 11);
    assert_eq!(stat("update_rejected").unwrap_or(0), 0);
}

#[test]
fn emergency_mode_on_then_off_under_load() {
    if harness::envoy_binary().is_none() {
        return;
    }
    let dir = policy_dir("emergency");
    let Some(g) = start("emergency", &dir) else {
        return;
    };
    let _log = g.log_on_failure();
    let reader = demo_token("load", "customers:read");
    let unmask = demo_token("acme", "customers:read pii:ssn:read");
    let one = "/api/v1/tenants/acme/customers/c-1001";
    let list = "/api/v1/tenants/acme/customers";
    let ssn = |r: &Response| r.json()["ssn"].as_str().unwrap_or_default().to_string();
    // Off: the unmask scope reveals, every route is open, the ordinary limits apply.
    let r = g.send(&Request::get(one).bearer(&unmask));
    assert_eq!((r.status, ssn(&r).as_str()), (200, "123-45-6780"));
    assert_eq!(g.send(&Request::get(list).bearer(&unmask)).status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("1000000"));

    let load = Load::start(
        &g,
        vec![
            Probe {
                req: Request::get("/healthz"),
                ok: status_200,
                essential: true,
            },
            Probe {
                req: Request::get("/api/v1/tenants/load/customers/c-1001").bearer(&reader),
                ok: status_200,
                essential: true,
            },
            Probe {
                // Not essential: open, or closed with the emergency answer — nothing else.
                req: Request::get("/api/v1/tenants/load/customers").bearer(&reader),
                ok: |r| {
                    r.status == 200 || (r.status == 503 && r.json()["reason"] == "emergency_mode")
                },
                essential: false,
            },
        ],
        4,
    );

    let (ok, out) = emergency(&g, "on");
    assert!(ok, "emergency on: {out}");
    let t_on = until(&g, &Request::get(list).bearer(&unmask), |r| r.status == 503);
    let r = g.send(&Request::get(list).bearer(&unmask));
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    assert_eq!(r.json()["reason"], "emergency_mode");
    assert_eq!(r.header("x-portcullis-reason"), Some("emergency_mode"));
    assert_eq!(g.send(&Request::get("/healthz")).status, 200);
    let r = g.send(&Request::get(one).bearer(&unmask));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(ssn(&r), "***-**-6780", "the unmask scope is ignored");
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some("500000"),
        "emergency tier"
    );
    let xds = g.reload_dir.clone().unwrap();
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(xds.join("portcullis-reload.json")).unwrap())
            .unwrap();
    assert_eq!(m["emergency"], true);
    // A while in the mode under load, so the load crosses both switches with requests in flight.
    std::thread::sleep(Duration::from_secs(1));

    let (ok, out) = emergency(&g, "off");
    assert!(ok, "emergency off: {out}");
    let t_off = until(&g, &Request::get(list).bearer(&unmask), |r| r.status == 200);
    let r = g.send(&Request::get(one).bearer(&unmask));
    assert_eq!(ssn(&r), "123-45-6780");
    assert_eq!(r.header("x-ratelimit-limit"), Some("1000000"));
    std::thread::sleep(Duration::from_secs(1));

    let ef = load.essential_failures.load(Ordering::Relaxed);
    let (sent, failures) = load.finish();
    eprintln!(
        "emergency: {sent} requests under load, {} failed ({ef} on essential routes); on in force after {t_on:?}, off after {t_off:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(sent > 100, "the load sent only {sent} requests");
}
