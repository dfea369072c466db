//! Anomaly signals: a subject (a principal, or before authentication a
//! source address) whose request or failure count in a one-minute window
//! jumps far above its own recent baseline, or which asks for many CAS
//! numbers that do not exist (someone scanning the catalog).
//!
//! Each function instance watches the requests it answers, in memory, so a
//! signal costs no storage round trip; in AWS a subject spread over many
//! instances is seen by each in part (the thresholds are per instance).
//! Each kind is signalled at most once per subject and window.

use std::collections::{HashMap, HashSet};

/// Thresholds, from `PHARMAGATE_ANOMALY_*` (see `config`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyConfig {
    pub window_secs: i64,
    /// Requests in a window that count as a burst, if also `factor` times
    /// the baseline.
    pub rate_threshold: u32,
    /// Failures (401, 403, 404, 429) in a window, likewise.
    pub failure_threshold: u32,
    /// Distinct CAS numbers answered 404 in a window: a scan.
    pub scan_threshold: u32,
    /// How far above the baseline a count must be.
    pub factor: f64,
    /// Distinct missing CAS numbers in a window past which an API key is
    /// revoked (audited); `None`: never.
    pub suspend_threshold: Option<u32>,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            window_secs: 60,
            rate_threshold: 600,
            failure_threshold: 60,
            scan_threshold: 20,
            factor: 10.0,
            suspend_threshold: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    RequestRate,
    FailureRate,
    CasScan,
    /// Past the hard threshold: the principal is to be suspended.
    Suspend,
}

impl Kind {
    /// The metric dimension value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RequestRate => "request_rate",
            Kind::FailureRate => "failure_rate",
            Kind::CasScan => "cas_scan",
            Kind::Suspend => "suspend",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub kind: Kind,
    pub subject: String,
    /// The count in the current window that crossed the threshold.
    pub observed: u32,
    /// The subject's baseline for that count (per window).
    pub baseline: f64,
}

/// One answered request, as the detector sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub subject: &'a str,
    pub at_secs: i64,
    pub failed: bool,
    /// The CAS number of a 404 for a product.
    pub missing_cas: Option<&'a str>,
}

/// Weight of the newest window in the baseline.
const ALPHA: f64 = 0.3;
/// Subjects kept before idle ones are dropped.
const MAX_SUBJECTS: usize = 10_000;

#[derive(Debug)]
struct Window {
    start: i64,
    requests: u32,
    failures: u32,
    missing: HashSet<String>,
    base_requests: f64,
    base_failures: f64,
    fired: u8,
}

impl Window {
    fn new(start: i64) -> Self {
        Window {
            start,
            requests: 0,
            failures: 0,
            missing: HashSet::new(),
            base_requests: 0.0,
            base_failures: 0.0,
            fired: 0,
        }
    }

    /// Moves to the window holding `at`, folding finished windows into the
    /// baseline (empty ones pull it down).
    fn roll(&mut self, at: i64, length: i64) {
        if at < self.start + length {
            return;
        }
        let elapsed = (at - self.start) / length;
        self.base_requests = self.base_requests * (1.0 - ALPHA) + f64::from(self.requests) * ALPHA;
        self.base_failures = self.base_failures * (1.0 - ALPHA) + f64::from(self.failures) * ALPHA;
        let idle = (1.0 - ALPHA).powi(i32::try_from(elapsed - 1).unwrap_or(i32::MAX));
        self.base_requests *= idle;
        self.base_failures *= idle;
        self.start += elapsed * length;
        self.requests = 0;
        self.failures = 0;
        self.missing.clear();
        self.fired = 0;
    }
}

#[derive(Debug)]
pub struct Detector {
    config: AnomalyConfig,
    subjects: HashMap<String, Window>,
}

impl Detector {
    pub fn new(config: AnomalyConfig) -> Self {
        Detector { config, subjects: HashMap::new() }
    }

    /// Counts one request and returns the signals it raises.
    pub fn observe(&mut self, obs: Observation<'_>) -> Vec<Signal> {
        let length = self.config.window_secs.max(1);
        if self.subjects.len() >= MAX_SUBJECTS {
            self.subjects.retain(|_, w| w.start + 10 * length > obs.at_secs);
        }
        let window = self.subjects.entry(obs.subject.to_string()).or_insert_with(|| Window::new(obs.at_secs));
        window.roll(obs.at_secs, length);
        window.requests += 1;
        window.failures += u32::from(obs.failed);
        if let Some(cas) = obs.missing_cas {
            window.missing.insert(cas.to_string());
        }
        let c = &self.config;
        let missing = u32::try_from(window.missing.len()).unwrap_or(u32::MAX);
        let checks = [
            (Kind::RequestRate, window.requests, window.base_requests, c.rate_threshold, c.factor),
            (Kind::FailureRate, window.failures, window.base_failures, c.failure_threshold, c.factor),
            (Kind::CasScan, missing, 0.0, c.scan_threshold, 1.0),
            (Kind::Suspend, missing, 0.0, c.suspend_threshold.unwrap_or(u32::MAX), 1.0),
        ];
        let mut signals = Vec::new();
        for (kind, observed, baseline, threshold, factor) in checks {
            let far_above = observed >= threshold && f64::from(observed) > factor * baseline;
            if far_above && window.fired & kind.bit() == 0 {
                window.fired |= kind.bit();
                signals.push(Signal { kind, subject: obs.subject.to_string(), observed, baseline });
            }
        }
        signals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AnomalyConfig {
        AnomalyConfig {
            window_secs: 60,
            rate_threshold: 50,
            failure_threshold: 10,
            scan_threshold: 5,
            factor: 10.0,
            suspend_threshold: Some(8),
        }
    }

    fn request(d: &mut Detector, subject: &str, at: i64, failed: bool, cas: Option<&str>) -> Vec<Kind> {
        let obs = Observation { subject, at_secs: at, failed, missing_cas: cas };
        d.observe(obs).into_iter().map(|s| s.kind).collect()
    }

    #[test]
    fn a_sequential_cas_scan_is_signalled_once_then_suspended() {
        let mut d = Detector::new(config());
        let mut kinds = Vec::new();
        for n in 0..10 {
            let cas = format!("{}-00-{}", 100 + n, n % 10);
            kinds.push(request(&mut d, "key1", 1_000 + n, true, Some(&cas)));
        }
        let fired: Vec<(usize, Vec<Kind>)> =
            kinds.into_iter().enumerate().filter(|(_, k)| !k.is_empty()).collect();
        assert_eq!(
            fired,
            vec![(4, vec![Kind::CasScan]), (7, vec![Kind::Suspend]), (9, vec![Kind::FailureRate])]
        );
        // The same CAS number again and again is no scan.
        let mut d = Detector::new(config());
        for n in 0..20 {
            assert!(!request(&mut d, "key2", 1_000 + n, true, Some("50-00-0")).contains(&Kind::CasScan));
        }
    }

    #[test]
    fn a_burst_far_above_a_steady_baseline_is_signalled_and_the_steady_rate_is_not() {
        let mut d = Detector::new(config());
        // 40 requests a minute for ten minutes: under the threshold, a baseline.
        for minute in 0..10 {
            for i in 0..40 {
                assert_eq!(request(&mut d, "steady", minute * 60 + i, false, None), vec![]);
            }
        }
        // The same subject at 60 a minute: above the threshold, but not ten
        // times its baseline (about 39).
        for i in 0..60 {
            assert_eq!(request(&mut d, "steady", 600 + i, false, None), vec![]);
        }
        // A quiet subject that suddenly sends 50 in a minute is signalled once.
        let fired: usize = (0..120).map(|i| request(&mut d, "quiet", 700 + i / 4, false, None).len()).sum();
        assert_eq!(fired, 1);
    }

    #[test]
    fn the_baseline_decays_over_idle_windows() {
        let mut w = Window::new(0);
        w.requests = 100;
        w.roll(60, 60);
        assert!((w.base_requests - 30.0).abs() < 1e-9);
        w.roll(60 + 3 * 60, 60);
        assert!((w.base_requests - 30.0 * 0.7 * 0.7 * 0.7).abs() < 1e-9, "{}", w.base_requests);
        assert_eq!((w.start, w.requests), (240, 0));
    }
}
