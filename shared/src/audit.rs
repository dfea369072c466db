//! One handle per function instance for what happens after a request is
//! answered: its audit record (appended to the instance's own chain), its
//! metric lines, and the anomaly signals it raises. `http::RequestLog` is the
//! only caller; it never fails a request: a failed audit write is an error
//! log line and an `AuditWriteFailures` metric, and the response goes out.

use std::sync::{Arc, Mutex};

use crate::anomaly::{Detector, Kind, Observation, Signal};
use crate::config::Backend;
use crate::domain::KeyId;
use crate::metrics::{self, MetricsSink, RequestMetrics};
use crate::repo::KeyRepo;
use crate::repo::audit::{Appended, AuditRecord, AuditRepo, Decision, StreamWriter};

#[derive(Clone)]
pub struct AuditTrail(Arc<Inner>);

struct Inner {
    function: &'static str,
    writer: StreamWriter,
    metrics: MetricsSink,
    detector: Mutex<Detector>,
    keys: KeyRepo,
    suspend: bool,
}

impl AuditTrail {
    /// The trail of one function instance: a new audit stream named after
    /// `function`, the metrics target of the settings.
    pub fn new(backend: &Backend, function: &'static str) -> Self {
        let settings = &backend.settings;
        let repo = AuditRepo::new(backend.store.clone(), settings.audit_retention_days * 86_400);
        let metrics = MetricsSink::open(&settings.metrics).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot open the metrics file; metrics are off");
            MetricsSink::off()
        });
        let inner = Inner {
            function,
            writer: repo.writer(function),
            metrics,
            detector: Mutex::new(Detector::new(settings.anomaly.clone())),
            keys: backend.keys(),
            suspend: settings.anomaly.suspend_threshold.is_some(),
        };
        AuditTrail(Arc::new(inner))
    }

    pub fn function(&self) -> &'static str {
        self.0.function
    }

    /// The audit stream this instance appends to.
    pub fn stream(&self) -> &str {
        self.0.writer.stream()
    }

    /// Appends `record`, signals anomalies, writes the metric lines.
    /// Returns where the record went, or `None` if it could not be written.
    pub async fn record(&self, record: AuditRecord, mut metrics: RequestMetrics) -> Option<Appended> {
        let appended = match self.0.writer.append(record.clone()).await {
            Ok(appended) => Some(appended),
            Err(e) => {
                tracing::error!(error = %e, "audit write failed");
                metrics.audit_write_failed = true;
                None
            }
        };
        for signal in self.observe(&record) {
            tracing::warn!(
                kind = signal.kind.as_str(),
                subject = %signal.subject,
                observed = signal.observed,
                baseline = signal.baseline,
                "anomaly"
            );
            metrics.anomalies.push(signal.kind.as_str());
            if signal.kind == Kind::Suspend && self.0.suspend {
                metrics.audit_write_failed |= !self.suspend(&record, &signal).await;
            }
        }
        self.measure(metrics, &record.request_id);
        appended
    }

    /// Writes the metric lines of a request another hop audits.
    pub fn measure(&self, metrics: RequestMetrics, request_id: &str) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        for line in metrics.to_emf(now_ms, Some(request_id)) {
            self.0.metrics.write(&line);
        }
    }

    fn observe(&self, record: &AuditRecord) -> Vec<Signal> {
        let subject = match (&record.principal, &record.source_ip) {
            (Some(p), _) => p.clone(),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "anonymous".into(),
        };
        let missing_cas = record.cas.as_deref().filter(|_| record.status == 404);
        let failed = record.decision == Decision::Denied || record.status == 404;
        let obs =
            Observation { subject: &subject, at_secs: record.at_ms.div_euclid(1000), failed, missing_cas };
        match self.0.detector.lock() {
            Ok(mut detector) => detector.observe(obs),
            Err(_) => Vec::new(),
        }
    }

    /// Revokes the API key behind `record` and audits that. False if the
    /// suspension could not be recorded.
    async fn suspend(&self, record: &AuditRecord, signal: &Signal) -> bool {
        let Some(id) = record.principal.as_deref().and_then(|p| KeyId::parse(p).ok()) else {
            return true; // not an API key (an OAuth client, an address): signal only
        };
        // A suspension that did not happen is audited as a failure, never as
        // a suspension: the trail must not say a key was stopped when it was
        // not.
        let (decision, outcome) = match self.0.keys.revoke(&id).await {
            Ok(Some(_)) => {
                tracing::warn!(key_id = %id, "key suspended: revoked after anomalous use");
                (Decision::Suspended, "")
            }
            Ok(None) => return true,
            Err(e) => {
                tracing::error!(key_id = %id, error = %e, "key suspension failed");
                metrics::count(metrics::Failure::Store);
                (Decision::Failed, "suspend_failed:")
            }
        };
        let suspension = AuditRecord {
            at_ms: chrono::Utc::now().timestamp_millis(),
            request_id: format!("suspend:{}", record.request_id),
            decision,
            reason: format!("{outcome}{}:{}", signal.kind.as_str(), signal.observed),
            status: 0,
            latency_us: 0,
            ..record.clone()
        };
        match self.0.writer.append(suspension).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "audit write failed");
                false
            }
        }
    }
}
