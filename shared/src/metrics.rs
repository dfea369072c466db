//! Metrics as CloudWatch Embedded Metric Format (EMF) lines: one JSON line
//! per request, which CloudWatch Logs turns into metrics when a Lambda
//! function writes it to stdout. `pharmagate dev` writes the same lines to a
//! file (`--metrics-file`) so the console stays readable.
//!
//! Dimensions stay low-cardinality: the function, the route *template*, the
//! status class, an authentication-failure reason code, an anomaly kind.
//! Never a principal, a path value or a request id (those are plain members
//! of the line, searchable in Logs Insights but not dimensions).
//!
//! Backend failures deep inside a request (store, key vault, secret store)
//! are counted through a task-local set of counters that the request's
//! `RequestLog` installs, so the error mapping needs no handle to a sink.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Pharmagate";

/// Metric names, as they appear in CloudWatch.
pub mod names {
    pub const REQUESTS: &str = "Requests";
    pub const LATENCY: &str = "Latency";
    pub const THROTTLES: &str = "Throttles";
    pub const STORE_ERRORS: &str = "StoreErrors";
    pub const VAULT_ERRORS: &str = "VaultErrors";
    pub const SECRET_STORE_ERRORS: &str = "SecretStoreErrors";
    pub const AUDIT_WRITE_FAILURES: &str = "AuditWriteFailures";
    pub const AUTH_FAILURES: &str = "AuthFailures";
    pub const ANOMALIES: &str = "Anomalies";
}

/// Where metric lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsTarget {
    Off,
    /// Lambda: CloudWatch Logs reads EMF lines from the function's output.
    Stdout,
    /// Appended to a file (`pharmagate dev --metrics-file`).
    File(PathBuf),
}

impl MetricsTarget {
    /// `off`, `stdout`, or `file:<path>` (`PHARMAGATE_METRICS`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "off" => Ok(MetricsTarget::Off),
            "stdout" => Ok(MetricsTarget::Stdout),
            other => match other.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(MetricsTarget::File(PathBuf::from(path))),
                _ => Err("must be off, stdout or file:<path>".into()),
            },
        }
    }
}

/// A writer of metric lines, shared by a process's request handlers.
#[derive(Clone)]
pub struct MetricsSink(Arc<Sink>);

enum Sink {
    Off,
    Stdout,
    File(Mutex<File>),
}

impl MetricsSink {
    pub fn open(target: &MetricsTarget) -> std::io::Result<Self> {
        let sink = match target {
            MetricsTarget::Off => Sink::Off,
            MetricsTarget::Stdout => Sink::Stdout,
            MetricsTarget::File(path) => {
                Sink::File(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))
            }
        };
        Ok(MetricsSink(Arc::new(sink)))
    }

    pub fn off() -> Self {
        MetricsSink(Arc::new(Sink::Off))
    }

    /// Writes one line. A line is written whole with one call, so lines of
    /// concurrent requests never interleave.
    pub fn write(&self, line: &Value) {
        let mut text = line.to_string();
        text.push('\n');
        let result = match &*self.0 {
            Sink::Off => Ok(()),
            Sink::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
            Sink::File(file) => match file.lock() {
                Ok(mut f) => f.write_all(text.as_bytes()),
                Err(_) => Ok(()),
            },
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "metric line not written");
        }
    }
}

/// Backend failures counted during one request.
#[derive(Debug, Default)]
pub struct Counters {
    store_errors: AtomicU32,
    vault_errors: AtomicU32,
    secret_store_errors: AtomicU32,
}

/// What failed, for [`count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Store,
    Vault,
    SecretStore,
}

tokio::task_local! {
    static COUNTERS: Arc<Counters>;
}

/// Counts a backend failure against the request being served, if any (the
/// CLI's admin commands serve none: then it does nothing).
pub fn count(failure: Failure) {
    let _ = COUNTERS.try_with(|c| {
        let counter = match failure {
            Failure::Store => &c.store_errors,
            Failure::Vault => &c.vault_errors,
            Failure::SecretStore => &c.secret_store_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    });
}

/// Runs `work` with `counters` as the request's counters.
pub async fn counting<F: std::future::Future>(counters: Arc<Counters>, work: F) -> F::Output {
    COUNTERS.scope(counters, work).await
}

/// One request's measurements, as the metric line reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMetrics {
    pub function: &'static str,
    /// The route template (`GET /v1/products/{cas}`), or `unmatched`.
    pub route: String,
    pub status: u16,
    pub latency_ms: f64,
    /// The reason code of a refused authentication (401 only).
    pub auth_failure: Option<String>,
    pub audit_write_failed: bool,
    /// Anomaly kinds signalled by this request.
    pub anomalies: Vec<&'static str>,
    pub store_errors: u32,
    pub vault_errors: u32,
    pub secret_store_errors: u32,
}

impl RequestMetrics {
    pub fn new(function: &'static str, route: String, status: u16, latency_ms: f64) -> Self {
        RequestMetrics {
            function,
            route,
            status,
            latency_ms,
            auth_failure: None,
            audit_write_failed: false,
            anomalies: Vec::new(),
            store_errors: 0,
            vault_errors: 0,
            secret_store_errors: 0,
        }
    }

    pub fn with_counters(mut self, counters: &Counters) -> Self {
        self.store_errors = counters.store_errors.load(Ordering::Relaxed);
        self.vault_errors = counters.vault_errors.load(Ordering::Relaxed);
        self.secret_store_errors = counters.secret_store_errors.load(Ordering::Relaxed);
        self
    }

    /// `2xx`, `4xx`, `5xx`…
    pub fn status_class(&self) -> String {
        format!("{}xx", self.status / 100)
    }

    /// The EMF lines for this request: one for the request (with its
    /// authentication failure, if any), one per anomaly signalled.
    pub fn to_emf(&self, timestamp_ms: i64, request_id: Option<&str>) -> Vec<Value> {
        let count = |name| json!({"Name": name, "Unit": "Count"});
        let mut directives = vec![json!({
            "Namespace": NAMESPACE,
            "Dimensions": [["Function", "Route", "StatusClass"], ["Function"]],
            "Metrics": [
                count(names::REQUESTS),
                {"Name": names::LATENCY, "Unit": "Milliseconds"},
                count(names::THROTTLES),
                count(names::STORE_ERRORS),
                count(names::VAULT_ERRORS),
                count(names::SECRET_STORE_ERRORS),
                count(names::AUDIT_WRITE_FAILURES),
            ],
        })];
        let mut members = Map::new();
        members.insert("Function".into(), json!(self.function));
        members.insert("Route".into(), json!(self.route));
        members.insert("StatusClass".into(), json!(self.status_class()));
        members.insert(names::REQUESTS.into(), json!(1));
        members.insert(names::LATENCY.into(), json!(self.latency_ms));
        members.insert(names::THROTTLES.into(), json!(u32::from(self.status == 429)));
        members.insert(names::STORE_ERRORS.into(), json!(self.store_errors));
        members.insert(names::VAULT_ERRORS.into(), json!(self.vault_errors));
        members.insert(names::SECRET_STORE_ERRORS.into(), json!(self.secret_store_errors));
        members.insert(names::AUDIT_WRITE_FAILURES.into(), json!(u32::from(self.audit_write_failed)));
        if let Some(reason) = &self.auth_failure {
            directives.push(json!({
                "Namespace": NAMESPACE,
                "Dimensions": [["Function", "Reason"]],
                "Metrics": [count(names::AUTH_FAILURES)],
            }));
            members.insert("Reason".into(), json!(reason));
            members.insert(names::AUTH_FAILURES.into(), json!(1));
        }
        if let Some(id) = request_id {
            members.insert("request_id".into(), json!(id));
        }
        members.insert("status".into(), json!(self.status));
        let mut lines = vec![emf_line(timestamp_ms, directives, members)];
        for kind in &self.anomalies {
            lines.push(anomaly_line(timestamp_ms, self.function, kind, request_id));
        }
        lines
    }
}

fn emf_line(timestamp_ms: i64, directives: Vec<Value>, mut members: Map<String, Value>) -> Value {
    members.insert("_aws".into(), json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}));
    Value::Object(members)
}

/// One anomaly signal: `Anomalies` by function and kind.
pub fn anomaly_line(timestamp_ms: i64, function: &str, kind: &str, request_id: Option<&str>) -> Value {
    let directives = vec![json!({
        "Namespace": NAMESPACE,
        "Dimensions": [["Function", "Kind"]],
        "Metrics": [{"Name": names::ANOMALIES, "Unit": "Count"}],
    })];
    let mut members = Map::new();
    members.insert("Function".into(), json!(function));
    members.insert("Kind".into(), json!(kind));
    members.insert(names::ANOMALIES.into(), json!(1));
    if let Some(id) = request_id {
        members.insert("request_id".into(), json!(id));
    }
    emf_line(timestamp_ms, directives, members)
}

/// Checks that `line` is a valid EMF document: an `_aws` member with a
/// numeric `Timestamp` and a non-empty `CloudWatchMetrics` list, each
/// directive with a `Namespace`, `Dimensions` (lists of at most 30 names)
/// and `Metrics` (`Name`, `Unit`), and every dimension and metric present as
/// a top-level member (dimensions as strings, metrics as numbers). Used by
/// the tests, and by anyone checking a metrics file.
pub fn validate_emf(line: &Value) -> Result<(), String> {
    let aws = line.get("_aws").ok_or("no _aws member")?;
    if !aws.get("Timestamp").is_some_and(Value::is_i64) {
        return Err("_aws.Timestamp is not an integer".into());
    }
    let directives = aws.get("CloudWatchMetrics").and_then(Value::as_array).ok_or("no CloudWatchMetrics")?;
    if directives.is_empty() {
        return Err("CloudWatchMetrics is empty".into());
    }
    for d in directives {
        if d.get("Namespace").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(format!("directive without a Namespace: {d}"));
        }
        let sets = d.get("Dimensions").and_then(Value::as_array).ok_or("no Dimensions")?;
        for set in sets {
            let set = set.as_array().ok_or("a dimension set is not a list")?;
            if set.len() > 30 {
                return Err("more than 30 dimensions in a set".into());
            }
            for name in set {
                let name = name.as_str().ok_or("a dimension name is not a string")?;
                if !line.get(name).is_some_and(Value::is_string) {
                    return Err(format!("dimension {name} is not a top-level string member"));
                }
            }
        }
        let metrics = d.get("Metrics").and_then(Value::as_array).ok_or("no Metrics")?;
        if metrics.is_empty() {
            return Err("a directive without metrics".into());
        }
        for m in metrics {
            let name = m.get("Name").and_then(Value::as_str).ok_or("a metric without a Name")?;
            if !m.get("Unit").is_some_and(Value::is_string) {
                return Err(format!("metric {name} has no Unit"));
            }
            if !line.get(name).is_some_and(Value::is_number) {
                return Err(format!("metric {name} is not a top-level number"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_is_valid_emf_with_exact_members() {
        let mut m = RequestMetrics::new("catalog", "GET /v1/products/{cas}".into(), 404, 2.5);
        m.store_errors = 1;
        let lines = m.to_emf(1_700_000_000_123, Some("req-1"));
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        validate_emf(line).unwrap();
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_123_i64);
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Pharmagate");
        assert_eq!(line["Function"], "catalog");
        assert_eq!(line["Route"], "GET /v1/products/{cas}");
        assert_eq!(line["StatusClass"], "4xx");
        assert_eq!(line["Requests"], 1);
        assert_eq!(line["Latency"], 2.5);
        assert_eq!(line["Throttles"], 0);
        assert_eq!(line["StoreErrors"], 1);
        assert_eq!(line["AuditWriteFailures"], 0);
        assert_eq!(line["request_id"], "req-1");
        assert!(line.get("Reason").is_none());
    }

    #[test]
    fn auth_failures_throttles_and_anomalies_get_their_own_dimensions() {
        let mut m = RequestMetrics::new("authorizer", "GET /v1/products".into(), 401, 0.4);
        m.auth_failure = Some("unknown_key".into());
        m.anomalies = vec!["failure_rate"];
        let lines = m.to_emf(1, None);
        assert_eq!(lines.len(), 2);
        for line in &lines {
            validate_emf(line).unwrap();
        }
        assert_eq!(lines[0]["Reason"], "unknown_key");
        assert_eq!(lines[0]["AuthFailures"], 1);
        assert_eq!(lines[0]["_aws"]["CloudWatchMetrics"][1]["Dimensions"], json!([["Function", "Reason"]]));
        assert_eq!(lines[1]["Kind"], "failure_rate");
        assert_eq!(lines[1]["Anomalies"], 1);
        let throttled = RequestMetrics::new("catalog", "GET /v1/products".into(), 429, 0.1).to_emf(1, None);
        assert_eq!(throttled[0]["Throttles"], 1);
    }

    #[test]
    fn the_validator_rejects_what_cloudwatch_would() {
        let good = RequestMetrics::new("keys", "GET /v1/keys".into(), 200, 1.0).to_emf(1, None).remove(0);
        let broken = |edit: fn(&mut Value)| {
            let mut line = good.clone();
            edit(&mut line);
            validate_emf(&line).unwrap_err()
        };
        assert_eq!(
            broken(|l| {
                l.as_object_mut().unwrap().remove("_aws");
            }),
            "no _aws member"
        );
        assert_eq!(
            broken(|l| {
                l.as_object_mut().unwrap().remove("Route");
            }),
            "dimension Route is not a top-level string member"
        );
        assert_eq!(broken(|l| l["Latency"] = json!("fast")), "metric Latency is not a top-level number");
        assert_eq!(broken(|l| l["_aws"]["Timestamp"] = json!("now")), "_aws.Timestamp is not an integer");
    }

    #[tokio::test]
    async fn failures_count_only_inside_a_request() {
        count(Failure::Store); // outside any request: ignored
        let counters = Arc::new(Counters::default());
        counting(counters.clone(), async {
            count(Failure::Store);
            count(Failure::Vault);
            count(Failure::Store);
        })
        .await;
        let m = RequestMetrics::new("catalog", "x".into(), 503, 1.0).with_counters(&counters);
        assert_eq!((m.store_errors, m.vault_errors, m.secret_store_errors), (2, 1, 0));
    }

    #[test]
    fn targets_parse() {
        assert_eq!(MetricsTarget::parse("off"), Ok(MetricsTarget::Off));
        assert_eq!(MetricsTarget::parse("stdout"), Ok(MetricsTarget::Stdout));
        assert_eq!(MetricsTarget::parse("file:/tmp/m.jsonl"), Ok(MetricsTarget::File("/tmp/m.jsonl".into())));
        assert!(MetricsTarget::parse("file:").is_err());
        assert!(MetricsTarget::parse("stderr").is_err());
    }
}
