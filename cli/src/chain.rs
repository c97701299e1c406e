//! The gateway chain, run natively by the filters' own callbacks on the core's fake host
//! (`portcullis_core::fake`): ratelimit (per IP) → authn → ratelimit → pii → schema → buffer
//! → upstream, and back. `portcullis test` and `portcullis explain` use it; nothing here
//! decides anything — what differs from Envoy is only the transport (no sockets, a fake clock,
//! shared data in memory with Envoy's CAS contract).

use crate::gateway::Underscores;
use crate::policy::{self, Policies};
use crate::Result;
use portcullis_authn::config::AuthnConfig;
use portcullis_authn::Authn;
use portcullis_core::fake::{self, Edge, Gateway, Instance, Process, UnderscoreAction};
use portcullis_pii::config::PiiConfig;
use portcullis_pii::Pii;
use portcullis_ratelimit::config::RateLimitConfig;
use portcullis_ratelimit::RateLimit;
use portcullis_schema::config::SchemaConfig;
use portcullis_schema::Schema;
use std::collections::BTreeSet;

/// Every filter config of a policy directory, compiled (for coverage), and the chain built
/// from the same documents.
pub struct Compiled {
    /// authn.
    pub authn: AuthnConfig,
    /// ratelimit (after authn).
    pub ratelimit: RateLimitConfig,
    /// ratelimit (per IP, before authn).
    pub ratelimit_ip: RateLimitConfig,
    /// schema.
    pub schema: SchemaConfig,
    /// pii (gateway).
    pub pii: PiiConfig,
    /// The origin clients reach the gateway at (the policy's DPoP `external_origin`).
    pub origin: String,
    instances: Vec<Instance>,
    edge: Edge,
}

/// The path of a request target, without query or fragment (what DPoP's `htu` names).
pub fn path_only(target: &str) -> &str {
    portcullis_core::path::split_query(target).0
}

/// The gateway's filter instances in chain order (names as `decided_by` reports them).
pub const CHAIN: [&str; 5] = ["ratelimit_ip", "authn", "ratelimit", "pii", "schema"];

impl Compiled {
    /// Compiles loaded policies.
    pub fn new(p: &Policies) -> Result<Self> {
        let bytes = |v: &serde_json::Value| v.to_string().into_bytes();
        let gw = &p.gateway;
        let authn = policy::compile_authn(&p.authn)?;
        let origin = p.authn["dpop"]["external_origin"]
            .as_str()
            .unwrap_or("http://127.0.0.1:10000")
            .trim_end_matches('/')
            .to_string();
        Ok(Compiled {
            origin,
            authn,
            ratelimit: policy::compile_ratelimit(&p.ratelimit, policy::RATELIMIT_FILE)?,
            ratelimit_ip: policy::compile_ratelimit(&p.ratelimit_ip, policy::RATELIMIT_IP_FILE)?,
            schema: policy::compile_schema(&p.schema)?,
            pii: policy::compile_pii(&p.pii, policy::PII_FILE)?,
            instances: vec![
                Instance::new::<RateLimit>("ratelimit_ip", bytes(&p.ratelimit_ip)),
                Instance::new::<Authn>("authn", bytes(&p.authn)),
                Instance::new::<RateLimit>("ratelimit", bytes(&p.ratelimit)),
                Instance::new::<Pii>("pii", bytes(&p.pii)),
                Instance::new::<Schema>("schema", bytes(&p.schema)),
            ],
            // What the gateway template renders around the filters.
            edge: Edge {
                trusted_hops: gw.trusted_hops,
                underscores: match gw.headers.underscores {
                    Underscores::Drop => UnderscoreAction::Drop,
                    Underscores::Reject => UnderscoreAction::Reject,
                    Underscores::Allow => UnderscoreAction::Allow,
                },
                stripped: gw.stripped_headers(),
                max_request_bytes: p.buffer_filter_bytes(),
                normalize_path: true,
                response_hold: true,
            },
        })
    }
}

/// State that lives across requests: one fake Envoy (one worker) with its shared data, clock
/// and each filter's per-worker state.
pub struct ChainState {
    gateway: Gateway,
}

impl Compiled {
    /// The chain on one worker of a fake Envoy whose clock, shared data and host-call counter
    /// are `process`'s.
    pub fn gateway(&self, process: Process) -> Result<Gateway> {
        Gateway::new(self.instances.clone(), 1, self.edge.clone(), process)
            .map_err(|(name, e)| crate::CliError(format!("{name}: {e}")))
    }
}

impl ChainState {
    /// A fresh gateway (empty caches, full buckets).
    pub fn new(c: &Compiled) -> Result<Self> {
        Ok(ChainState {
            gateway: c.gateway(Process::default())?,
        })
    }
}

/// A request as the client sends it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// Method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<Vec<u8>>,
    /// Client address.
    pub client_ip: String,
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub struct SimResponse {
    /// Status.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// One line of the explanation: a filter, the rule it matched, what it decided and why.
#[derive(Debug, Clone)]
pub struct Step {
    /// Filter instance (`ratelimit_ip`, `authn`, `ratelimit`, `pii`, `schema`, `upstream`).
    pub filter: String,
    /// Route or rule that matched (`-` for none).
    pub matched: String,
    /// Decision and reason.
    pub outcome: String,
}

/// What was exercised, for coverage.
#[derive(Debug, Clone, Default)]
pub struct Hits {
    /// `kind:name` items.
    pub items: BTreeSet<String>,
}

/// What reached the upstream: headers and body.
pub type Forwarded = (Vec<(String, String)>, Option<Vec<u8>>);

/// The result of running one request through the chain.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Status the client receives (0: the stream was reset).
    pub status: u16,
    /// Reason code, when a filter (or Envoy) answered.
    pub reason: Option<String>,
    /// Which filter answered (`upstream` when the request went through).
    pub decided_by: String,
    /// Response headers the client receives (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// Response body the client receives.
    pub body: Vec<u8>,
    /// What reached the upstream (headers, body), if anything did.
    pub upstream_request: Option<Forwarded>,
    /// The explanation.
    pub trace: Vec<Step>,
    /// Coverage items.
    pub hits: Hits,
    /// The audit fields the filters recorded (what the access log would write).
    pub audit: std::collections::BTreeMap<String, String>,
}

/// Runs one request (and, if it gets through, the upstream's `response`) at `now_ns`.
pub fn run(
    _c: &Compiled,
    st: &mut ChainState,
    req: &SimRequest,
    response: &SimResponse,
    now_ns: u64,
) -> Outcome {
    st.gateway.process.set_now(now_ns);
    let ip = req.client_ip.as_str();
    let source = if ip.contains(':') {
        format!("[{ip}]:40000")
    } else {
        format!("{ip}:40000")
    };
    let fake_req = fake::Request {
        method: req.method.clone(),
        path: req.path.clone(),
        headers: req.headers.clone(),
        body: req.body.clone(),
        source,
        peer_cert_sha256: None,
    };
    let answer = fake::Response {
        status: response.status,
        headers: response.headers.clone(),
        body: response.body.clone(),
    };
    let ex = st.gateway.explain(0, &fake_req, &|_| answer.clone());
    let mut hits = Hits::default();
    let trace = ex
        .steps
        .iter()
        .map(|s| {
            hits.items.extend(s.hits.iter().cloned());
            Step {
                filter: s.filter.clone(),
                matched: s.matched.clone(),
                outcome: s.outcome.clone(),
            }
        })
        .collect();
    Outcome {
        status: ex.response.status,
        reason: ex
            .decided_by
            .as_ref()
            .and_then(|_| ex.reason().map(str::to_string)),
        decided_by: ex.decided_by.clone().unwrap_or_else(|| "upstream".into()),
        headers: ex.response.headers.clone(),
        body: ex.response.body.clone(),
        upstream_request: ex.upstream.as_ref().map(|u| {
            (
                u.headers.clone(),
                (!u.body.is_empty()).then(|| u.body.clone()),
            )
        }),
        trace,
        hits,
        audit: ex.audit.clone(),
    }
}

/// Every coverage item of a compiled policy set, in a stable order.
pub fn coverage_items(c: &Compiled) -> Vec<String> {
    let mut items = Vec::new();
    for rl in [&c.ratelimit_ip, &c.ratelimit] {
        items.extend(
            rl.limits
                .iter()
                .map(|l| format!("{}.limit:{}", rl.stat_prefix, l.name)),
        );
    }
    items.extend(
        c.authn
            .routes
            .iter()
            .map(|(_, r)| format!("authn.route:{}", r.name)),
    );
    // Every catalog app must be admitted or refused by some case.
    items.extend(
        c.authn
            .catalog
            .iter()
            .flat_map(|cat| &cat.apps)
            .map(|a| format!("catalog.app:{}", a.id)),
    );
    items.extend(
        c.pii
            .routes
            .iter()
            .map(|(_, r)| format!("pii.route:{}", r.name)),
    );
    items.extend(c.pii.rules.iter().map(|r| format!("pii.rule:{}", r.name)));
    items.extend(
        c.schema
            .routes
            .iter()
            .map(|(_, r)| format!("schema.route:{}", r.name)),
    );
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{sign_raw, SigningAlg};
    use portcullis_core::audit::HashKey;
    use serde_json::json;

    /// The demo policies without the app catalog (admitting apps is not these tests' subject),
    /// the current second, and a demo RS256 token with `claims` added to the standard ones.
    fn setup(claims: serde_json::Value) -> (crate::policy::Policies, u64, String) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut p = crate::policy::load(&root.join("policies")).unwrap();
        if let Some(a) = p.authn.as_object_mut() {
            a.remove("catalog");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let pem = std::fs::read(root.join("policies/demo-keys/demo-rs256.key.pem")).unwrap();
        let mut c = json!({"iss": "https://idp.demo.portcullis.local", "aud": "portcullis-demo-api",
                           "sub": "alice@example.com", "tenant": "acme", "scope": "customers:read",
                           "iat": now, "exp": now + 600});
        for (k, v) in claims.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        let header = json!({"alg": "RS256", "kid": "demo-rs256", "typ": "JWT"});
        let token = sign_raw(SigningAlg::RS256, &pem, &header, &c).unwrap();
        (p, now, token)
    }

    /// `GET /api/v1/tenants/acme/customers` from 192.0.2.7, with the token if given.
    fn list_customers(auth: Option<&str>) -> SimRequest {
        SimRequest {
            method: "GET".into(),
            path: "/api/v1/tenants/acme/customers".into(),
            headers: auth
                .map(|t| vec![("authorization".into(), format!("Bearer {t}"))])
                .unwrap_or_default(),
            body: None,
            client_ip: "192.0.2.7".into(),
        }
    }

    /// An upstream answer with one customer's e-mail in it.
    fn one_customer() -> SimResponse {
        SimResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"customers":[{"id":"c1","name":"Ada","email":"ada@acme.example.com"}]}"#
                .to_vec(),
        }
    }

    #[test]
    fn the_chain_records_the_audit_fields_the_access_log_writes() {
        // `crm-web` is not in the demo app catalog, which `setup` leaves out.
        let (mut p, now, token) = setup(json!({"client_id": "crm-web"}));
        let key = "ab".repeat(32);
        p.authn["audit"] = json!({ "hash_key": key });
        for c in [
            &mut p.ratelimit,
            &mut p.ratelimit_ip,
            &mut p.pii,
            &mut p.schema,
        ] {
            c["audit"] = json!(true);
        }
        let c = Compiled::new(&p).unwrap();
        let mut st = ChainState::new(&c).unwrap();
        let req = list_customers;
        let upstream = one_customer();
        let ok = run(
            &c,
            &mut st,
            &req(Some(&token)),
            &upstream,
            now * 1_000_000_000,
        );
        assert_eq!(ok.status, 200, "{:?}", ok.reason);
        let a = &ok.audit;
        let k = HashKey::from_hex(&key).unwrap();
        assert_eq!(a["decision"], "allow");
        assert_eq!(a["route"], "list-customers");
        assert_eq!(a["auth"], "jwt");
        assert_eq!(a["tenant"], "acme");
        assert_eq!(a["app"], "crm-web");
        assert_eq!(
            a["subject"],
            k.hash(
                "sub",
                "https://idp.demo.portcullis.local",
                "alice@example.com"
            )
        );
        assert_eq!(a["ip"], k.hash("ip", "", "192.0.2.7"));
        assert_eq!(a["upstream_status"], "200");
        assert!(a["masked"].contains("email:1"), "{a:?}");
        assert!(a.contains_key("ratelimit.limit") && a.contains_key("ratelimit.remaining"));
        assert!(a.contains_key("ratelimit_ip.limit"));
        assert!(
            a.values()
                .all(|v| !v.contains("alice") && !v.contains("ada@")),
            "{a:?}"
        );
        assert!(!a.contains_key("decided_by"));

        let denied = run(&c, &mut st, &req(None), &upstream, now * 1_000_000_000);
        assert_eq!(denied.status, 401);
        let d = &denied.audit;
        assert_eq!(d["decision"], "deny");
        assert_eq!(d["decided_by"], "authn");
        assert_eq!(d["reason"], "missing_token");
        assert_eq!(d["route"], "list-customers");
        assert_eq!(d["ip"], a["ip"]);
        assert!(
            !d.contains_key("tenant")
                && !d.contains_key("subject")
                && !d.contains_key("upstream_status")
        );
    }

    /// Without the audit log (no `audit` flags, no hash key) an allowed request makes no audit
    /// host call at all, and a denial records only who refused and why.
    #[test]
    fn without_the_audit_log_only_denials_are_recorded() {
        let (p, now, token) = setup(json!({}));
        let c = Compiled::new(&p).unwrap();
        let mut st = ChainState::new(&c).unwrap();
        let req = list_customers;
        let upstream = one_customer();
        let ok = run(
            &c,
            &mut st,
            &req(Some(&token)),
            &upstream,
            now * 1_000_000_000,
        );
        assert_eq!(ok.status, 200, "{:?}", ok.reason);
        assert!(ok.audit.is_empty(), "{:?}", ok.audit);
        let denied = run(&c, &mut st, &req(None), &upstream, now * 1_000_000_000);
        assert_eq!(denied.status, 401);
        assert_eq!(
            denied.audit.keys().map(String::as_str).collect::<Vec<_>>(),
            ["decided_by", "decision", "reason"]
        );
        assert_eq!(denied.audit["reason"], "missing_token");
    }
}
