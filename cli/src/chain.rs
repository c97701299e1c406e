//! The gateway chain, run natively through the filters' own decision code (not a
//! re-implementation): ratelimit (per IP) → authn → ratelimit → pii → schema → upstream →
//! schema (response contract) → pii (masking). `portcullis test` and `portcullis explain` use
//! it; what differs from Envoy is only the transport (no sockets, a fake clock, an in-memory
//! store with the same CAS contract as Envoy's shared data).

use crate::policy::{self, Policies};
use crate::Result;
use portcullis_authn::cache::TokenCache;
use portcullis_authn::config::AuthnConfig;
use portcullis_authn::decide as authn;
use portcullis_core::config::Mode;
use portcullis_core::deny::Denial;
use portcullis_core::identity::Identity;
use portcullis_pii::config::PiiConfig;
use portcullis_pii::decide::{self as pii, BodyPlan, Finished};
use portcullis_pii::mask::Caller;
use portcullis_ratelimit::config::RateLimitConfig;
use portcullis_ratelimit::decide as ratelimit;
use portcullis_core::shared::memory::MemoryStore;
use portcullis_core::slots::Secret;
use portcullis_schema::config::{ContractMode, SchemaConfig};
use portcullis_schema::validate::{self as schema, Head, HeadOutcome};
use std::collections::BTreeSet;

/// Every filter config of a policy directory, compiled.
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
}

impl Compiled {
    /// Compiles loaded policies.
    pub fn new(p: &Policies) -> Result<Self> {
        Ok(Compiled {
            authn: policy::compile_authn(&p.authn)?,
            ratelimit: policy::compile_ratelimit(&p.ratelimit, policy::RATELIMIT_FILE)?,
            ratelimit_ip: policy::compile_ratelimit(&p.ratelimit_ip, policy::RATELIMIT_IP_FILE)?,
            schema: policy::compile_schema(&p.schema)?,
            pii: policy::compile_pii(&p.pii, policy::PII_FILE)?,
        })
    }
}

/// State that lives across requests: the token cache and the limiter store.
pub struct ChainState {
    cache: TokenCache,
    store: MemoryStore,
}

impl ChainState {
    /// Fresh state (empty cache, full buckets).
    pub fn new(c: &Compiled) -> Self {
        ChainState {
            cache: TokenCache::new(c.authn.cache_entries.max(1)),
            store: MemoryStore::new(),
        }
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
    /// Filter (`ratelimit_ip`, `authn`, `ratelimit`, `pii`, `schema`, `upstream`).
    pub filter: &'static str,
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
    /// Status the client receives.
    pub status: u16,
    /// Reason code, when a filter answered.
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
}

fn denied(d: &Denial, trace: Vec<Step>, hits: Hits, extra: Vec<(String, String)>) -> Outcome {
    let mut headers: Vec<(String, String)> = d
        .response_headers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    headers.extend(extra);
    Outcome {
        status: d.status,
        reason: Some(d.reason.to_string()),
        decided_by: d.filter.to_string(),
        headers,
        body: d.body(),
        upstream_request: None,
        trace,
        hits,
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    portcullis_core::header(h, name)
}

fn set_header(h: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    h.retain(|(k, _)| k != name);
    if let Some(v) = value {
        h.push((name.to_string(), v.to_string()));
    }
}

/// Records a filter's denial in the trace; true when it stops the request (not shadow mode).
fn record_denial(
    trace: &mut Vec<Step>,
    filter: &'static str,
    matched: String,
    d: &Denial,
    mode: Mode,
) -> bool {
    let shadow = mode == Mode::Shadow;
    let outcome = if shadow {
        format!("shadow ({})", describe(d))
    } else {
        describe(d)
    };
    trace.push(Step {
        filter,
        matched,
        outcome,
    });
    !shadow
}

/// Headers with lower-case names, as the pii decisions expect them.
fn lower_names(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// Applies pii's masked header values: every value of a changed header replaced, in order.
fn apply_masked_headers(headers: &mut Vec<(String, String)>, m: &pii::HeaderMasking) {
    for (name, values) in &m.replace {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        headers.extend(values.iter().map(|v| (name.clone(), v.clone())));
    }
}

/// Applies pii's header edits to a header list.
fn apply_edits(headers: &mut Vec<(String, String)>, edits: Vec<pii::HeaderEdit>) {
    for e in edits {
        match e {
            pii::HeaderEdit::Set(k, v) => set_header(headers, k, Some(v)),
            pii::HeaderEdit::Remove(k) => set_header(headers, k, None),
        }
    }
}

fn describe(d: &Denial) -> String {
    format!("deny {} {} — {}", d.status, d.reason, d.detail)
}

/// Runs one request (and, if it gets through, the upstream's `response`) at `now_ns`.
pub fn run(
    c: &Compiled,
    st: &mut ChainState,
    req: &SimRequest,
    response: &SimResponse,
    now_ns: u64,
) -> Outcome {
    let mut trace = Vec::new();
    let mut hits = Hits::default();
    let mut headers = req.headers.clone();
    let mut path = req.path.clone();
    let mut body = req.body.clone();
    let mut client_headers: Vec<(String, String)> = Vec::new();

    // 1. ratelimit per IP (no identity yet).
    if let Some(d) = limit_step(
        &c.ratelimit_ip,
        &st.store,
        req,
        None,
        &headers,
        &path,
        "ratelimit_ip",
        now_ns,
        &mut trace,
        &mut hits,
        &mut client_headers,
    ) {
        return denied(&d, trace, hits, client_headers);
    }

    // 2. authn.
    let decision = authn::authenticate(
        &c.authn,
        &mut st.cache,
        &authn::Request {
            method: &req.method,
            path: &path,
            headers: &headers,
            peer_cert_sha256: None,
        },
        now_ns / 1_000_000_000,
    );
    if let Some(r) = &decision.route {
        hits.items.insert(format!("authn.route:{r}"));
    }
    // DPoP: first use of the proof's `jti` only (the store stands in for shared data).
    let verdict = match (decision.verdict, &decision.replay, &c.authn.dpop) {
        (Ok(a), Some(check), Some(d)) => portcullis_authn::dpop::record(
            &st.store,
            &Secret::from_bytes([0; 16]),
            &c.authn.stat_prefix,
            d,
            check,
            now_ns / 1_000_000_000,
        )
        .map(|()| a),
        (v, _, _) => v,
    };
    let identity = match verdict {
        Ok(allowed) => {
            trace.push(Step {
                filter: "authn",
                matched: decision.route.clone().unwrap_or_else(|| "-".into()),
                outcome: format!(
                    "allow {:?} tenant={} scopes=[{}]",
                    allowed.identity.method,
                    allowed.identity.tenant.as_deref().unwrap_or("-"),
                    allowed.identity.scopes.join(" ")
                ),
            });
            if let Some(p) = allowed.rewrite_path {
                path = p;
            }
            Some(allowed.identity)
        }
        Err(d) => {
            let matched = decision.route.clone().unwrap_or_else(|| "-".into());
            if record_denial(&mut trace, "authn", matched, &d, c.authn.mode) {
                return denied(&d, trace, hits, client_headers);
            }
            None
        }
    };
    // authn strips forged identity headers and forwards its own.
    headers.retain(|(k, _)| !authn::is_identity_header(&c.authn, k));
    if let Some(keys) = &c.authn.api_keys {
        set_header(&mut headers, &keys.header, None);
    }
    if let Some(id) = &identity {
        headers.extend(authn::identity_headers(&c.authn, id));
    }

    // 3. ratelimit with the identity.
    if let Some(d) = limit_step(
        &c.ratelimit,
        &st.store,
        req,
        identity.as_ref(),
        &headers,
        &path,
        "ratelimit",
        now_ns,
        &mut trace,
        &mut hits,
        &mut client_headers,
    ) {
        return denied(&d, trace, hits, client_headers);
    }

    // 4. pii on the request (egress-style routes) and the edits for the response.
    let scopes: Vec<String> = identity
        .as_ref()
        .map(|i| i.scopes.clone())
        .unwrap_or_default();
    let tenant = identity.as_ref().and_then(|i| i.tenant.clone());
    let caller = Caller {
        scopes: &scopes,
        key: c.pii.keys.for_tenant(tenant.as_deref()),
    };
    let pii_route = pii::route_for(&c.pii, &req.method, &path).map(|(_, r)| r.clone());
    if let Some(route) = &pii_route {
        hits.items.insert(format!("pii.route:{}", route.name));
        if c.pii.mode == Mode::Enforce {
            apply_edits(&mut headers, pii::request_edits(route, body.is_some()));
        }
        let shadow = c.pii.mode == Mode::Shadow;
        match pii::mask_headers(&c.pii, route, caller, &lower_names(&headers), false) {
            Ok(m) => {
                record_pii(c, &m.report, &mut hits);
                if !shadow {
                    apply_masked_headers(&mut headers, &m);
                }
            }
            Err(cause) => {
                if let Finished::Block(d, _) = pii::refusal(route, cause, &[], shadow, false) {
                    if !shadow {
                        return denied(&d, trace, hits, client_headers);
                    }
                }
            }
        }
        let plan = pii::plan_request(route, &lower_names(&headers), body.is_none());
        let mut outcome = "response masking".to_string();
        let finished = match (&plan, &body) {
            (BodyPlan::Mask(job), Some(b)) => {
                Some(pii::finish(&c.pii, route, job, caller, b, shadow, false))
            }
            (BodyPlan::Refuse(cause), _) => Some(pii::refusal(route, *cause, &[], shadow, false)),
            _ => None,
        };
        match finished {
            Some(Finished::Write(new, report)) => {
                record_pii(c, &report, &mut hits);
                outcome = format!("request masked: {}", summary(c, &report));
                body = Some(new);
            }
            Some(Finished::Keep(report)) => {
                record_pii(c, &report, &mut hits);
                outcome = format!("request masked: {}", summary(c, &report));
            }
            Some(Finished::Block(d, _)) => {
                trace.push(Step {
                    filter: "pii",
                    matched: route.name.clone(),
                    outcome: describe(&d),
                });
                if !shadow {
                    return denied(&d, trace, hits, client_headers);
                }
            }
            Some(Finished::PassUnmaskable(cause)) => {
                outcome = format!("request passed unmasked ({})", cause.name());
            }
            None => {}
        }
        trace.push(Step {
            filter: "pii",
            matched: route.name.clone(),
            outcome,
        });
    } else {
        trace.push(Step {
            filter: "pii",
            matched: "-".into(),
            outcome: "no route: not masked".into(),
        });
    }

    // 5. schema.
    let (schema_route, head) = schema::check_head(
        &c.schema,
        &Head {
            method: &req.method,
            path: &path,
            headers: &headers,
            has_body: body.is_some(),
        },
    );
    if let Some(r) = &schema_route {
        hits.items.insert(format!("schema.route:{r}"));
    }
    let schema_matched = schema_route.clone().unwrap_or_else(|| "-".into());
    let schema_verdict = match head {
        HeadOutcome::Pass => Ok("pass (nothing to validate)".to_string()),
        HeadOutcome::Deny(d) => Err(d),
        HeadOutcome::ValidateBody {
            route,
            max_body_bytes,
        } => {
            let b = body.clone().unwrap_or_default();
            if b.len() > max_body_bytes {
                Err(schema::too_large())
            } else {
                schema::check_body(&c.schema, route, &b).map(|()| "body valid".to_string())
            }
        }
    };
    match schema_verdict {
        Ok(o) => trace.push(Step {
            filter: "schema",
            matched: schema_matched.clone(),
            outcome: o,
        }),
        Err(d) => {
            if record_denial(
                &mut trace,
                "schema",
                schema_matched.clone(),
                &d,
                c.schema.mode,
            ) {
                return denied(&d, trace, hits, client_headers);
            }
        }
    }

    // 6. The upstream.
    let upstream_request = Some((headers.clone(), body.clone()));
    trace.push(Step {
        filter: "upstream",
        matched: format!("{} {path}", req.method),
        outcome: format!("answers {}", response.status),
    });
    let mut resp_headers = response.headers.clone();
    let mut resp_body = response.body.clone();
    let status = response.status;

    // 7. schema's response contract (before pii: responses run the chain backwards).
    if let Some(rule) = schema_route
        .as_deref()
        .and_then(|n| schema::response_rule(&c.schema, n))
    {
        if (200..300).contains(&status) && status != 204 && req.method != "HEAD" {
            if let Err(d) = schema::check_response(
                &c.schema,
                rule,
                header(&resp_headers, "content-type"),
                &resp_body,
            ) {
                trace.push(Step {
                    filter: "schema",
                    matched: schema_matched.clone(),
                    outcome: format!("response {}", describe(&d)),
                });
                if rule.mode == ContractMode::Enforce && c.schema.mode == Mode::Enforce {
                    let mut o = denied(&d, trace, hits, client_headers);
                    o.upstream_request = upstream_request;
                    return o;
                }
            }
        }
    }

    // 8. pii on the response.
    if let Some(route) = &pii_route {
        let shadow = c.pii.mode == Mode::Shadow;
        let fail = |d: Denial, trace: Vec<Step>, hits: Hits, ch: Vec<(String, String)>| {
            let mut o = denied(&d, trace, hits, ch);
            o.upstream_request = upstream_request.clone();
            o
        };
        match pii::mask_headers(&c.pii, route, caller, &lower_names(&resp_headers), true) {
            Ok(m) => {
                record_pii(c, &m.report, &mut hits);
                if !shadow {
                    apply_masked_headers(&mut resp_headers, &m);
                }
            }
            Err(cause) => {
                if let Finished::Block(d, _) = pii::refusal(route, cause, &[], shadow, true) {
                    if !shadow {
                        return fail(d, trace, hits, client_headers);
                    }
                }
            }
        }
        let plan = pii::plan_response(
            route,
            &req.method,
            status,
            &lower_names(&resp_headers),
            resp_body.is_empty(),
        );
        let finished = match &plan {
            BodyPlan::Pass => None,
            BodyPlan::Refuse(cause) => Some(pii::refusal(route, *cause, &[], shadow, true)),
            BodyPlan::Mask(job) => {
                if !shadow {
                    apply_edits(&mut resp_headers, pii::body_edits(&plan, true));
                }
                Some(pii::finish(
                    &c.pii, route, job, caller, &resp_body, shadow, true,
                ))
            }
        };
        match finished {
            None => {}
            Some(Finished::Write(new, report)) => {
                record_pii(c, &report, &mut hits);
                trace.push(Step {
                    filter: "pii",
                    matched: route.name.clone(),
                    outcome: format!("response masked: {}", summary(c, &report)),
                });
                resp_body = new;
            }
            Some(Finished::Keep(report)) => {
                record_pii(c, &report, &mut hits);
                trace.push(Step {
                    filter: "pii",
                    matched: route.name.clone(),
                    outcome: format!("response masked: {}", summary(c, &report)),
                });
            }
            Some(Finished::Block(d, _)) => {
                trace.push(Step {
                    filter: "pii",
                    matched: route.name.clone(),
                    outcome: format!("response {}", describe(&d)),
                });
                if !shadow {
                    return fail(d, trace, hits, client_headers);
                }
            }
            Some(Finished::PassUnmaskable(cause)) => {
                trace.push(Step {
                    filter: "pii",
                    matched: route.name.clone(),
                    outcome: format!("response passed unmasked ({})", cause.name()),
                });
            }
        }
    }
    resp_headers.extend(client_headers);
    Outcome {
        status,
        reason: None,
        decided_by: "upstream".into(),
        headers: resp_headers,
        body: resp_body,
        upstream_request,
        trace,
        hits,
    }
}

/// One ratelimit instance; `Some(denial)` when it refuses (not in shadow mode).
#[allow(clippy::too_many_arguments)]
fn limit_step(
    cfg: &RateLimitConfig,
    store: &MemoryStore,
    req: &SimRequest,
    identity: Option<&Identity>,
    headers: &[(String, String)],
    path: &str,
    name: &'static str,
    now_ns: u64,
    trace: &mut Vec<Step>,
    hits: &mut Hits,
    client_headers: &mut Vec<(String, String)>,
) -> Option<Denial> {
    let r = ratelimit::Request {
        method: &req.method,
        path,
        headers,
        identity,
        source_address: Some(&req.client_ip),
    };
    // Any fixed secret: which slot a key lands in does not change a verdict.
    let d = ratelimit::decide(cfg, store, &Secret::from_bytes([0; 16]), &r, now_ns);
    match d.verdict {
        Ok(applied) => {
            for a in &applied {
                hits.items.insert(format!("{name}.limit:{}", a.name));
            }
            let names: Vec<String> = applied
                .iter()
                .map(|a| format!("{} ({} left)", a.name, a.outcome.remaining))
                .collect();
            trace.push(Step {
                filter: name,
                matched: if names.is_empty() {
                    "-".into()
                } else {
                    names.join(", ")
                },
                outcome: "allow".into(),
            });
            for (k, v) in ratelimit::response_headers(cfg.headers, &applied) {
                set_header(client_headers, k, Some(&v));
            }
            None
        }
        Err(denial) => {
            if let Some(l) = &d.limited_by {
                hits.items.insert(format!("{name}.limit:{l}"));
            }
            let matched = d.limited_by.clone().unwrap_or_else(|| "-".into());
            record_denial(trace, name, matched, &denial, cfg.mode).then_some(denial)
        }
    }
}

fn record_pii(c: &Compiled, report: &portcullis_pii::mask::Report, hits: &mut Hits) {
    for (i, r) in c.pii.rules.iter().enumerate() {
        let n = report.masked.get(i).copied().unwrap_or(0)
            + report.revealed.get(i).copied().unwrap_or(0);
        if n > 0 {
            hits.items.insert(format!("pii.rule:{}", r.name));
        }
    }
}

fn summary(c: &Compiled, report: &portcullis_pii::mask::Report) -> String {
    let mut parts = Vec::new();
    for (i, r) in c.pii.rules.iter().enumerate() {
        let m = report.masked.get(i).copied().unwrap_or(0);
        let v = report.revealed.get(i).copied().unwrap_or(0);
        if m > 0 {
            parts.push(format!("{}×{m}", r.name));
        }
        if v > 0 {
            parts.push(format!("{} revealed×{v} (scope)", r.name));
        }
    }
    if parts.is_empty() {
        "nothing to mask".into()
    } else {
        parts.join(", ")
    }
}

/// Every coverage item of a compiled policy set, in a stable order.
pub fn coverage_items(c: &Compiled) -> Vec<String> {
    let mut items = Vec::new();
    items.extend(
        c.ratelimit_ip
            .limits
            .iter()
            .map(|l| format!("ratelimit_ip.limit:{}", l.name)),
    );
    items.extend(
        c.authn
            .routes
            .iter()
            .map(|(_, r)| format!("authn.route:{}", r.name)),
    );
    items.extend(
        c.ratelimit
            .limits
            .iter()
            .map(|l| format!("ratelimit.limit:{}", l.name)),
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
