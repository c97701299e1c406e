//! `portcullis import openapi`: a real-world spec (ReadMe's public API, OpenAPI 3.0, from the
//! MIT-licensed `@readme/oas-examples`) and a small synthetic one, imported and then compiled
//! and exercised with the filters' own code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_authn::config::AuthnConfig;
use portcullis_cli::openapi;
use portcullis_pii::config::PiiConfig;
use portcullis_schema::config::SchemaConfig;
use portcullis_schema::validate::{self, Head, HeadOutcome};
use serde_json::{json, Value};
use std::path::Path;

fn data(f: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/openapi")
            .join(f),
    )
    .unwrap()
}

/// The demo provider, standing in for the placeholders the import leaves for review.
fn with_provider(mut authn: Value) -> Value {
    let jwks: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/demo-keys/demo-jwks.json"),
        )
        .unwrap(),
    )
    .unwrap();
    authn["providers"] = json!([{"name": "demo", "issuer": "https://idp.example", "audiences": ["api"], "algorithms": ["RS256", "ES256"], "jwks": jwks}]);
    authn
}

/// Fills `{param}` segments with a sample value.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { "x1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn a_real_world_spec_round_trips_through_the_filter_compilers() {
    let text = data("readme-legacy.yaml");
    let spec: Value = serde_norway::from_str(&text).unwrap();
    let imported = openapi::import(&text).unwrap();

    // Every operation of the spec is a route, named after its operationId.
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                ops.push((
                    path.clone(),
                    method.to_ascii_uppercase(),
                    op["operationId"].as_str().unwrap().to_ascii_lowercase(),
                ));
            }
        }
    }
    assert_eq!(ops.len(), 36);
    assert_eq!(imported.operations, ops.len());

    // The files as written parse back to the same documents.
    let dir = std::env::temp_dir().join(format!("portcullis-import-{}", std::process::id()));
    imported.write(&dir).unwrap();
    let reread = |f: &str| -> Value {
        serde_norway::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    assert_eq!(reread("authn.yaml"), imported.authn);
    assert_eq!(reread("schema.yaml"), imported.schema);
    assert_eq!(reread("pii.yaml"), imported.pii);
    assert!(std::fs::read_to_string(dir.join("authn.yaml"))
        .unwrap()
        .contains("# REVIEW: security scheme `apiKey`"));
    let _ = std::fs::remove_dir_all(&dir);

    // authn compiles, and each operation's path and method find the operation's route.
    let authn = AuthnConfig::from_value(with_provider(imported.authn.clone())).unwrap();
    assert_eq!(authn.routes.len(), 36);
    for (path, method, id) in &ops {
        let p = concrete(path);
        let m = authn
            .routes
            .find(method, &p)
            .unwrap_or_else(|| panic!("{method} {p} matches no route"));
        // Literal segments win only by order; the spec lists `/docs/search` before
        // `/docs/{slug}`, so the first match is the operation itself.
        assert_eq!(&m.route.name, id, "{method} {p}");
    }

    // schema compiles (components resolved into the bundle) and validates real bodies.
    let schema = SchemaConfig::from_value(imported.schema.clone()).unwrap();
    assert_eq!(schema.routes.len(), 11);
    let json = |n: &str| (n == "content-type").then_some("application/json");
    let head = Head {
        method: "POST",
        path: "/categories",
        header: &json,
        has_body: true,
    };
    let (name, outcome) = validate::check_head(&schema, &head);
    assert_eq!(name.as_deref(), Some("createcategory"));
    let HeadOutcome::ValidateBody(validate::Expect { route, .. }) = outcome else {
        panic!("createcategory validates its body")
    };
    assert!(validate::check_body(
        &schema,
        route,
        br#"{"title": "Getting started", "type": "guide"}"#
    )
    .is_ok());
    let bad = validate::check_body(&schema, route, br#"{"title": 12}"#).unwrap_err();
    assert_eq!(bad.reason, "schema_violation");

    // pii: the personal-looking `email` property becomes a rule marked for review.
    let pii = PiiConfig::from_value(imported.pii.clone()).unwrap();
    assert!(pii.rules.iter().any(|r| r.name == "email"));
    assert!(imported.review["pii.yaml"]
        .iter()
        .any(|r| r.contains("rule `email`")));
}

#[test]
fn security_schemas_and_personal_fields_map_as_documented() {
    let spec = r#"
openapi: 3.0.3
info: { title: CRM, version: "1" }
security: [ { oauth: [contacts.read] } ]
components:
  securitySchemes:
    oauth: { type: oauth2, flows: { clientCredentials: { tokenUrl: https://idp.example/token, scopes: { contacts.read: r, contacts.write: w } } } }
  schemas:
    Contact:
      type: object
      additionalProperties: false
      properties:
        id: { type: string }
        work_email: { type: string, format: email }
        contact: { type: string, format: email }
        phoneNumber: { type: string, nullable: true }
        ssn: { type: string }
        score: { type: number, minimum: 0, exclusiveMinimum: true }
        address: { $ref: '#/components/schemas/Address' }
    Address:
      type: object
      properties: { street: { type: string } }
paths:
  /health:
    get: { operationId: health, security: [], responses: { '200': { description: ok } } }
  /tenants/{tenant-id}/contacts:
    get:
      operationId: listContacts
      responses:
        '200': { description: ok, content: { application/json: { schema: { type: array, items: { $ref: '#/components/schemas/Contact' } } } } }
    post:
      operationId: createContact
      security: [ { oauth: [contacts.write] }, { oauth: [contacts.admin] } ]
      requestBody: { required: true, content: { application/json: { schema: { $ref: '#/components/schemas/Contact' } } } }
      responses: { '201': { description: created } }
  /files/{name}.json:
    get: { operationId: getFile, responses: { '200': { description: ok } } }
"#;
    let imp = openapi::import(spec).unwrap();
    let routes = imp.authn["routes"].as_array().unwrap();
    let by = |n: &str| routes.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!(by("health")["allow"], "anonymous");
    assert_eq!(
        by("listcontacts")["match"]["template"],
        "/tenants/{tenant_id}/contacts"
    );
    assert_eq!(
        by("listcontacts")["require"]["scopes"]["all_of"],
        json!(["contacts.read"])
    );
    assert_eq!(by("listcontacts")["require"]["tenant_param"], "tenant_id");
    assert_eq!(
        by("createcontact")["require"]["scopes"]["any_of"],
        json!(["contacts.write", "contacts.admin"])
    );
    assert_eq!(by("getfile")["match"]["template"], "/files/{name}");
    assert!(imp.review["authn.yaml"]
        .iter()
        .any(|r| r.contains("`{name}.json`")));
    assert_eq!(imp.authn["providers"][0]["name"], "oauth");

    // OpenAPI 3.0 dialect converted to 2020-12; refs point into the bundle.
    let contact = &imp.schema["schemas"]["Contact"];
    assert_eq!(
        contact["properties"]["phoneNumber"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(contact["properties"]["score"]["exclusiveMinimum"], 0);
    assert!(contact["properties"]["score"].get("minimum").is_none());
    assert_eq!(
        contact["properties"]["address"]["$ref"],
        "urn:portcullis:schema:Address"
    );
    let schema = SchemaConfig::from_value(imp.schema.clone()).unwrap();
    let json = |n: &str| (n == "content-type").then_some("application/json");
    let head = Head {
        method: "POST",
        path: "/tenants/acme/contacts",
        header: &json,
        has_body: true,
    };
    let HeadOutcome::ValidateBody(validate::Expect { route, .. }) =
        validate::check_head(&schema, &head).1
    else {
        panic!()
    };
    assert!(validate::check_body(
        &schema,
        route,
        br#"{"id":"1","phoneNumber":null,"score":1}"#
    )
    .is_ok());
    assert!(
        validate::check_body(&schema, route, br#"{"score":0}"#).is_err(),
        "exclusive minimum"
    );
    assert!(
        validate::check_body(&schema, route, br#"{"unknown":1}"#).is_err(),
        "additionalProperties: false"
    );

    // Masking: names and formats that look personal, on the GET that returns them.
    let rules: Vec<&str> = imp.pii["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["address", "email", "phone", "ssn"]);
    let email = imp.pii["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "email")
        .unwrap();
    assert_eq!(email["fields"], json!(["$..contact", "$..work_email"]));
    assert_eq!(imp.pii["routes"][0]["name"], "listcontacts");
    PiiConfig::from_value(imp.pii.clone()).unwrap();
    AuthnConfig::from_value(with_provider(imp.authn.clone())).unwrap();

    assert!(openapi::import("swagger: '2.0'\ninfo: {}\npaths: {}")
        .unwrap_err()
        .to_string()
        .contains("OpenAPI 3"));
}
