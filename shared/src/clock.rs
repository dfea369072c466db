//! Wall-clock time in Unix seconds, the unit every stored timestamp uses.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// RFC 3339 text for a Unix-seconds timestamp, as the API shows times.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A source of the current time in Unix seconds: the system clock in the
/// product, a hand-moved one in tests (windows rolling over, the day
/// boundary) without sleeping.
#[derive(Clone)]
pub struct Clock(std::sync::Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Clock(std::sync::Arc::new(now_secs))
    }

    /// A clock that reads `time`, which the caller moves.
    pub fn manual(time: std::sync::Arc<std::sync::atomic::AtomicI64>) -> Self {
        Clock(std::sync::Arc::new(move || time.load(std::sync::atomic::Ordering::SeqCst)))
    }

    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(now = {})", self.now())
    }
}
