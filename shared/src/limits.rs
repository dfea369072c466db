//! Rate limits and quotas by tier, exact under concurrency.
//!
//! Each principal has a rate (requests per window, default one second) and
//! its customer a daily quota per tier (so issuing or rotating keys cannot
//! multiply a customer's quota). A request costs its route's `cost` against
//! both. Each counter is one atomic conditional add on the item store
//! (`ItemStore::add` with a maximum: DynamoDB `UpdateItem ADD` with a
//! condition, one immediate transaction in SQLite) — never a read followed by
//! a write — so N concurrent requests against a limit L admit exactly L.
//! Counters expire by TTL.
//!
//! Limits come from `PHARMAGATE_RATE_LIMITS` (JSON, see [`LimitConfig`]);
//! the defaults are free 5/s and 1,000/day, paid 50/s and 100,000/day,
//! internal unlimited.
//!
//! Responses carry the IETF `RateLimit-Policy` and `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers): `"rate";q=5;w=1, "daily";q=1000;w=86400`
//! and `"rate";r=4;t=1, "daily";r=993;t=3600`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::domain::{Principal, Tier};
use crate::ports::{ItemStore, Table};
use crate::repo::RepoError;

pub const DAY_SECS: i64 = 86_400;
/// How long a counter outlives its window before TTL removes it.
const COUNTER_SLACK_SECS: i64 = 120;

/// One tier's (or one principal's) limits. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Requests (cost units) per rate window.
    pub rate: Option<u64>,
    /// Length of the rate window in seconds (1 to 3600).
    #[serde(default = "one_second")]
    pub window_seconds: u64,
    /// Cost units per UTC day.
    pub daily_quota: Option<u64>,
}

fn one_second() -> u64 {
    1
}

impl Limit {
    pub const UNLIMITED: Limit = Limit { rate: None, window_seconds: 1, daily_quota: None };

    fn validate(&self, name: &str) -> Result<(), String> {
        if !(1..=3600).contains(&self.window_seconds) {
            return Err(format!("{name}: window_seconds must be 1 to 3600"));
        }
        if self.rate == Some(0) || self.daily_quota == Some(0) {
            return Err(format!("{name}: a limit of 0 would refuse everything; remove the key instead"));
        }
        Ok(())
    }
}

/// Limits per tier, with per-principal and per-customer overrides.
///
/// `PHARMAGATE_RATE_LIMITS` holds this as JSON; every member is optional and
/// defaults as below:
/// `{"free": {"rate": 5, "window_seconds": 1, "daily_quota": 1000},
///   "paid": {"rate": 50, "daily_quota": 100000},
///   "internal": {"rate": null, "daily_quota": null},
///   "overrides": {"principal:<key or client id>": {...}, "customer:<id>": {...}}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    #[serde(default = "free_default")]
    pub free: Limit,
    #[serde(default = "paid_default")]
    pub paid: Limit,
    #[serde(default = "internal_default")]
    pub internal: Limit,
    #[serde(default)]
    pub overrides: HashMap<String, Limit>,
}

fn free_default() -> Limit {
    Limit { rate: Some(5), window_seconds: 1, daily_quota: Some(1_000) }
}

fn paid_default() -> Limit {
    Limit { rate: Some(50), window_seconds: 1, daily_quota: Some(100_000) }
}

fn internal_default() -> Limit {
    Limit::UNLIMITED
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            free: free_default(),
            paid: paid_default(),
            internal: internal_default(),
            overrides: HashMap::new(),
        }
    }
}

impl LimitConfig {
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: LimitConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for (name, limit) in [("free", &config.free), ("paid", &config.paid), ("internal", &config.internal)]
        {
            limit.validate(name)?;
        }
        for (name, limit) in &config.overrides {
            if !name.starts_with("principal:") && !name.starts_with("customer:") {
                return Err(format!("override {name:?} must start with principal: or customer:"));
            }
            limit.validate(name)?;
        }
        Ok(config)
    }

    /// The principal's own override, else its customer's, else its tier's.
    pub fn limit_for(&self, principal: &Principal) -> Limit {
        let own = self.overrides.get(&format!("principal:{}", principal.id));
        let customer = self.overrides.get(&format!("customer:{}", principal.customer));
        own.or(customer).copied().unwrap_or(match principal.tier {
            Tier::Free => self.free,
            Tier::Paid => self.paid,
            Tier::Internal => self.internal,
        })
    }
}

/// One counter's state after a request, for headers and `/v1/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowUsage {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    pub window_seconds: u64,
    /// Seconds until the window resets.
    pub reset_seconds: u64,
}

/// A request's admission: both counters as they stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub rate: Option<WindowUsage>,
    pub daily: Option<WindowUsage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admitted(Usage),
    /// Over a limit: retry after this many seconds.
    Limited {
        usage: Usage,
        retry_after: u64,
    },
}

impl Usage {
    /// `RateLimit-Policy` and `RateLimit` header values, if any limit applies.
    pub fn headers(&self) -> Option<(String, String)> {
        let named = [("rate", self.rate), ("daily", self.daily)];
        let present: Vec<(&str, WindowUsage)> =
            named.iter().filter_map(|(n, w)| w.map(|w| (*n, w))).collect();
        if present.is_empty() {
            return None;
        }
        let policy: Vec<String> =
            present.iter().map(|(n, w)| format!("\"{n}\";q={};w={}", w.limit, w.window_seconds)).collect();
        let state: Vec<String> =
            present.iter().map(|(n, w)| format!("\"{n}\";r={};t={}", w.remaining, w.reset_seconds)).collect();
        Some((policy.join(", "), state.join(", ")))
    }
}

#[derive(Clone)]
pub struct Limiter {
    store: Arc<dyn ItemStore>,
    config: Arc<LimitConfig>,
    clock: Clock,
}

impl Limiter {
    pub fn new(store: Arc<dyn ItemStore>, config: LimitConfig, clock: Clock) -> Self {
        Limiter { store, config: Arc::new(config), clock }
    }

    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    /// Counts a request of `cost` units for `principal`, if it fits both the
    /// rate and the daily quota. The rate is counted first: a request refused
    /// by the quota has still used its rate slot (the stricter way round;
    /// quota is never consumed by a refused request).
    pub async fn admit(&self, principal: &Principal, cost: u64) -> Result<Decision, RepoError> {
        let limit = self.config.limit_for(principal);
        let now = self.clock.now();
        let mut usage = Usage { rate: None, daily: None };
        if let Some(max) = limit.rate {
            let window = limit.window_seconds as i64;
            let counter = rate_counter(principal, now, window);
            match self.count(&counter, cost, max).await? {
                Ok(used) => usage.rate = Some(counter.usage(max, used, now)),
                Err(used) => {
                    let rate = counter.usage(max, used, now);
                    usage.rate = Some(rate);
                    usage.daily = self.peek_daily(principal, &limit, now).await?;
                    return Ok(Decision::Limited { usage, retry_after: rate.reset_seconds.max(1) });
                }
            }
        }
        if let Some(max) = limit.daily_quota {
            let counter = daily_counter(principal, now);
            match self.count(&counter, cost, max).await? {
                Ok(used) => usage.daily = Some(counter.usage(max, used, now)),
                Err(used) => {
                    let daily = counter.usage(max, used, now);
                    usage.daily = Some(daily);
                    return Ok(Decision::Limited { usage, retry_after: daily.reset_seconds.max(1) });
                }
            }
        }
        Ok(Decision::Admitted(usage))
    }

    /// Current usage without counting anything (for `/v1/usage`).
    pub async fn peek(&self, principal: &Principal) -> Result<Usage, RepoError> {
        let limit = self.config.limit_for(principal);
        let now = self.clock.now();
        let rate = match limit.rate {
            Some(max) => {
                let counter = rate_counter(principal, now, limit.window_seconds as i64);
                Some(counter.usage(max, self.read(&counter).await?, now))
            }
            None => None,
        };
        Ok(Usage { rate, daily: self.peek_daily(principal, &limit, now).await? })
    }

    async fn peek_daily(
        &self,
        principal: &Principal,
        limit: &Limit,
        now: i64,
    ) -> Result<Option<WindowUsage>, RepoError> {
        let Some(max) = limit.daily_quota else { return Ok(None) };
        let counter = daily_counter(principal, now);
        Ok(Some(counter.usage(max, self.read(&counter).await?, now)))
    }

    /// `Ok(used)` if `cost` fit under `max`; `Err(used)` (unchanged) if not.
    async fn count(&self, counter: &Counter, cost: u64, max: u64) -> Result<Result<u64, u64>, RepoError> {
        let (by, max_i) = (to_i64(cost), to_i64(max));
        let added = self
            .store
            .add(Table::Usage, &counter.pk, &counter.sk, by, Some(max_i), Some(counter.expires_at))
            .await?;
        match added {
            Some(n) => Ok(Ok(n.max(0) as u64)),
            None => Ok(Err(self.read(counter).await?)),
        }
    }

    async fn read(&self, counter: &Counter) -> Result<u64, RepoError> {
        let item = self.store.get(Table::Usage, &counter.pk, &counter.sk).await?;
        Ok(item.and_then(|i| i.attrs.get("n").and_then(|v| v.as_i64())).unwrap_or(0).max(0) as u64)
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Where a counter lives and when its window ends.
struct Counter {
    pk: String,
    sk: String,
    window_seconds: u64,
    window_end: i64,
    expires_at: i64,
}

impl Counter {
    fn usage(&self, limit: u64, used: u64, now: i64) -> WindowUsage {
        WindowUsage {
            limit,
            used,
            remaining: limit.saturating_sub(used),
            window_seconds: self.window_seconds,
            reset_seconds: (self.window_end - now).max(0) as u64,
        }
    }
}

/// The principal's fixed rate window containing `now`.
fn rate_counter(principal: &Principal, now: i64, window: i64) -> Counter {
    let start = now - now.rem_euclid(window);
    Counter {
        pk: format!("RATE#{}", principal.id),
        sk: format!("{start}"),
        window_seconds: window as u64,
        window_end: start + window,
        expires_at: start + window + COUNTER_SLACK_SECS,
    }
}

/// The customer's quota for the principal's tier on the UTC day of `now`.
fn daily_counter(principal: &Principal, now: i64) -> Counter {
    let start = now - now.rem_euclid(DAY_SECS);
    Counter {
        pk: format!("QUOTA#{}#{}", principal.customer, principal.tier),
        sk: crate::clock::rfc3339(start)[..10].to_string(),
        window_seconds: DAY_SECS as u64,
        window_end: start + DAY_SECS,
        expires_at: start + DAY_SECS + COUNTER_SLACK_SECS,
    }
}
