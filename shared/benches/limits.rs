//! What the rate limiter adds to a request on the embedded backend: two
//! atomic counter updates (rate and daily quota) for a limited tier, none
//! for the internal tier; and the brute-force guard's per-request check.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pharmagate_shared::clock::Clock;
use pharmagate_shared::domain::{CustomerId, Principal, Role, Tier};
use pharmagate_shared::embedded::SqliteStore;
use pharmagate_shared::guard::{AuthGuard, GuardConfig, Subject};
use pharmagate_shared::limits::{Limit, LimitConfig, Limiter};
use pharmagate_shared::ports::ItemStore;

fn limiter(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ItemStore> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    // Limits high enough never to refuse during the measurement.
    let high = Limit { rate: Some(u64::MAX / 4), window_seconds: 1, daily_quota: Some(u64::MAX / 4) };
    let config = LimitConfig { free: high, ..LimitConfig::default() };
    let limiter = Limiter::new(store.clone(), config, Clock::system());
    let principal = |tier| Principal {
        id: "bench-key".into(),
        customer: CustomerId::parse("bench-co").unwrap(),
        role: Role::Customer,
        tier,
        scopes: None,
    };
    let (free, internal) = (principal(Tier::Free), principal(Tier::Internal));
    c.bench_function("limits/admit free tier (rate + daily counters)", |b| {
        b.iter(|| rt.block_on(limiter.admit(&free, 1)).unwrap())
    });
    c.bench_function("limits/admit internal tier (no counters)", |b| {
        b.iter(|| rt.block_on(limiter.admit(&internal, 1)).unwrap())
    });
    let guard = AuthGuard::new(store, GuardConfig::default(), Clock::system());
    let subjects = [Subject::SourceIp("198.51.100.7".into()), Subject::ApiKeyId("abcdefghijkl".into())];
    c.bench_function("guard/blocked check (address + key id)", |b| {
        b.iter(|| rt.block_on(guard.blocked(&subjects)).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = limiter
}
criterion_main!(benches);
