//! The AWS adapters over the real AWS wire protocol, against the local
//! server the test command starts (moto): the same port contract suites as
//! the embedded adapters, KMS context binding, and the measured KMS calls per
//! 1,000 confidential reads. Without `PHARMAGATE_TEST_AWS_ENDPOINT` (a plain
//! `cargo test`) each test prints a notice and passes; with it set and
//! nothing listening, each fails.

use std::sync::Arc;

use pharmagate_shared::aws::{self, AwsResources, CallCounters, DynamoStore, KmsVault, SecretsManagerStore};
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::product::{ProcessStep, Specification};
use pharmagate_shared::domain::{Cas, ManufacturingProcess, Product};
use pharmagate_shared::ports::{EncryptionContext, KeyVault, VaultError};

/// A fresh, bootstrapped AWS backend with its own resource names.
async fn backend(endpoint: &str, tag: &str) -> (AwsResources, Backend) {
    let resources = AwsResources::with_prefix(&aws::unique_prefix(tag));
    let sdk = aws::local_sdk_config(endpoint).await;
    let backend = Backend::aws_with(&sdk, &resources, Settings::default(), true).await.expect("bootstrap");
    (resources, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_store_keeps_the_item_store_contract() {
    let Some(endpoint) = aws::test_endpoint("dynamodb_store_keeps_the_item_store_contract") else { return };
    let (resources, _) = backend(&endpoint, "contract").await;
    let sdk = aws::local_sdk_config(&endpoint).await;
    let store = DynamoStore::new(&sdk, resources.tables, CallCounters::new());
    pharmagate_shared::contract::item_store_contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_keeps_the_secret_store_contract() {
    let Some(endpoint) = aws::test_endpoint("secrets_manager_keeps_the_secret_store_contract") else {
        return;
    };
    let sdk = aws::local_sdk_config(&endpoint).await;
    let store = SecretsManagerStore::new(&sdk, CallCounters::new());
    pharmagate_shared::secret_contract::secret_store_contract(Arc::new(store)).await;
}

#[tokio::test]
async fn kms_data_keys_unwrap_only_with_their_context() {
    let Some(endpoint) = aws::test_endpoint("kms_data_keys_unwrap_only_with_their_context") else { return };
    let (resources, _) = backend(&endpoint, "kms").await;
    let sdk = aws::local_sdk_config(&endpoint).await;
    let calls = CallCounters::new();
    let kms = KmsVault::new(&sdk, resources.kms_key_id.clone(), calls.clone());
    let ctx = |field: &str| EncryptionContext::new([("table", "catalog"), ("field", field)]);
    let key = kms.generate_data_key(&ctx("process")).await.expect("generate");
    assert_eq!(key.plaintext.len(), 32);
    let back = kms.decrypt_data_key(&key.wrapped, &ctx("process")).await.expect("decrypt");
    assert_eq!(*back, *key.plaintext);
    assert!(matches!(kms.decrypt_data_key(&key.wrapped, &ctx("notes")).await, Err(VaultError::Denied)));
    let mut tampered = key.wrapped.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(kms.decrypt_data_key(&tampered, &ctx("process")).await, Err(VaultError::Denied)));
    assert_eq!(calls.snapshot().1, 4, "every vault call above is one KMS call");
    // A key that does not exist is a deployment fault: unavailable, not denied.
    let missing = KmsVault::new(&sdk, "alias/pgt-no-such-key", CallCounters::new());
    assert!(matches!(missing.generate_data_key(&ctx("process")).await, Err(VaultError::Unavailable(_))));
}

fn product(first: u32) -> (Product, ManufacturingProcess) {
    let body = format!("{first}{:02}", 11);
    let sum: u32 = body.bytes().rev().enumerate().map(|(i, b)| (i as u32 + 1) * u32::from(b - b'0')).sum();
    let cas = Cas::parse(&format!("{first}-11-{}", sum % 10)).expect("valid CAS");
    let product = Product {
        cas,
        name: format!("Testium {first}"),
        synonyms: vec![],
        molecular_formula: "C2H6O".into(),
        molecular_weight: 46.07,
        smiles: None,
        inchikey: None,
        iupac_name: None,
    };
    let process = ManufacturingProcess {
        route: format!("confidential route {first}"),
        site: "Plant 1".into(),
        steps: vec![ProcessStep { step: 1, operation: "mix".into(), conditions: None }],
        specifications: vec![Specification { test: "Assay".into(), limit: "99 %".into() }],
        notice: None,
    };
    (product, process)
}

/// The figure the README reports: in one warm process, 1,000 reads of
/// confidential records spread over 20 products cost one KMS call.
#[tokio::test]
async fn a_warm_process_reads_1000_confidential_records_with_one_kms_call() {
    let Some(endpoint) = aws::test_endpoint("kms_calls_per_1000_reads") else { return };
    let (resources, writer) = backend(&endpoint, "kmscalls").await;
    let items: Vec<_> = (0..20).map(|i| product(9_100_000 + i)).collect();
    for (p, m) in &items {
        writer.catalog().put(p.clone(), Some(m)).await.expect("put");
    }
    let (_, kms_for_writes, _) = writer.aws_calls.as_ref().expect("aws").snapshot();
    assert_eq!(kms_for_writes, 1, "20 sealed records, one data key");

    // A new process: cold cache.
    let sdk = aws::local_sdk_config(&endpoint).await;
    let reader = Backend::aws_with(&sdk, &resources, Settings::default(), false).await.expect("backend");
    let catalog = reader.catalog();
    for i in 0..1000 {
        let (p, m) = &items[i % items.len()];
        let read = catalog.manufacturing(p.cas).await.expect("read").expect("record");
        assert_eq!(&read, m);
    }
    let (dynamodb, kms, secrets) = reader.aws_calls.as_ref().expect("aws").snapshot();
    println!(
        "figures: 1000 confidential reads: {kms} KMS calls, {dynamodb} DynamoDB calls, {secrets} Secrets Manager calls"
    );
    assert_eq!(kms, 1, "KMS calls per 1,000 confidential reads in one warm process");
    assert_eq!(dynamodb, 1000);
}
