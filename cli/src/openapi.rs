//! `portcullis import openapi`: policy files from an OpenAPI 3.x document, so routes, scopes and
//! schemas are not written twice.
//!
//! - authn: one route per operation (path template, method); the operation's security
//!   requirement (or the document's) becomes the required scopes; `security: []` is anonymous;
//!   a `{tenant}`-like path parameter becomes the tenant boundary.
//! - schema: every `components.schemas` entry becomes a named schema (`$ref`s rewritten to
//!   `urn:portcullis:schema:<name>`, OpenAPI 3.0 `nullable` / boolean `exclusiveMinimum` turned
//!   into JSON Schema 2020-12), and each JSON request body a route.
//! - pii: a starting masking profile for properties whose names or formats look personal, on
//!   every GET operation with a JSON response — marked for review.
//!
//! What cannot be mapped exactly is listed at the top of each file as `# REVIEW:` lines.

use crate::{CliError, Result};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// The generated policy documents.
#[derive(Debug, Clone)]
pub struct Imported {
    /// authn routes (and placeholder providers).
    pub authn: Value,
    /// schema policy.
    pub schema: Value,
    /// pii policy.
    pub pii: Value,
    /// Things a human must check, per file.
    pub review: BTreeMap<&'static str, Vec<String>>,
    /// Operations imported.
    pub operations: usize,
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Personal-data categories recognised by property name (normalised: lower case, no `_`/`-`)
/// or `format`.
const PERSONAL: &[(&str, &[&str], &str)] = &[
    (
        "email",
        &[
            "email",
            "emailaddress",
            "mail",
            "workemail",
            "personalemail",
        ],
        "email",
    ),
    (
        "phone",
        &[
            "phone",
            "phonenumber",
            "mobile",
            "mobilephone",
            "telephone",
            "cell",
            "fax",
            "homephone",
            "workphone",
        ],
        "",
    ),
    (
        "ssn",
        &[
            "ssn",
            "socialsecuritynumber",
            "nationalid",
            "nationalidentifier",
            "taxid",
            "tin",
            "passportnumber",
        ],
        "",
    ),
    (
        "card",
        &[
            "cardnumber",
            "creditcard",
            "creditcardnumber",
            "pan",
            "card",
        ],
        "",
    ),
    (
        "iban",
        &["iban", "bankaccount", "accountnumber", "bankaccountnumber"],
        "",
    ),
    (
        "birth_date",
        &["dob", "dateofbirth", "birthdate", "birthday"],
        "",
    ),
    (
        "address",
        &[
            "street",
            "streetaddress",
            "address1",
            "address2",
            "addressline1",
            "addressline2",
            "postalcode",
            "zip",
            "zipcode",
        ],
        "",
    ),
];

fn category(name: &str, schema: &Value) -> Option<&'static str> {
    let n: String = name
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
    PERSONAL
        .iter()
        .find(|(_, names, fmt)| names.contains(&n.as_str()) || (!fmt.is_empty() && *fmt == format))
        .map(|(c, _, _)| *c)
}

fn action_for(category: &str) -> Value {
    match category {
        "email" => json!({"type": "partial", "keep_domain": true}),
        "phone" => json!({"type": "partial", "keep_first": 4, "mask_char": "X"}),
        "ssn" | "card" | "iban" => json!({"type": "partial", "keep_last": 4}),
        _ => json!("redact"),
    }
}

/// Route-name-safe text.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Converts an OpenAPI path to a route template; the second value says what had to be changed.
fn template(path: &str) -> (Value, Option<String>) {
    if path == "/" {
        return (json!({"path": "/"}), None);
    }
    let mut note = None;
    let mut segs = Vec::new();
    let mut seen = BTreeSet::new();
    for seg in path.trim_start_matches('/').split('/') {
        if seg.contains('{') {
            let whole = seg.starts_with('{') && seg.ends_with('}') && seg.matches('{').count() == 1;
            let raw = seg
                .split('{')
                .nth(1)
                .and_then(|s| s.split('}').next())
                .unwrap_or("p");
            let mut name: String = raw
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            while !seen.insert(name.clone()) {
                name.push('_');
            }
            if !whole {
                note = Some(format!(
                    "`{path}`: segment `{seg}` matched as a whole-segment parameter `{{{name}}}`"
                ));
            } else if name != raw {
                note = Some(format!(
                    "`{path}`: parameter `{{{raw}}}` renamed `{{{name}}}`"
                ));
            }
            segs.push(format!("{{{name}}}"));
        } else if seg.is_empty() {
            note = Some(format!("`{path}`: empty segment dropped"));
        } else {
            segs.push(seg.to_string());
        }
    }
    (json!({"template": format!("/{}", segs.join("/"))}), note)
}

struct Ctx<'a> {
    doc: &'a Value,
    openapi30: bool,
}

impl Ctx<'_> {
    /// Follows a local `$ref` (`#/components/...`).
    fn deref<'v>(&'v self, v: &'v Value) -> &'v Value {
        let mut cur = v;
        for _ in 0..16 {
            let Some(r) = cur.get("$ref").and_then(Value::as_str) else {
                return cur;
            };
            let Some(ptr) = r.strip_prefix('#') else {
                return cur;
            };
            match self.doc.pointer(ptr) {
                Some(t) => cur = t,
                None => return cur,
            }
        }
        cur
    }

    /// An OpenAPI schema object as JSON Schema 2020-12 for the policy bundle.
    fn convert(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    match k.as_str() {
                        "$ref" => {
                            let r = x.as_str().unwrap_or("");
                            let target = r
                                .strip_prefix("#/components/schemas/")
                                .map(|n| format!("urn:portcullis:schema:{n}"))
                                .unwrap_or_else(|| r.to_string());
                            out.insert(k.clone(), Value::from(target));
                        }
                        // OpenAPI-only annotations with no JSON Schema meaning.
                        "nullable" | "discriminator" | "xml" | "externalDocs" | "example" => {}
                        "properties" | "patternProperties" | "$defs" | "definitions" => {
                            let mut props = Map::new();
                            if let Some(pm) = x.as_object() {
                                for (pk, pv) in pm {
                                    props.insert(pk.clone(), self.convert(pv));
                                }
                            }
                            out.insert(k.clone(), Value::Object(props));
                        }
                        _ => {
                            out.insert(k.clone(), self.convert(x));
                        }
                    }
                }
                if self.openapi30 {
                    // 3.0: `nullable: true` widens the type; boolean exclusive bounds.
                    if m.get("nullable") == Some(&Value::Bool(true)) {
                        if let Some(t) = out.get("type").cloned() {
                            let mut types = match t {
                                Value::Array(a) => a,
                                other => vec![other],
                            };
                            types.push(Value::from("null"));
                            out.insert("type".into(), Value::Array(types));
                        }
                    }
                    for (ex, bound) in [
                        ("exclusiveMinimum", "minimum"),
                        ("exclusiveMaximum", "maximum"),
                    ] {
                        if let Some(Value::Bool(b)) = out.get(ex).cloned() {
                            out.remove(ex);
                            if b {
                                if let Some(n) = out.remove(bound) {
                                    out.insert(ex.into(), n);
                                }
                            }
                        }
                    }
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.convert(x)).collect()),
            other => other.clone(),
        }
    }

    /// Personal-looking properties reachable from a schema: (category, property name).
    fn personal_fields(&self, v: &Value, out: &mut BTreeSet<(&'static str, String)>, depth: usize) {
        if depth > 24 {
            return;
        }
        let v = self.deref(v);
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (name, p) in props {
                let p = self.deref(p);
                if let Some(c) = category(name, p) {
                    out.insert((c, name.clone()));
                }
                self.personal_fields(p, out, depth + 1);
            }
        }
        for k in ["items", "additionalProperties"] {
            if let Some(x) = v.get(k).filter(|x| x.is_object()) {
                self.personal_fields(x, out, depth + 1);
            }
        }
        for k in ["allOf", "anyOf", "oneOf"] {
            if let Some(a) = v.get(k).and_then(Value::as_array) {
                for x in a {
                    self.personal_fields(x, out, depth + 1);
                }
            }
        }
    }
}

fn json_content(v: &Value) -> Option<&Value> {
    let content = v.get("content")?.as_object()?;
    content
        .iter()
        .find(|(mt, _)| {
            let mt = mt.to_ascii_lowercase();
            mt.starts_with("application/json") || mt.ends_with("+json")
        })
        .and_then(|(_, m)| m.get("schema"))
}

/// Path parameters (lower case, `_` removed) that name the caller's tenant.
const TENANT_PARAMS: &[&str] = &[
    "tenant",
    "tenantid",
    "org",
    "orgid",
    "organization",
    "organizationid",
    "workspace",
    "workspaceid",
];

/// Imports a document (YAML or JSON text).
pub fn import(text: &str) -> Result<Imported> {
    let doc: Value =
        serde_norway::from_str(text).map_err(|e| CliError(format!("not YAML or JSON: {e}")))?;
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !version.starts_with("3.") {
        return Err(CliError(format!(
            "only OpenAPI 3.x is supported (this document says openapi: {version:?}; convert Swagger 2.0 first)"
        )));
    }
    let cx = Ctx {
        doc: &doc,
        openapi30: version.starts_with("3.0"),
    };
    let mut review: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let schemes = doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let global_security = doc.get("security").cloned();

    // Named schemas: every component schema, converted.
    let mut schemas = Map::new();
    if let Some(cs) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (name, s) in cs {
            schemas.insert(name.clone(), cx.convert(s));
        }
    }

    let mut authn_routes = Vec::new();
    let mut schema_routes = Vec::new();
    let mut pii_routes = Vec::new();
    let mut personal: BTreeSet<(&'static str, String)> = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut operations = 0;
    let mut non_jwt: BTreeMap<String, usize> = BTreeMap::new();
    let mut unsecured = Vec::new();
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (path, item) in &paths {
        let item = cx.deref(item);
        let (matcher, note) = template(path);
        if let Some(n) = note {
            review.entry("authn.yaml").or_default().push(n);
        }
        // A tenant-like path parameter becomes the tenant boundary.
        let tenant_param = matcher
            .get("template")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')))
            .find(|p| {
                let n: String = p
                    .chars()
                    .filter(|c| *c != '_')
                    .collect::<String>()
                    .to_ascii_lowercase();
                TENANT_PARAMS.contains(&n.as_str())
            })
            .map(str::to_string);
        for method in METHODS {
            let Some(op) = item.get(*method) else {
                continue;
            };
            operations += 1;
            let upper = method.to_ascii_uppercase();
            let base = op
                .get("operationId")
                .and_then(Value::as_str)
                .map(slug)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| slug(&format!("{method} {path}")));
            let mut name = base.clone();
            let mut i = 2;
            while !names.insert(name.clone()) {
                name = format!("{base}-{i}");
                i += 1;
            }
            let mut m = matcher.clone();
            m["methods"] = json!([upper]);

            // authn: security requirements → scopes.
            let security = op
                .get("security")
                .cloned()
                .or_else(|| global_security.clone());
            let rule = match security.as_ref().and_then(Value::as_array) {
                None => {
                    unsecured.push(name.clone());
                    json!({"require": {}})
                }
                Some(reqs)
                    if reqs.is_empty()
                        || reqs
                            .iter()
                            .any(|r| r.as_object().is_some_and(Map::is_empty)) =>
                {
                    json!("anonymous")
                }
                Some(reqs) => {
                    let alternatives: Vec<Vec<String>> = reqs
                        .iter()
                        .filter_map(Value::as_object)
                        .map(|r| {
                            r.values()
                                .flat_map(|s| s.as_array().cloned().unwrap_or_default())
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .collect();
                    for r in reqs.iter().filter_map(Value::as_object) {
                        for scheme in r.keys() {
                            let s = schemes.get(scheme);
                            let kind = s
                                .and_then(|s| s.get("type"))
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            let http = s
                                .and_then(|s| s.get("scheme"))
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            if kind == "apiKey"
                                || (kind == "http" && !http.eq_ignore_ascii_case("bearer"))
                            {
                                *non_jwt
                                    .entry(format!("{scheme}` ({kind} {http})"))
                                    .or_insert(0usize) += 1;
                            }
                        }
                    }
                    let mut require = Map::new();
                    if alternatives.len() == 1 {
                        if let Some(all) = alternatives.first().filter(|a| !a.is_empty()) {
                            require.insert("scopes".into(), json!({"all_of": all}));
                        }
                    } else if alternatives.iter().all(|a| a.len() == 1) {
                        let any: Vec<&String> =
                            alternatives.iter().filter_map(|a| a.first()).collect();
                        require.insert("scopes".into(), json!({"any_of": any}));
                    } else if let Some(first) = alternatives.iter().find(|a| !a.is_empty()) {
                        review.entry("authn.yaml").or_default().push(format!(
                            "{name}: alternative scope sets; only the first ({}) was kept",
                            first.join(" ")
                        ));
                        require.insert("scopes".into(), json!({"all_of": first}));
                    }
                    if let Some(t) = &tenant_param {
                        require.insert("tenant_param".into(), Value::from(t.clone()));
                    }
                    json!({"require": Value::Object(require)})
                }
            };
            let mut route = json!({"name": name, "match": m});
            if rule == json!("anonymous") {
                route["allow"] = rule;
            } else {
                route["require"] = rule["require"].clone();
            }
            authn_routes.push(route);

            // schema: JSON request bodies.
            if let Some(rb) = op.get("requestBody").map(|b| cx.deref(b)) {
                if let Some(s) = json_content(rb) {
                    let schema_name = match s
                        .get("$ref")
                        .and_then(Value::as_str)
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    {
                        Some(n) => n.to_string(),
                        None => {
                            let n = format!("{name}-request");
                            schemas.insert(n.clone(), cx.convert(s));
                            n
                        }
                    };
                    let required = rb.get("required").and_then(Value::as_bool).unwrap_or(false);
                    schema_routes.push(json!({
                        "name": name,
                        "match": m,
                        "request": {"schema": schema_name, "body": if required { "required" } else { "optional" }}
                    }));
                } else if rb.get("content").is_some() {
                    review
                        .entry("schema.yaml")
                        .or_default()
                        .push(format!("{name}: request body is not JSON; not validated"));
                }
            }

            // pii: GET operations with a JSON response.
            if *method == "get" {
                let mut fields = BTreeSet::new();
                if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                    for (code, r) in responses {
                        if code.starts_with('2') || code == "default" {
                            if let Some(s) = json_content(cx.deref(r)) {
                                cx.personal_fields(s, &mut fields, 0);
                            }
                        }
                    }
                }
                if !fields.is_empty() {
                    pii_routes.push(json!({"name": name, "match": m, "profile": "imported"}));
                    personal.extend(fields);
                }
            }
        }
    }

    for (scheme, n) in &non_jwt {
        review.entry("authn.yaml").or_default().push(format!(
            "security scheme `{scheme} is not a bearer JWT: {n} operation(s) mapped to a JWT requirement (API keys: see the authn README)"
        ));
    }
    if !unsecured.is_empty() {
        review.entry("authn.yaml").or_default().push(format!(
            "no security declared, so authentication without scopes is required: {}",
            unsecured.join(", ")
        ));
    }
    // Personal-looking properties of every component schema (request and response models).
    if let Some(cs) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for s in cs.values() {
            cx.personal_fields(s, &mut personal, 0);
        }
    }

    // Masking rules: one per category, fields at any depth.
    let mut by_cat: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for (c, f) in &personal {
        by_cat.entry(c).or_default().insert(f.clone());
    }
    let mut rules = Vec::new();
    for (c, fields) in &by_cat {
        let paths: Vec<String> = fields
            .iter()
            .map(|f| {
                if f.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
                {
                    format!("$..{f}")
                } else {
                    format!("$..['{f}']")
                }
            })
            .collect();
        review.entry("pii.yaml").or_default().push(format!(
            "rule `{c}`: fields {} — generated from names/formats, confirm action and unmask scope",
            fields.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        rules.push(json!({
            "name": c,
            "fields": paths,
            "action": action_for(c),
            "unmask_scopes": [format!("pii:{c}:read")]
        }));
    }
    let rule_names: Vec<Value> = by_cat.keys().map(|c| Value::from(*c)).collect();

    // Providers: placeholders named after the OAuth2 / OpenID Connect schemes.
    let mut providers = Vec::new();
    for (scheme, s) in &schemes {
        let kind = s.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "oauth2"
            || kind == "openIdConnect"
            || (kind == "http" && s.get("scheme").and_then(Value::as_str) == Some("bearer"))
        {
            let hint = s
                .get("openIdConnectUrl")
                .and_then(Value::as_str)
                .unwrap_or("the issuer URL");
            review.entry("authn.yaml").or_default().push(format!(
                "provider `{scheme}`: set issuer, audiences and jwks ({hint})"
            ));
            providers.push(json!({
                "name": slug(scheme),
                "issuer": "https://REVIEW.invalid/issuer",
                "audiences": ["REVIEW"],
                "algorithms": ["RS256", "ES256"],
                "jwks_file": "REVIEW-jwks.json"
            }));
        }
    }

    Ok(Imported {
        authn: json!({"providers": providers, "routes": authn_routes}),
        schema: json!({"schemas": Value::Object(schemas), "routes": schema_routes}),
        pii: json!({
            "rules": rules,
            "profiles": {"imported": rule_names},
            "routes": if rules.is_empty() { json!([]) } else { Value::Array(pii_routes) }
        }),
        review,
        operations,
    })
}

impl Imported {
    /// One paragraph for the terminal.
    pub fn summary(&self) -> String {
        let count = |v: &Value, k: &str| v.get(k).and_then(Value::as_array).map_or(0, Vec::len);
        let mut s = format!(
            "{} operation(s): {} authn route(s), {} schema route(s) with {} named schema(s), {} masking rule(s) on {} route(s)",
            self.operations,
            count(&self.authn, "routes"),
            count(&self.schema, "routes"),
            self.schema.get("schemas").and_then(Value::as_object).map_or(0, Map::len),
            count(&self.pii, "rules"),
            count(&self.pii, "routes"),
        );
        for (file, items) in &self.review {
            let _ = write!(s, "\n{file}: {} item(s) to review", items.len());
        }
        s
    }

    /// A policy file's text: `# REVIEW:` lines, then the YAML.
    pub fn file_text(&self, file: &'static str) -> Result<String> {
        let doc = match file {
            "authn.yaml" => &self.authn,
            "schema.yaml" => &self.schema,
            _ => &self.pii,
        };
        let mut out = String::from(
            "# Generated by `portcullis import openapi`. Check every REVIEW line before use.\n",
        );
        for r in self.review.get(file).into_iter().flatten() {
            let _ = writeln!(out, "# REVIEW: {r}");
        }
        out.push_str(&serde_norway::to_string(doc).map_err(|e| CliError(e.to_string()))?);
        Ok(out)
    }

    /// Writes `authn.yaml`, `schema.yaml` and `pii.yaml` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for f in ["authn.yaml", "schema.yaml", "pii.yaml"] {
            std::fs::write(dir.join(f), self.file_text(f)?)?;
        }
        Ok(())
    }
}
