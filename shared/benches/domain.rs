//! Domain hot paths: CAS parsing and API-key verification on a warm process.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pharmagate_shared::domain::{ApiKey, Cas, KeyHash};

fn cas(c: &mut Criterion) {
    c.bench_function("cas/parse canonical", |b| b.iter(|| Cas::parse(black_box("953769-46-5"))));
    c.bench_function("cas/parse leading zeros", |b| b.iter(|| Cas::parse(black_box("0000665-66-7"))));
    c.bench_function("cas/reject bad check digit", |b| b.iter(|| Cas::parse(black_box("953769-46-4"))));
    c.bench_function("cas/display", |b| {
        let cas = Cas::parse("953769-46-5").unwrap();
        b.iter(|| black_box(cas).to_string())
    });
}

fn api_key(c: &mut Criterion) {
    let key = ApiKey::generate("dev");
    let text = key.expose().to_string();
    let stored = KeyHash::from_hex(&key.hash().to_hex()).unwrap();
    // What the authorizer does per request besides the store lookup: check
    // the shape and checksum, hash, compare in constant time.
    c.bench_function("apikey/verify (parse + checksum + sha256 + compare)", |b| {
        b.iter(|| {
            let parsed = ApiKey::parse(black_box(&text)).unwrap();
            stored.matches(&parsed.hash())
        })
    });
    let mut bad = text.clone();
    bad.pop();
    bad.push('!');
    c.bench_function("apikey/reject malformed (no lookup)", |b| {
        b.iter(|| ApiKey::parse(black_box(&bad)).is_err())
    });
}

criterion_group!(benches, cas, api_key);
criterion_main!(benches);
