//! Access tokens: signing, and verification against the bare Ed25519 check
//! it wraps (target: full verification ≤ 1.2× the bare signature check).

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use pharmagate_shared::jwt::{self, Claims, Expectations, KeySet, SigningKey};

fn claims(now: i64) -> Claims {
    Claims {
        iss: "https://api.pharmagate.example".into(),
        sub: "pgc_0123456789abcdef".into(),
        aud: "pharmagate-api".into(),
        client_id: "pgc_0123456789abcdef".into(),
        client_gen: "5f0c2a9e41d7b386".into(),
        scope: "catalog:read manufacturing:read".into(),
        iat: now,
        exp: now + 900,
        nbf: None,
        jti: jwt::new_jti(),
    }
}

fn tokens(c: &mut Criterion) {
    let key = SigningKey::generate();
    let now = 1_800_000_000;
    let token = key.sign(&claims(now));
    let keys =
        KeySet::new(vec![SigningKey::generate().public(), key.public(), SigningKey::generate().public()]);
    let expect = Expectations {
        issuer: "https://api.pharmagate.example".into(),
        audience: "pharmagate-api".into(),
        max_lifetime_secs: 900,
    };
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = B64.decode(signature).unwrap();
    let public = key.public();

    c.bench_function("jwt/sign (claims to compact token)", |b| b.iter(|| key.sign(black_box(&claims(now)))));
    c.bench_function("jwt/ed25519 verify_strict (bare signature check)", |b| {
        b.iter(|| public.verify_signature(black_box(input.as_bytes()), black_box(&signature)).unwrap())
    });
    c.bench_function("jwt/verify (split, header, kid lookup, signature, claims)", |b| {
        b.iter(|| jwt::verify(black_box(&token), &keys, &expect, now).unwrap())
    });
    let forged = format!("{input}.{}", B64.encode([0u8; 64]));
    c.bench_function("jwt/reject forged signature", |b| {
        b.iter(|| jwt::verify(black_box(&forged), &keys, &expect, now).unwrap_err())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = tokens
}
criterion_main!(benches);
