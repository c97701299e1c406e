//! `portcullis test`: policy test files (YAML) run through [`crate::chain`], with coverage.
//!
//! ```yaml
//! signing:                                  # how `token:` claims are signed (test keys only)
//!   key: ../demo-keys/demo-rs256.key.pem    # relative to this file
//!   alg: RS256
//!   kid: demo-rs256
//!   claims: { iss: "https://idp…", aud: portcullis-demo-api }   # defaults for every token
//!   ttl: 600                                # iat = now, exp = now + ttl unless given
//! cases:
//!   - name: a reader lists its own tenant
//!     request:
//!       method: GET
//!       path: /api/v1/tenants/acme/customers
//!       token: { tenant: acme, scope: customers:read }        # claims ("now-60": relative
//!                                                             # time; null: left out)
//!       token_header: { kid: other }        # JOSE header members; signature: tampered | none
//!       dpop: { jti: j1 }                   # DPoP proof (signing.dpop_key), token bound to it
//!       headers: { x-request-id: "1" }
//!       body: { any: json }                 # or a string for a raw body
//!     upstream: { status: 200, body: { ssn: "123-45-6789" } }   # what the upstream answers
//!     expect:
//!       status: 200
//!       decided_by: upstream                # or authn, ratelimit, ratelimit_ip, schema, pii
//!       reason: null                        # the reason code of a denial
//!       body: { ssn: "***-**-6789" }        # exact JSON (or string) the client receives
//!       body_contains: ["…"]                # substrings that must / must not appear
//!       body_excludes: ["123-45"]
//!       headers: { ratelimit-remaining: "4", etag: null }   # null: absent
//!       upstream_headers: { authorization: null }            # what the upstream received
//!   - name: a burst of six
//!     sequence:                             # shared state; `at` is the fake clock in seconds
//!       - { at: 0, request: {…}, expect: { status: 200 } }
//!       - { at: 0.5, request: {…}, expect: { status: 429, reason: rate_limited } }
//! ```

use crate::chain::{self, ChainState, Compiled, SimRequest, SimResponse};
use crate::policy::Policies;
use crate::token::{self, SigningAlg};
use crate::{CliError, Result};
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The fake clock's origin (a fixed instant, so test outcomes never depend on the date).
pub const CLOCK_ORIGIN_SECS: u64 = 1_900_000_000;

/// A test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Token signing for `token:` claims.
    #[serde(default)]
    pub signing: Option<Signing>,
    /// Cases.
    pub cases: Vec<Case>,
}

/// How test tokens are signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    /// PEM private key (or HS256 secret file), relative to the test file.
    pub key: String,
    /// `RS256`, `ES256` or `HS256`.
    pub alg: String,
    /// `kid` header.
    #[serde(default)]
    pub kid: Option<String>,
    /// Default claims.
    #[serde(default)]
    pub claims: serde_json::Map<String, Value>,
    /// Lifetime when `exp` is not given (default 600 s).
    #[serde(default = "default_ttl")]
    pub ttl: i64,
    /// P-256 private key (PKCS#8 PEM, relative to the test file) that `dpop:` proofs are
    /// signed with; tokens of such requests are bound to it (`cnf.jkt`).
    #[serde(default)]
    pub dpop_key: Option<String>,
}

fn default_ttl() -> i64 {
    600
}

/// One case: a request, or a sequence of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Name shown in the report.
    pub name: String,
    /// A single request.
    #[serde(default)]
    pub request: Option<CaseRequest>,
    /// Its upstream response.
    #[serde(default)]
    pub upstream: Option<CaseUpstream>,
    /// Its expectation.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Several requests sharing limiter state and cache.
    #[serde(default)]
    pub sequence: Vec<SeqStep>,
    /// Run with emergency mode on (`portcullis emergency on`): the filters compiled with
    /// their emergency profile.
    #[serde(default)]
    pub emergency: bool,
}

/// One step of a sequence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeqStep {
    /// Fake clock, seconds from the origin.
    #[serde(default)]
    pub at: f64,
    /// Request.
    pub request: CaseRequest,
    /// Upstream response.
    #[serde(default)]
    pub upstream: Option<CaseUpstream>,
    /// Expectation.
    pub expect: Expect,
}

/// A request as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// Method (default GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Claims of a bearer token to sign.
    #[serde(default)]
    pub token: Option<serde_json::Map<String, Value>>,
    /// A literal `Authorization` bearer token instead (e.g. a malformed one).
    #[serde(default)]
    pub raw_token: Option<String>,
    /// Body: JSON, or a string sent as is. A JSON body gets `content-type: application/json`
    /// unless a content type is given.
    #[serde(default)]
    pub body: Option<Value>,
    /// Client address (default 127.0.0.1).
    #[serde(default = "default_ip")]
    pub client_ip: String,
    /// JOSE header members of the `token:` replacing or adding to the signing defaults
    /// (e.g. `{alg: none}`, `{crit: [exp]}`, `{kid: other}`).
    #[serde(default)]
    pub token_header: Option<serde_json::Map<String, Value>>,
    /// `valid` (default), `tampered` (last signature byte changed) or `none` (empty).
    #[serde(default)]
    pub signature: Option<String>,
    /// Send the `token:` as `Authorization: DPoP` with a proof signed by `signing.dpop_key`.
    #[serde(default)]
    pub dpop: Option<DpopProof>,
}

/// A DPoP proof as written; every member defaults to what a correct client sends.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopProof {
    /// `jti` (default: a fresh value).
    #[serde(default)]
    pub jti: Option<String>,
    /// `htm` (default: the request method).
    #[serde(default)]
    pub htm: Option<String>,
    /// `htu` (default: the gateway's origin and the request path).
    #[serde(default)]
    pub htu: Option<String>,
    /// Bind the token to the proof key (`cnf.jkt`; default true).
    #[serde(default)]
    pub bind: Option<bool>,
    /// Send the bound token as `Bearer` instead (a downgrade).
    #[serde(default)]
    pub as_bearer: bool,
}

fn default_method() -> String {
    "GET".into()
}
fn default_ip() -> String {
    "127.0.0.1".into()
}

/// An upstream response as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseUpstream {
    /// Status (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Content type (default `application/json`).
    #[serde(default = "default_ct")]
    pub content_type: String,
    /// More headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body: JSON, or a string sent as is.
    #[serde(default)]
    pub body: Option<Value>,
    /// Body as base64 (binary or compressed bodies), instead of `body`.
    #[serde(default)]
    pub body_b64: Option<String>,
}

fn default_status() -> u16 {
    200
}
fn default_ct() -> String {
    "application/json".into()
}

/// What the client must see.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Status.
    #[serde(default)]
    pub status: Option<u16>,
    /// Which filter answered.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// Reason code (`null` to assert none).
    #[serde(default, deserialize_with = "some")]
    pub reason: Option<Option<String>>,
    /// Exact body.
    #[serde(default)]
    pub body: Option<Value>,
    /// Substrings that must appear in the body.
    #[serde(default)]
    pub body_contains: Vec<String>,
    /// Substrings that must not appear in the body.
    #[serde(default)]
    pub body_excludes: Vec<String>,
    /// Response headers (`null`: absent).
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// Exact body the upstream received.
    #[serde(default)]
    pub upstream_body: Option<Value>,
    /// Headers the upstream received (`null`: absent; checked only for the names listed).
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, Option<String>>,
}

fn some<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn body_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// A loaded test file with what it needs to run.
pub struct Suite {
    /// Its path.
    pub path: PathBuf,
    /// Its content.
    pub file: TestFile,
    key: Option<Vec<u8>>,
    dpop_key: Option<Vec<u8>>,
}

/// Loads every `*.yaml` test file of a directory (or one file).
pub fn load(path: &Path) -> Result<Vec<Suite>> {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| CliError(format!("{}: {e}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    if files.is_empty() {
        return Err(CliError(format!(
            "{}: no test files (*.yaml)",
            path.display()
        )));
    }
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| CliError(format!("{}: {e}", p.display())))?;
            let file: TestFile = serde_norway::from_str(&text)
                .map_err(|e| CliError(format!("{}: {e}", p.display())))?;
            let read = |rel: &str, what: &str| {
                let kp = p.parent().unwrap_or(Path::new(".")).join(rel);
                std::fs::read(&kp)
                    .map_err(|e| CliError(format!("{}: {what} {}: {e}", p.display(), kp.display())))
            };
            let key = match &file.signing {
                Some(s) => Some(read(&s.key, "signing key")?),
                None => None,
            };
            let dpop_key = match file.signing.as_ref().and_then(|s| s.dpop_key.as_ref()) {
                Some(k) => Some(read(k, "dpop key")?),
                None => None,
            };
            Ok(Suite {
                path: p,
                file,
                key,
                dpop_key,
            })
        })
        .collect()
}

/// Claims given relative to the clock: `"now"`, `"now+60"`, `"now-3600"` (so a table runs the
/// same against the fake clock and against a real gateway).
fn resolve_time(v: &Value, now: i64) -> Value {
    let Some(s) = v.as_str().and_then(|s| s.strip_prefix("now")) else {
        return v.clone();
    };
    let offset = match s.split_at_checked(1) {
        Some(("+", n)) => n.parse::<i64>().ok(),
        Some(("-", n)) => n.parse::<i64>().ok().map(|n| -n),
        _ if s.is_empty() => Some(0),
        _ => None,
    };
    offset.map_or_else(|| v.clone(), |o| Value::from(now + o))
}

/// The public JWK of a P-256 PKCS#8 key.
fn p256_jwk(pem: &[u8]) -> Result<Value> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use p256::pkcs8::DecodePrivateKey;
    let text = std::str::from_utf8(pem).map_err(|_| CliError("dpop key is not PEM".into()))?;
    let k = p256::ecdsa::SigningKey::from_pkcs8_pem(text)
        .map_err(|_| CliError("dpop key is not a P-256 PKCS#8 key".into()))?;
    let point = k.verifying_key().to_sec1_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(CliError("dpop key has no affine point".into()));
    };
    Ok(serde_json::json!({"kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}))
}

static JTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Suite {
    /// The request a case describes, with tokens and proofs minted at `now` (Unix seconds)
    /// for a gateway reached at `origin` (DPoP `htu`).
    pub fn sim_request(&self, r: &CaseRequest, now: u64, origin: &str) -> Result<SimRequest> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let mut headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        if let Some(claims) = &r.token {
            let (Some(s), Some(key)) = (&self.file.signing, &self.key) else {
                return Err(CliError(format!(
                    "{}: `token:` needs a `signing:` section",
                    self.path.display()
                )));
            };
            let mut all = s.claims.clone();
            for (k, v) in claims {
                all.insert(k.clone(), resolve_time(v, now_i));
            }
            all.entry("iat").or_insert(Value::from(now_i));
            all.entry("exp").or_insert(Value::from(now_i + s.ttl));
            // A claim given as null is left out (e.g. a token without `exp`).
            all.retain(|_, v| !v.is_null());
            let dpop_jwk = match (&r.dpop, &self.dpop_key) {
                (Some(_), Some(k)) => Some(p256_jwk(k)?),
                (Some(_), None) => {
                    return Err(CliError(format!(
                        "{}: `dpop:` needs `signing.dpop_key`",
                        self.path.display()
                    )))
                }
                _ => None,
            };
            if let (Some(d), Some(jwk)) = (&r.dpop, &dpop_jwk) {
                if d.bind.unwrap_or(true) {
                    let jkt = portcullis_authn::dpop::thumbprint(jwk)
                        .ok_or_else(|| CliError("dpop key thumbprint".into()))?;
                    all.insert("cnf".into(), serde_json::json!({ "jkt": jkt }));
                }
            }
            let alg = match s.alg.as_str() {
                "RS256" => SigningAlg::RS256,
                "ES256" => SigningAlg::ES256,
                "HS256" => SigningAlg::HS256,
                other => {
                    return Err(CliError(format!(
                        "{}: signing.alg `{other}` not supported",
                        self.path.display()
                    )))
                }
            };
            let mut header = serde_json::json!({"alg": s.alg, "typ": "JWT"});
            if let Some(kid) = &s.kid {
                header["kid"] = Value::from(kid.clone());
            }
            for (k, v) in r.token_header.iter().flatten() {
                header[k.as_str()] = v.clone();
            }
            let mut jwt = token::sign_raw(alg, key, &header, &Value::Object(all))?;
            match r.signature.as_deref() {
                None | Some("valid") => {}
                Some("tampered") => {
                    // Change the signature's last meaningful character.
                    let last = jwt.pop().unwrap_or('A');
                    jwt.push(if last == 'A' { 'Q' } else { 'A' });
                }
                Some("none") => {
                    if let Some(i) = jwt.rfind('.') {
                        jwt.truncate(i + 1);
                    }
                }
                Some(other) => {
                    return Err(CliError(format!(
                        "{}: signature `{other}` is not valid, tampered or none",
                        self.path.display()
                    )))
                }
            }
            match (&r.dpop, &dpop_jwk, &self.dpop_key) {
                (Some(d), Some(jwk), Some(pem)) => {
                    let path = crate::chain::path_only(&r.path);
                    let jti = d.jti.clone().unwrap_or_else(|| {
                        format!(
                            "jti-{}-{}",
                            std::process::id(),
                            JTI.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        )
                    });
                    let ath = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(jwt.as_bytes()));
                    let proof = token::sign_raw(
                        SigningAlg::ES256,
                        pem,
                        &serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}),
                        &serde_json::json!({
                            "jti": jti,
                            "htm": d.htm.clone().unwrap_or_else(|| r.method.clone()),
                            "htu": d.htu.clone().unwrap_or_else(|| format!("{origin}{path}")),
                            "iat": now_i,
                            "ath": ath,
                        }),
                    )?;
                    let scheme = if d.as_bearer { "Bearer" } else { "DPoP" };
                    headers.push(("authorization".into(), format!("{scheme} {jwt}")));
                    if !d.as_bearer {
                        headers.push(("dpop".into(), proof));
                    }
                }
                _ => headers.push(("authorization".into(), format!("Bearer {jwt}"))),
            }
        } else if let Some(t) = &r.raw_token {
            headers.push(("authorization".into(), format!("Bearer {t}")));
        }
        let body = r.body.as_ref().map(body_bytes);
        if let (Some(Value::Object(_) | Value::Array(_)), false) =
            (&r.body, headers.iter().any(|(k, _)| k == "content-type"))
        {
            headers.push(("content-type".into(), "application/json".into()));
        }
        Ok(SimRequest {
            method: r.method.clone(),
            path: r.path.clone(),
            headers,
            body,
            client_ip: r.client_ip.clone(),
        })
    }
}

/// What the upstream answers for a case (default: 200 `{}`).
pub fn sim_response(u: Option<&CaseUpstream>) -> SimResponse {
    match u {
        None => SimResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        },
        Some(u) => {
            let mut headers = vec![("content-type".to_string(), u.content_type.clone())];
            headers.extend(
                u.headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
            );
            let body = match &u.body_b64 {
                Some(b) => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .unwrap_or_default()
                }
                None => u.body.as_ref().map(body_bytes).unwrap_or_default(),
            };
            SimResponse {
                status: u.status,
                headers,
                body,
            }
        }
    }
}

fn json_or_text(b: &[u8]) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
}

/// Compares an outcome with an expectation; the list of mismatches.
pub fn compare(o: &chain::Outcome, e: &Expect) -> Vec<String> {
    let mut diffs = Vec::new();
    if let Some(s) = e.status {
        if s != o.status {
            diffs.push(format!("status: expected {s}, got {}", o.status));
        }
    }
    if let Some(d) = &e.decided_by {
        if *d != o.decided_by {
            diffs.push(format!("decided_by: expected {d}, got {}", o.decided_by));
        }
    }
    if let Some(r) = &e.reason {
        if *r != o.reason {
            diffs.push(format!("reason: expected {r:?}, got {:?}", o.reason));
        }
    }
    let body = String::from_utf8_lossy(&o.body);
    if let Some(b) = &e.body {
        let got = json_or_text(&o.body);
        let want = match b {
            Value::String(s) => json_or_text(s.as_bytes()),
            v => v.clone(),
        };
        if got != want {
            diffs.push(format!(
                "body:\n      expected {want}\n      got      {got}"
            ));
        }
    }
    for s in &e.body_contains {
        if !body.contains(s.as_str()) {
            diffs.push(format!("body does not contain {s:?}"));
        }
    }
    for s in &e.body_excludes {
        if body.contains(s.as_str()) {
            diffs.push(format!("body contains {s:?}"));
        }
    }
    for (k, v) in &e.headers {
        let got = portcullis_core::header(&o.headers, &k.to_ascii_lowercase());
        if got != v.as_deref() {
            diffs.push(format!("header {k}: expected {v:?}, got {got:?}"));
        }
    }
    if !e.upstream_headers.is_empty() {
        match &o.upstream_request {
            None => diffs.push("upstream_headers: the request never reached the upstream".into()),
            Some((h, _)) => {
                for (k, v) in &e.upstream_headers {
                    let got = portcullis_core::header(h, &k.to_ascii_lowercase());
                    if got != v.as_deref() {
                        diffs.push(format!("upstream header {k}: expected {v:?}, got {got:?}"));
                    }
                }
            }
        }
    }
    if let Some(b) = &e.upstream_body {
        match &o.upstream_request {
            None => diffs.push("upstream_body: the request never reached the upstream".into()),
            Some((_, got)) => {
                let got = got.as_deref().map(json_or_text).unwrap_or(Value::Null);
                if got != *b {
                    diffs.push(format!(
                        "upstream_body:\n      expected {b}\n      got      {got}"
                    ));
                }
            }
        }
    }
    diffs
}

/// The outcome of a run.
pub struct Report {
    /// Cases passed.
    pub passed: usize,
    /// Cases failed.
    pub failed: usize,
    /// Coverage items exercised / all.
    pub covered: BTreeSet<String>,
    /// All coverage items.
    pub items: Vec<String>,
}

impl Report {
    /// Coverage in percent.
    pub fn percent(&self) -> f64 {
        if self.items.is_empty() {
            return 100.0;
        }
        let hit = self
            .items
            .iter()
            .filter(|i| self.covered.contains(*i))
            .count();
        100.0 * hit as f64 / self.items.len() as f64
    }
}

/// The emergency profile's coverage items, from the policies as written: the emergency
/// refusal itself, each `essential` route, each limit's `emergency` amount, and pii's
/// disregard of unmask scopes.
pub fn emergency_items(p: &Policies) -> Vec<String> {
    let mut items = vec!["authn.emergency:closed".to_string()];
    let list = |v: &Value, k: &str| v[k].as_array().cloned().unwrap_or_default();
    for r in list(&p.authn, "routes") {
        if r["essential"] == Value::Bool(true) {
            items.push(format!(
                "authn.emergency:{}",
                r["name"].as_str().unwrap_or_default()
            ));
        }
    }
    for doc in [&p.ratelimit_ip, &p.ratelimit] {
        let prefix = doc["stat_prefix"].as_str().unwrap_or("ratelimit");
        for l in list(doc, "limits") {
            if l.get("emergency").is_some() {
                items.push(format!(
                    "{prefix}.emergency:{}",
                    l["name"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    if list(&p.pii, "rules")
        .iter()
        .any(|r| r.get("unmask_scopes").is_some() || r.get("consent").is_some())
    {
        items.push("pii.emergency:masked".to_string());
    }
    items
}

/// What an emergency case exercised, in [`emergency_items`]' terms.
fn emergency_hits(o: &chain::Outcome) -> Vec<String> {
    let mut hits = Vec::new();
    if o.reason.as_deref() == Some("emergency_mode") {
        hits.push("authn.emergency:closed".to_string());
    }
    for h in &o.hits.items {
        if let Some(route) = h.strip_prefix("authn.route:") {
            if o.reason.as_deref() != Some("emergency_mode") {
                hits.push(format!("authn.emergency:{route}"));
            }
        } else if let Some((prefix, limit)) = h.split_once(".limit:") {
            hits.push(format!("{prefix}.emergency:{limit}"));
        } else if h.starts_with("pii.rule:") {
            hits.push("pii.emergency:masked".to_string());
        }
    }
    hits
}

/// Runs every suite against the policies, printing a runner-style report to `out`.
pub fn run(policies: &Policies, suites: &[Suite], out: &mut dyn std::io::Write) -> Result<Report> {
    let normal = Compiled::new(policies)?;
    let emergency = Compiled::new(&crate::render::emergency_policies(policies))?;
    let mut items = chain::coverage_items(&normal);
    items.extend(emergency_items(policies));
    let mut report = Report {
        passed: 0,
        failed: 0,
        covered: BTreeSet::new(),
        items,
    };
    for suite in suites {
        let _ = writeln!(out, "{}", suite.path.display());
        for case in &suite.file.cases {
            let steps: Vec<(f64, &CaseRequest, Option<&CaseUpstream>, Expect)> =
                match (&case.request, case.sequence.is_empty()) {
                    (Some(r), true) => vec![(
                        0.0,
                        r,
                        case.upstream.as_ref(),
                        case.expect.clone().unwrap_or_default(),
                    )],
                    (None, false) => case
                        .sequence
                        .iter()
                        .map(|s| (s.at, &s.request, s.upstream.as_ref(), s.expect.clone()))
                        .collect(),
                    _ => {
                        return Err(CliError(format!(
                            "{}: case `{}`: give either `request` or `sequence`",
                            suite.path.display(),
                            case.name
                        )))
                    }
                };
            let compiled = if case.emergency { &emergency } else { &normal };
            let mut state = ChainState::new(compiled)?;
            let mut failures = Vec::new();
            for (i, (at, req, up, expect)) in steps.iter().enumerate() {
                let now_ns = CLOCK_ORIGIN_SECS * 1_000_000_000 + (at.max(0.0) * 1e9) as u64;
                let sim = suite.sim_request(req, now_ns / 1_000_000_000, &compiled.origin)?;
                let outcome = chain::run(compiled, &mut state, &sim, &sim_response(*up), now_ns);
                report.covered.extend(outcome.hits.items.iter().cloned());
                if case.emergency {
                    report.covered.extend(emergency_hits(&outcome));
                }
                for d in compare(&outcome, expect) {
                    failures.push(if steps.len() > 1 {
                        format!("step {}: {d}", i + 1)
                    } else {
                        d
                    });
                }
            }
            if failures.is_empty() {
                report.passed += 1;
                let _ = writeln!(out, "  ok    {}", case.name);
            } else {
                report.failed += 1;
                let _ = writeln!(out, "  FAIL  {}", case.name);
                for f in failures {
                    let _ = writeln!(out, "        {f}");
                }
            }
        }
    }
    let _ = writeln!(out, "\n{} passed, {} failed", report.passed, report.failed);
    let untested: Vec<&String> = report
        .items
        .iter()
        .filter(|i| !report.covered.contains(*i))
        .collect();
    let _ = writeln!(
        out,
        "coverage: {}/{} rules, routes and limits exercised ({:.1} %)",
        report.items.len() - untested.len(),
        report.items.len(),
        report.percent()
    );
    for u in untested {
        let _ = writeln!(out, "  untested: {u}");
    }
    Ok(report)
}
