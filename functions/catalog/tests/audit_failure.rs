//! A failed audit write is visible and loses nothing: the caller still gets
//! the response, an error line names the request, and the request's metric
//! line counts `AuditWriteFailures`. The store here refuses every write to
//! the audit table, as an unavailable table would.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::StatusCode;
use lambda_http::request::LambdaRequest;
use pharmagate_catalog::CatalogService;
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{Cas, ProductDraft};
use pharmagate_shared::metrics::{MetricsTarget, validate_emf};
use pharmagate_shared::ports::{Condition, Item, ItemStore, Page, Query, StoreError, Table, WriteOp};
use serde_json::{Value, json};

/// The embedded store, with the audit table unavailable.
struct NoAuditTable(Arc<dyn ItemStore>);

fn touches_audit(ops: &[WriteOp]) -> bool {
    ops.iter().any(|op| {
        matches!(op, WriteOp::Put { table: Table::Audit, .. } | WriteOp::Delete { table: Table::Audit, .. })
    })
}

#[async_trait]
impl ItemStore for NoAuditTable {
    async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.0.get(table, pk, sk).await
    }
    async fn put(&self, table: Table, item: Item, condition: Condition) -> Result<(), StoreError> {
        self.transact(vec![WriteOp::Put { table, item, condition }]).await
    }
    async fn delete(&self, table: Table, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError> {
        self.0.delete(table, pk, sk, condition).await
    }
    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        self.0.query(query).await
    }
    async fn add(
        &self,
        table: Table,
        pk: &str,
        sk: &str,
        by: i64,
        max: Option<i64>,
        expires_at: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        self.0.add(table, pk, sk, by, max, expires_at).await
    }
    async fn scan(&self, table: Table, after: Option<String>, limit: usize) -> Result<Page, StoreError> {
        self.0.scan(table, after, limit).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        if touches_audit(&ops) {
            return Err(StoreError::Unavailable("audit table throttled".into()));
        }
        self.0.transact(ops).await
    }
}

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_audit_write_is_logged_and_counted_and_the_response_still_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_file = dir.path().join("metrics.jsonl");
    let settings = Settings { metrics: MetricsTarget::File(metrics_file.clone()), ..Settings::default() };
    let mut backend = Backend::embedded(&dir.path().join("data"), settings).unwrap();
    let draft: ProductDraft = serde_json::from_value(
        json!({"name": "BLZ-945", "molecular_formula": "C20H22N4O3S", "molecular_weight": 398.488}),
    )
    .unwrap();
    let (product, _) = draft.validate(Cas::parse("953769-46-5").unwrap()).unwrap();
    backend.catalog().put(product, None).await.unwrap();
    backend.store = Arc::new(NoAuditTable(backend.store.clone()));
    let service = CatalogService::new(&backend);

    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/events/rest-get-product.json");
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let request_id = event["requestContext"]["requestId"].as_str().unwrap().to_string();
    let payload: LambdaRequest = serde_json::from_value(event).unwrap();
    let response = service.handle(payload.into()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["cas"], "953769-46-5");

    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let failure = logged
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["fields"]["message"] == "audit write failed")
        .unwrap_or_else(|| panic!("no error line: {logged}"));
    assert_eq!(failure["level"], "ERROR");
    assert_eq!(failure["span"]["request_id"], request_id.as_str());
    assert!(failure["fields"]["error"].as_str().unwrap().contains("audit table throttled"), "{failure}");

    let metrics = std::fs::read_to_string(&metrics_file).unwrap();
    let lines: Vec<Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{metrics}");
    validate_emf(&lines[0]).unwrap();
    assert_eq!(lines[0]["AuditWriteFailures"], 1);
    assert_eq!(lines[0]["StoreErrors"], 0, "the audit write's own failure is counted as such, once");
    assert_eq!(lines[0]["Function"], "catalog");
    assert_eq!(lines[0]["StatusClass"], "2xx");
    assert_eq!(lines[0]["request_id"], request_id.as_str());
}
