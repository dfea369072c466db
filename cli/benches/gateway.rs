//! Requests through the local API Gateway: authorizer + policy evaluation +
//! REST event + catalog handler, on the embedded backend. Once in-process
//! (the emulation's own cost) and once over loopback HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use pharmagate_authorizer::Authorizer;
use pharmagate_cli::gateway::Gateway;
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{ApiKey, CustomerId, Permission, Role, Tier};
use pharmagate_shared::repo::clients::NewClient;
use pharmagate_shared::repo::keys::NewKey;

fn setup(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (Backend, ApiKey) {
    let backend = Backend::embedded(dir, Settings::default()).unwrap();
    rt.block_on(async {
        pharmagate_cli::seed::ensure_seeded(&backend).await.unwrap();
        let new = NewKey {
            customer: CustomerId::parse("bench").unwrap(),
            role: Role::Customer,
            tier: Tier::Internal, // not rate-limited: a bench sends thousands a second
            label: None,
            expires_at: None,
        };
        let (key, _) = backend.keys().issue(new, None).await.unwrap();
        (backend, key)
    })
}

fn gateway(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (backend, key) = setup(&rt, dir.path());
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_str(key.expose()).unwrap());

    let authorizer = Authorizer::new(&backend);
    let event: aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest =
        serde_json::from_value(serde_json::json!({
            "type": "REQUEST",
            "methodArn": "arn:aws:execute-api:us-east-1:000000000000:pharmagate/dev/GET/v1/products/953769-46-5",
            "headers": {"x-api-key": key.expose()},
            "requestContext": {}
        }))
        .unwrap();
    c.bench_function("authorizer/authorize (sqlite lookup, warm)", |b| {
        b.iter(|| rt.block_on(authorizer.authorize(&event)).unwrap())
    });

    let gw = Arc::new(Gateway::new(&backend, "dev", Duration::ZERO));
    c.bench_function("gateway/GET product in-process", |b| {
        b.iter(|| {
            let r = rt.block_on(gw.handle(&Method::GET, "/v1/products/953769-46-5", &headers, &[], peer));
            assert_eq!(r.status, 200);
        })
    });

    oauth(c, &rt, &backend, &gw, peer);

    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(pharmagate_cli::server::serve(listener, gw.clone(), Default::default(), std::future::pending()));
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/products/953769-46-5");
    c.bench_function("gateway/GET product over loopback HTTP", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = client.get(&url).header("x-api-key", key.expose()).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap()
            })
        })
    });
}

/// Token issue (client authentication, signing) and a bearer-token read
/// (verification, client and revocation lookups, catalog read).
fn oauth(c: &mut Criterion, rt: &tokio::runtime::Runtime, backend: &Backend, gw: &Gateway, peer: SocketAddr) {
    use base64::Engine;
    rt.block_on(backend.signing_keys().bootstrap()).unwrap();
    let new = NewClient {
        id: None,
        name: "bench".into(),
        customer: CustomerId::parse("bench").unwrap(),
        tier: Tier::Internal, // not rate-limited: a bench sends thousands a second
        scopes: vec![Permission::CatalogRead],
    };
    let (secret, client) = rt.block_on(backend.clients().create(new)).unwrap();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", client.id, secret.expose()));
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&format!("Basic {basic}")).unwrap());
    headers.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded"));
    let form = b"grant_type=client_credentials";
    let mut token = String::new();
    c.bench_function("gateway/POST /oauth/token in-process (issue a token)", |b| {
        b.iter(|| {
            let r = rt.block_on(gw.handle(&Method::POST, "/oauth/token", &headers, form, peer));
            assert_eq!(r.status, 200);
            token = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_string();
        })
    });
    let mut bearer = HeaderMap::new();
    bearer.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    c.bench_function("gateway/GET product with bearer token in-process", |b| {
        b.iter(|| {
            let r = rt.block_on(gw.handle(&Method::GET, "/v1/products/953769-46-5", &bearer, &[], peer));
            assert_eq!(r.status, 200);
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = gateway
}
criterion_main!(benches);
