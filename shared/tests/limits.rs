//! The rate limiter and the brute-force guard on a real store, with a clock
//! moved by hand: exact admission under concurrency, window roll-over, the
//! day boundary, route costs, overrides and the exact header values.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use pharmagate_shared::clock::Clock;
use pharmagate_shared::domain::{CustomerId, Principal, Role, Tier};
use pharmagate_shared::embedded::SqliteStore;
use pharmagate_shared::limits::{Decision, Limit, LimitConfig, Limiter, Usage};
use pharmagate_shared::ports::ItemStore;

/// 10:00 UTC tomorrow (`start` in the tests). The store judges TTLs by the real clock, so the
/// hand-moved clock runs ahead of it, never behind.
fn t0() -> i64 {
    let now = pharmagate_shared::clock::now_secs();
    now - now.rem_euclid(86_400) + 86_400 + 10 * 3600
}

struct Rig {
    _dir: Option<tempfile::TempDir>,
    store: Arc<dyn ItemStore>,
    time: Arc<AtomicI64>,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ItemStore> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    Rig { _dir: Some(dir), store, time: Arc::new(AtomicI64::new(t0())) }
}

/// The same on DynamoDB (the local AWS endpoint the test command runs).
async fn dynamodb_rig(endpoint: &str) -> Rig {
    use pharmagate_shared::aws::{self, AwsResources};
    use pharmagate_shared::config::{Backend, Settings};
    let resources = AwsResources::with_prefix(&aws::unique_prefix("limits"));
    let sdk = aws::local_sdk_config_with(endpoint, std::time::Duration::from_secs(120)).await;
    let backend = Backend::aws_with(&sdk, &resources, Settings::default(), true).await.expect("bootstrap");
    Rig { _dir: None, store: backend.store, time: Arc::new(AtomicI64::new(t0())) }
}

impl Rig {
    fn limiter(&self, config: LimitConfig) -> Limiter {
        Limiter::new(self.store.clone(), config, Clock::manual(self.time.clone()))
    }

    fn set(&self, t: i64) {
        self.time.store(t, Ordering::SeqCst);
    }
}

fn principal(id: &str, customer: &str, tier: Tier) -> Principal {
    Principal {
        id: id.into(),
        customer: CustomerId::parse(customer).unwrap(),
        role: Role::Customer,
        tier,
        scopes: None,
    }
}

fn config(rate: Option<u64>, window_seconds: u64, daily_quota: Option<u64>) -> LimitConfig {
    let limit = Limit { rate, window_seconds, daily_quota };
    LimitConfig { free: limit, paid: limit, ..LimitConfig::default() }
}

fn admitted(decision: &Decision) -> bool {
    matches!(decision, Decision::Admitted(_))
}

/// `n` concurrent requests of cost 1; how many were admitted.
async fn burst(limiter: &Limiter, who: &Principal, n: usize) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (limiter, who) = (limiter.clone(), who.clone());
            tokio::spawn(async move { limiter.admit(&who, 1).await.unwrap() })
        })
        .collect();
    let mut count = 0;
    for task in tasks {
        if admitted(&task.await.unwrap()) {
            count += 1;
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_admit_exactly_the_limit() {
    exact_under_concurrency(&rig()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_admit_exactly_the_limit_on_dynamodb() {
    let Some(endpoint) = pharmagate_shared::aws::test_endpoint("limits on DynamoDB") else { return };
    exact_under_concurrency(&dynamodb_rig(&endpoint).await).await;
}

async fn exact_under_concurrency(r: &Rig) {
    for (limit, n) in [(5u64, 10usize), (5, 25), (50, 100), (50, 250)] {
        let limiter = r.limiter(config(Some(limit), 1, None));
        let who = principal(&format!("rate-{limit}-{n}"), "burst-co", Tier::Free);
        assert_eq!(burst(&limiter, &who, n).await, limit as usize, "rate {limit}, {n} at once");
    }
    for (quota, n) in [(7u64, 14usize), (7, 35)] {
        let limiter = r.limiter(config(None, 1, Some(quota)));
        let who = principal("quota", &format!("quota-{n}-co"), Tier::Paid);
        assert_eq!(burst(&limiter, &who, n).await, quota as usize, "quota {quota}, {n} at once");
    }
}

#[tokio::test]
async fn the_rate_window_rolls_over() {
    let r = rig();
    let start = t0();
    let limiter = r.limiter(config(Some(3), 10, None));
    let who = principal("k1", "roll-co", Tier::Free);
    r.set(start + 4);
    for _ in 0..3 {
        assert!(admitted(&limiter.admit(&who, 1).await.unwrap()));
    }
    match limiter.admit(&who, 1).await.unwrap() {
        Decision::Limited { retry_after, usage } => {
            assert_eq!(retry_after, 6, "until the 10-second window ends");
            assert_eq!(usage.rate.unwrap().remaining, 0);
        }
        other => panic!("4th request in the window: {other:?}"),
    }
    r.set(start + 9);
    assert!(!admitted(&limiter.admit(&who, 1).await.unwrap()));
    r.set(start + 10);
    assert!(admitted(&limiter.admit(&who, 1).await.unwrap()), "a new window");
}

#[tokio::test]
async fn the_daily_quota_resets_at_midnight_utc() {
    let r = rig();
    let start = t0();
    let limiter = r.limiter(config(None, 1, Some(3)));
    let who = principal("k1", "day-co", Tier::Free);
    let midnight = start - start.rem_euclid(86_400) + 86_400;
    for _ in 0..3 {
        assert!(admitted(&limiter.admit(&who, 1).await.unwrap()));
    }
    r.set(midnight - 1);
    match limiter.admit(&who, 1).await.unwrap() {
        Decision::Limited { retry_after, .. } => assert_eq!(retry_after, 1),
        other => panic!("over quota at 23:59:59: {other:?}"),
    }
    r.set(midnight);
    assert!(admitted(&limiter.admit(&who, 1).await.unwrap()), "a new day");
    // A refused request used none of the quota.
    let usage = limiter.peek(&who).await.unwrap();
    assert_eq!(usage.daily.unwrap().used, 1);
}

#[tokio::test]
async fn the_quota_belongs_to_the_customer_and_tier_the_rate_to_the_principal() {
    let r = rig();
    let limiter = r.limiter(config(Some(2), 60, Some(3)));
    let (a, b) = (principal("key-a", "shared-co", Tier::Free), principal("key-b", "shared-co", Tier::Free));
    assert!(admitted(&limiter.admit(&a, 1).await.unwrap()));
    assert!(admitted(&limiter.admit(&a, 1).await.unwrap()));
    assert!(!admitted(&limiter.admit(&a, 1).await.unwrap()), "a's rate is used up");
    assert!(admitted(&limiter.admit(&b, 1).await.unwrap()), "b has its own rate");
    match limiter.admit(&b, 1).await.unwrap() {
        Decision::Limited { usage, .. } => assert_eq!(usage.daily.unwrap().remaining, 0),
        other => panic!("the customer's quota of 3 is used up: {other:?}"),
    }
    let other_tier = principal("key-c", "shared-co", Tier::Paid);
    assert!(admitted(&limiter.admit(&other_tier, 1).await.unwrap()), "another tier, another quota");
}

#[tokio::test]
async fn costs_count_and_overrides_win() {
    let r = rig();
    let mut cfg = config(Some(5), 60, None);
    cfg.overrides
        .insert("principal:vip".into(), Limit { rate: Some(100), window_seconds: 60, daily_quota: None });
    cfg.overrides
        .insert("customer:capped-co".into(), Limit { rate: Some(1), window_seconds: 60, daily_quota: None });
    let limiter = r.limiter(cfg);
    let who = principal("k1", "cost-co", Tier::Free);
    assert!(admitted(&limiter.admit(&who, 2).await.unwrap()));
    assert!(admitted(&limiter.admit(&who, 2).await.unwrap()));
    assert!(!admitted(&limiter.admit(&who, 2).await.unwrap()), "4 + 2 > 5");
    assert!(admitted(&limiter.admit(&who, 1).await.unwrap()), "4 + 1 = 5");
    let vip = principal("vip", "cost-co", Tier::Free);
    assert_eq!(burst(&limiter, &vip, 20).await, 20);
    let capped = principal("k2", "capped-co", Tier::Paid);
    assert_eq!(burst(&limiter, &capped, 5).await, 1);
}

#[tokio::test]
async fn internal_callers_are_not_limited_and_get_no_headers() {
    let r = rig();
    let limiter = r.limiter(LimitConfig::default());
    let who = principal("ops", "pharmagate", Tier::Internal);
    assert_eq!(burst(&limiter, &who, 300).await, 300);
    match limiter.admit(&who, 1).await.unwrap() {
        Decision::Admitted(usage) => {
            assert_eq!(usage, Usage { rate: None, daily: None });
            assert_eq!(usage.headers(), None);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn headers_state_the_policy_and_what_is_left() {
    let r = rig();
    let start = t0();
    let limiter = r.limiter(LimitConfig::default()); // free: 5/s, 1000/day
    let who = principal("k1", "hdr-co", Tier::Free);
    let to_midnight = 86_400 - start.rem_euclid(86_400);
    let Decision::Admitted(usage) = limiter.admit(&who, 2).await.unwrap() else { panic!("admitted") };
    let (policy, state) = usage.headers().unwrap();
    assert_eq!(policy, "\"rate\";q=5;w=1, \"daily\";q=1000;w=86400");
    assert_eq!(state, format!("\"rate\";r=3;t=1, \"daily\";r=998;t={to_midnight}"));
}
