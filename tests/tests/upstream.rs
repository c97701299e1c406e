//! The demo upstream on its own: the API the demo serves and the recorder tests rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_tests::harness::start_upstream;
use portcullis_tests::http::{self, Conn, Request};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serves_the_crm_api_and_records_what_it_received() {
    let (child, addr) = start_upstream();
    let _k = Kill(child);
    let list = http::send(
        addr,
        &Request::get("/api/v1/tenants/acme/customers?limit=2"),
    )
    .unwrap();
    assert_eq!(list.status, 200);
    let v = list.json();
    assert_eq!(v["customers"].as_array().unwrap().len(), 3);
    assert_eq!(v["customers"][0]["tenant"], "acme");
    for field in [
        "email",
        "phone",
        "ssn",
        "card_number",
        "iban",
        "consent",
        "created_at",
    ] {
        assert!(!v["customers"][0][field].is_null(), "{field}");
    }
    assert_eq!(
        http::send(addr, &Request::get("/api/v1/tenants/acme/customers/c-1002"))
            .unwrap()
            .json()["id"],
        "c-1002"
    );
    assert_eq!(
        http::send(addr, &Request::get("/api/v1/tenants/acme/customers/nope"))
            .unwrap()
            .status,
        404
    );
    let head = http::send(addr, &Request::new("HEAD", "/healthz")).unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));

    // Keep-alive: two requests on one connection; a chunked body arrives decoded and whole.
    let mut conn = Conn::connect(addr).unwrap();
    let created = conn
        .send(
            &Request::post(
                "/api/v1/tenants/acme/customers",
                r#"{"name":"Zed","email":"z@x.io"}"#,
            )
            .chunked()
            .header("x-dup", "1")
            .header("x-dup", "2"),
        )
        .unwrap();
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["name"], "Zed");
    assert_eq!(
        conn.send(&Request::post("/api/v1/tenants/acme/reports/export", "{}"))
            .unwrap()
            .status,
        202
    );

    let all = http::send(addr, &Request::get("/__admin/requests"))
        .unwrap()
        .json();
    let reqs = all["requests"].as_array().unwrap();
    let post = reqs
        .iter()
        .find(|r| r["method"] == "POST" && r["path"] == "/api/v1/tenants/acme/customers")
        .unwrap();
    assert_eq!(post["body"], r#"{"name":"Zed","email":"z@x.io"}"#);
    let dups: Vec<&str> = post["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "x-dup")
        .map(|h| h[1].as_str().unwrap())
        .collect();
    assert_eq!(dups, ["1", "2"]);
    let last_seq = reqs.last().unwrap()["seq"].as_u64().unwrap();
    let since = http::send(
        addr,
        &Request::get(&format!("/__admin/requests?since={}", last_seq - 1)),
    )
    .unwrap()
    .json();
    assert_eq!(since["requests"].as_array().unwrap().len(), 1);
    assert_eq!(
        http::send(addr, &Request::post("/__admin/reset", ""))
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        http::send(addr, &Request::get("/__admin/last"))
            .unwrap()
            .status,
        404
    );
}
