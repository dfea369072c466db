//! The JWT attack suite (RFC 8725): forged, altered and misleading bearer
//! tokens sent to a catalog route through the real gateway. Every one must
//! get the same 401 as a missing credential, and none may make the server
//! reach out anywhere.
//!
//! Tokens that need a valid signature are signed with the server's own key,
//! read from its secret store, as an insider who stole the key (or a bug in
//! the issuer) would: the claim checks must hold even then.

use std::net::TcpListener;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer, SigningKey};
use pharmagate_shared::ports::Stage;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::*;

const AUDIENCE: &str = "pharmagate-api";

/// The server's current signing key (private), its kid and public `x`.
async fn server_key(s: &Server) -> (SigningKey, String, String) {
    let backend = server_backend(&s.data_dir).await;
    let current = backend.secrets.get_stage(&backend.settings.signing_secret_id, Stage::Current).await;
    let jwk: Value =
        serde_json::from_str(&current.expect("read secret").expect("current key").value).unwrap();
    let d: [u8; 32] = B64.decode(jwk["d"].as_str().unwrap()).unwrap().try_into().unwrap();
    let kid = jwk["kid"].as_str().unwrap().to_string();
    let x = jwk["x"].as_str().unwrap().to_string();
    (SigningKey::from_bytes(&d), kid, x)
}

fn attacker_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    SigningKey::from_bytes(&seed)
}

fn thumbprint(key: &SigningKey) -> String {
    let x = B64.encode(key.verifying_key().as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(s: &Server, client: &str, generation: &str) -> Value {
    let t = now();
    json!({
        "iss": s.base, "sub": client, "aud": AUDIENCE, "client_id": client, "client_gen": generation,
        "scope": "catalog:read", "iat": t, "exp": t + 600, "jti": format!("attack-{}", rand_hex()),
    })
}

fn rand_hex() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn header(kid: &str) -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid})
}

/// `header.payload` of JSON values given as text (so wrong types and odd
/// spellings survive), and the signature `sign` makes over it.
fn craft_text(header: &str, payload: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature))
}

fn craft(header: &Value, payload: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    craft_text(&header.to_string(), &payload.to_string(), sign)
}

fn ed25519(key: &SigningKey) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |m| key.sign(m).to_bytes().to_vec()
}

/// HMAC-SHA256 (RFC 2104), for the algorithm-confusion attack.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

/// A client of the server, and a genuine token of it.
async fn client(s: &Server, customer: &str) -> (String, String, String) {
    let api = s.api();
    let body = json!({"name": "attack target", "customer": customer, "scopes": ["catalog:read"]});
    let (id, secret) = api.create_client(s.admin(), &body).await;
    let token = api.token(&id, &secret, None).await;
    let generation = claims_of(&token)["client_gen"].as_str().unwrap().to_string();
    (id, token, generation)
}

/// A token's claims, unverified (for crafting look-alikes).
fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn forged_and_altered_tokens_are_all_refused_with_401() {
    let s = shared_mutable();
    let api = s.api();
    let (client_id, genuine, generation) = client(s, "jwt-attack-co").await;
    let (ours, kid, x) = server_key(s).await;
    let evil = attacker_key();
    let evil_kid = thumbprint(&evil);
    let path = format!("/v1/products/{ASPIRIN}");
    let good = claims(s, &client_id, &generation);

    // Controls: the genuine token and one crafted here with our key pass, so
    // every refusal below is the attack's doing, not the crafting's.
    assert_eq!(api.get_bearer(&path, &genuine).await.status, 200);
    let crafted = craft(&header(&kid), &good, ed25519(&ours));
    assert_eq!(api.get_bearer(&path, &crafted).await.status, 200, "crafted control token");

    let [h, p, _sig]: [&str; 3] = genuine.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut attacks: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, token: String| attacks.push((name.to_string(), token));

    for alg in ["none", "None", "NONE", "nOnE"] {
        let hdr = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
        add(&format!("alg {alg}, no signature"), craft(&hdr, &good, |_| vec![]));
        add(&format!("alg {alg}, real signature"), craft(&hdr, &good, ed25519(&ours)));
    }
    add("empty signature", format!("{h}.{p}."));
    add("two segments", format!("{h}.{p}"));
    add("four segments", format!("{genuine}.{p}"));
    add("signature of another token", format!("{}.{p}.{}", h, crafted.rsplit('.').next().unwrap()));
    let public_raw = B64.decode(&x).unwrap();
    let jwk_text = json!({"kty": "OKP", "crv": "Ed25519", "x": x}).to_string();
    for (name, secret) in
        [("raw", public_raw.clone()), ("base64url", x.clone().into_bytes()), ("jwk", jwk_text.into_bytes())]
    {
        let hdr = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
        add(
            &format!("HS256 keyed with our public key ({name})"),
            craft(&hdr, &good, |m| hmac_sha256(&secret, m)),
        );
    }
    let es = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
    add("ES256 signature of zeros", craft(&es, &good, |_| vec![0u8; 64]));
    add("EdDSA signature of zeros", craft(&header(&kid), &good, |_| vec![0u8; 64]));
    let evil_jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(evil.verifying_key().as_bytes())});
    for kid_used in [&evil_kid, &kid] {
        let hdr = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid_used, "jwk": evil_jwk});
        add("embedded jwk", craft(&hdr, &good, ed25519(&evil)));
    }
    add("unknown key", craft(&header(&evil_kid), &good, ed25519(&evil)));
    add("attacker key under our kid", craft(&header(&kid), &good, ed25519(&evil)));
    for bad_kid in
        ["../../../../etc/passwd", "/dev/zero", "' OR '1'='1\"; --", "\"\"\"\\\"'", &"k".repeat(10 * 1024)]
    {
        add(&format!("kid {:.30}", bad_kid), craft(&header(bad_kid), &good, ed25519(&ours)));
    }
    let t = now();
    let with = |name: &str, change: Value| {
        let mut c = good.clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        (name.to_string(), craft(&header(&kid), &c, ed25519(&ours)))
    };
    let claim_attacks = [
        with("expired", json!({"iat": t - 1000, "exp": t - 400})),
        with("not yet valid", json!({"nbf": t + 600})),
        with("issued in the future", json!({"iat": t + 300, "exp": t + 900})),
        with("wrong issuer", json!({"iss": "https://evil.example"})),
        with("issuer with trailing slash", json!({"iss": format!("{}/", s.base)})),
        with("wrong audience", json!({"aud": "another-api"})),
        with("audience as array", json!({"aud": [AUDIENCE]})),
        with("exp as string", json!({"exp": (t + 600).to_string()})),
        with("exp as float", json!({"exp": (t + 600) as f64 + 0.5})),
        with("iat as bool", json!({"iat": true})),
        with("scope as array", json!({"scope": ["catalog:read"]})),
        with("client_id as number", json!({"client_id": 7})),
        with("sub differs from client_id", json!({"sub": "someone-else"})),
        with("missing exp", json!({"exp": null})),
        with("missing iss", json!({"iss": null})),
        with("missing aud", json!({"aud": null})),
        with("missing jti", json!({"jti": null})),
        with("another client generation", json!({"client_gen": "0000000000000000"})),
        with("missing client generation", json!({"client_gen": null})),
        with("lifetime longer than we issue", json!({"exp": t + 86_400})),
        with("unknown client", json!({"client_id": "pgc_nobodyatall00", "sub": "pgc_nobodyatall00"})),
        with("scope we never grant", json!({"scope": "keys:any clients:manage"})),
    ];
    for (name, token) in claim_attacks {
        if name == "scope we never grant" {
            // Valid signature and client; the scope grants nothing it holds.
            api.get_bearer(&path, &token).await.assert_gateway_forbidden();
            continue;
        }
        attacks.push((name, token));
    }
    for typ in [Value::from("JWT"), Value::from("jwt"), Value::Null, Value::from(1)] {
        let mut hdr = header(&kid);
        if typ.is_null() {
            hdr.as_object_mut().unwrap().remove("typ");
        } else {
            hdr["typ"] = typ.clone();
        }
        attacks.push((format!("typ {typ}"), craft(&hdr, &good, ed25519(&ours))));
    }
    let dup = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","alg":"none"}}"#);
    attacks.push(("duplicate alg".into(), craft_text(&dup, &good.to_string(), ed25519(&ours))));
    let crit = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "crit": ["exp"]});
    attacks.push(("crit header".into(), craft(&crit, &good, ed25519(&ours))));
    attacks.push(("padded base64".into(), format!("{h}=.{p}.{}", crafted.rsplit('.').next().unwrap())));
    attacks.push(("not base64".into(), format!("{h}.{p}.!!!!")));

    for scheme in ["bearer", "BEARER"] {
        // The scheme is case-insensitive (RFC 9110): the control passes.
        assert_eq!(api.get_auth(&path, &format!("{scheme} {crafted}")).await.status, 200);
    }
    for (name, token) in &attacks {
        let resp = api.get_bearer(&path, token).await;
        assert_eq!(resp.status, 401, "attack {name:?} got {}: {}", resp.status, resp.text());
        resp.assert_unauthorized();
    }
    for raw in ["Bearer", "Bearer ", "Basic abc", "Token abc", &format!("Bearer  {crafted}")] {
        api.get_auth(&path, raw).await.assert_unauthorized();
    }
    // An API key and a token at once are ambiguous.
    let rb = api
        .request(reqwest::Method::GET, &path, s.demo())
        .header("authorization", format!("Bearer {crafted}"));
    api.send(rb).await.assert_unauthorized();
}

#[tokio::test]
async fn key_urls_in_headers_are_never_fetched() {
    let s = shared_mutable();
    let api = s.api();
    let (client_id, _, generation) = client(s, "jwt-jku-co").await;
    let (ours, kid, _) = server_key(s).await;
    let evil = attacker_key();
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let url = format!("http://{}/jwks.json", trap.local_addr().unwrap());
    let path = format!("/v1/products/{ASPIRIN}");
    let good = claims(s, &client_id, &generation);
    for member in ["jku", "x5u"] {
        for (signer, kid_used) in [(&ours, kid.clone()), (&evil, thumbprint(&evil))] {
            let mut hdr = header(&kid_used);
            hdr[member] = json!(url);
            let token = craft(&hdr, &good, ed25519(signer));
            api.get_bearer(&path, &token).await.assert_unauthorized();
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the server connected to the URL in a token header: {other:?}"),
    }
}

#[tokio::test]
async fn a_token_signed_by_a_withdrawn_key_is_refused() {
    let env = vec![("PHARMAGATE_SIGNING_KEY_CACHE_SECONDS".to_string(), "1".to_string())];
    let s = Server::start_with(Opts { env, ..Opts::default() });
    let api = s.api();
    let (client_id, old_token, _) = client(&s, "jwt-withdrawn-co").await;
    let path = format!("/v1/products/{ASPIRIN}");
    assert_eq!(api.get_bearer(&path, &old_token).await.status, 200);

    // Two rotations straight to current: the first key keeps no stage.
    let backend = server_backend(&s.data_dir).await;
    let secret_id = backend.settings.signing_secret_id.clone();
    for version in ["withdraw-1", "withdraw-2"] {
        let key = pharmagate_shared::jwt::SigningKey::generate();
        backend.secrets.put_version(&secret_id, version, &key.to_secret(), &[Stage::Current]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.get_bearer(&path, &old_token).await.assert_unauthorized();

    // The server itself carries on with the new key.
    let body = json!({"name": "after", "customer": "jwt-withdrawn-co", "scopes": ["catalog:read"]});
    let (id, secret) = api.create_client(s.admin(), &body).await;
    let fresh = api.token(&id, &secret, None).await;
    assert_eq!(api.get_bearer(&path, &fresh).await.status, 200);
    let jwks: Value = serde_json::from_slice(&api.get("/.well-known/jwks.json", ANON).await.body).unwrap();
    let kids: Vec<&str> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids.len(), 2, "current and previous: {jwks}");
    assert!(!client_id.is_empty());
}

/// Introspection reports a token inactive from its `exp` on: the verifiers'
/// clock-skew leeway is no extension of its lifetime.
#[tokio::test]
async fn introspection_reports_a_token_inactive_from_its_expiry() {
    let s = Server::start();
    let api = s.api();
    let body = json!({"name": "introspecting", "customer": "introspect-co", "scopes": ["catalog:read"]});
    let (id, secret) = api.create_client(s.admin(), &body).await;
    let generation =
        claims_of(&api.token(&id, &secret, None).await)["client_gen"].as_str().unwrap().to_string();
    let (key, kid, _) = server_key(&s).await;
    let t = now();
    let token_ending = |exp: i64| {
        let mut c = claims(&s, &id, &generation);
        c["iat"] = json!(t - 300);
        c["exp"] = json!(exp);
        craft(&header(&kid), &c, ed25519(&key))
    };
    let introspect = |token: String| {
        let (api, id, secret) = (api.clone(), id.clone(), secret.clone());
        async move {
            api.post_form("/oauth/introspect", Some((&id, &secret)), &form(&[("token", &token)]))
                .await
                .json(200)
        }
    };
    let live = introspect(token_ending(t + 120)).await;
    assert_eq!((&live["active"], &live["exp"]), (&json!(true), &json!(t + 120)), "{live}");
    // Expired 5 s ago: inside the 30 s leeway, but no longer active.
    assert_eq!(introspect(token_ending(t - 5)).await, json!({"active": false}));
}
