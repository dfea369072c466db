//! Routing at the gateway: 405 with `Allow`, 404 for unknown paths (with or
//! without a key), the public health check, and the stage prefix.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn known_paths_with_other_methods_answer_405_with_allow() {
    let s = shared_readonly();
    let api = s.api();
    let cases = [
        ("PATCH", "/v1/products/50-78-2", "GET, PUT, DELETE"),
        ("POST", "/v1/products/50-78-2", "GET, PUT, DELETE"),
        ("PATCH", "/dev/v1/products/50-78-2", "GET, PUT, DELETE"),
        ("POST", "/v1/products", "GET"),
        ("DELETE", "/v1/products", "GET"),
        ("PUT", "/v1/products/50-78-2/manufacturing", "GET"),
        ("PUT", "/v1/keys", "GET, POST"),
        ("GET", "/v1/keys/abcdefghijkl", "DELETE"),
        ("GET", "/v1/keys/abcdefghijkl/rotate", "POST"),
        ("POST", "/health", "GET"),
    ];
    for (method, path, allow) in cases {
        // The route is matched before authentication: same answer with or without a key.
        for key in [ANON, Key(Some(s.admin()))] {
            let r = api.method(method, path, key).await;
            r.assert_problem(405, "method-not-allowed", None, &format!("this resource supports {allow}"));
            let all: Vec<&str> = r.headers.get_all("allow").iter().map(|v| v.to_str().unwrap()).collect();
            assert_eq!(all, [allow], "{method} {path}");
        }
    }
}

#[tokio::test]
async fn unknown_paths_answer_404_with_or_without_a_key() {
    let s = shared_readonly();
    let api = s.api();
    let paths = [
        "/",
        "/v1",
        "/v1/",
        "/v1/product",
        "/v1/products/",
        "/v2/products",
        "/V1/products",
        "/v1/products/50-78-2/",
        "/v1/products/50-78-2/extra",
        "/v1/products//manufacturing",
        "/v1/products/%zz",
        "/v1/keys/abcdefghijkl/rotate/now",
        "/dev",
        "/dev/",
        "/prod/v1/products/50-78-2",
        "/dev/dev/v1/products/50-78-2",
        "/healthz",
    ];
    for path in paths {
        for key in [ANON, Key(Some(s.demo())), Key(Some("garbage"))] {
            for method in ["GET", "DELETE"] {
                let r = api.method(method, path, key).await;
                r.assert_problem(404, "not-found", None, "no such resource");
            }
        }
    }
}

#[tokio::test]
async fn the_stage_prefix_is_optional() {
    let s = shared_readonly();
    let api = s.api();
    for (plain, staged) in [
        ("/v1/products/50-78-2", "/dev/v1/products/50-78-2"),
        ("/v1/products?name=tob", "/dev/v1/products?name=tob"),
        ("/v1/products/50-78-2/manufacturing", "/dev/v1/products/50-78-2/manufacturing"),
    ] {
        let a = api.get(plain, s.admin()).await.json(200);
        let b = api.get(staged, s.admin()).await.json(200);
        assert_eq!(a, b, "{staged}");
    }
    assert_eq!(api.get("/dev/v1/products/50-78-2", s.demo()).await.json(200)["name"], "acetylsalicylic acid");
    api.get("/dev/v1/products/50-78-2", ANON).await.assert_unauthorized();
    api.get("/dev/v1/products/50-78-2/manufacturing", s.demo()).await.assert_gateway_forbidden();
    assert_eq!(api.get("/dev/health", ANON).await.json(200), json!({"status": "ok"}));
    let keys = api.get("/dev/v1/keys", s.demo()).await.json(200);
    assert_eq!(keys["items"][0]["customer"], "demo-customer");
}

#[tokio::test]
async fn health_is_public_and_every_response_has_a_request_id() {
    let s = shared_readonly();
    let api = s.api();
    let r = api.get("/health", ANON).await;
    assert_eq!(r.json(200), json!({"status": "ok"}));
    let a = r.header("x-amzn-requestid").unwrap().to_string();
    let b = api.get("/health", ANON).await.header("x-amzn-requestid").unwrap().to_string();
    assert_ne!(a, b, "a fresh request id per request");
    for id in [&a, &b] {
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(id.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
    }
    // With a key, too.
    assert_eq!(api.get("/health", s.demo()).await.json(200), json!({"status": "ok"}));
    assert_eq!(api.get("/health", "garbage").await.json(200), json!({"status": "ok"}));
}

/// Every route refuses query parameters it does not define, not just the
/// listings.
#[tokio::test]
async fn unknown_query_parameters_are_refused_on_every_route() {
    let s = shared_readonly();
    let api = s.api();
    for path in
        ["/v1/products/50-78-2?x=1", "/v1/products/50-78-2/manufacturing?debug=true", "/v1/keys?foo=bar"]
    {
        let r = api.get(path, s.admin()).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(PROBLEM_JSON), "{path}");
    }
}
