//! AWS adapters for the three ports: DynamoDB (`ItemStore`), KMS
//! (`KeyVault`) and Secrets Manager (`SecretStore`).
//!
//! One `SdkConfig` per process (region, credentials and endpoint from the
//! standard AWS environment, so `AWS_ENDPOINT_URL` points every client at a
//! local server such as moto), with bounded timeouts and retries: a dead or
//! throttling backend fails a request within a few seconds and the API
//! answers 503 instead of hanging. Every adapter counts the calls it makes,
//! for the figures in the README.

mod bootstrap;
mod dynamo;
mod error;
mod kms;
mod resources;
mod secrets;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
pub use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

pub use bootstrap::{BootstrapError, bootstrap, is_local_endpoint};
pub use dynamo::{DynamoStore, RESERVED_ATTRIBUTES, TableNames};
pub use kms::KmsVault;
pub use resources::AwsResources;
pub use secrets::SecretsManagerStore;

use crate::config::ConfigError;

/// A TCP connection must open within this time.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// One API call, all retries included: the longest a request waits on AWS
/// (`PHARMAGATE_AWS_TIMEOUT_SECS` overrides it; each attempt gets 40 %).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
pub const TIMEOUT_VAR: &str = "PHARMAGATE_AWS_TIMEOUT_SECS";
pub const MAX_ATTEMPTS: u32 = 3;

/// The process's one SDK configuration. Fails with a message naming
/// `AWS_REGION` when no region is configured (every client needs one).
pub async fn sdk_config() -> Result<SdkConfig, ConfigError> {
    let config = loader(operation_timeout()?).load().await;
    if config.region().is_none() {
        return Err(ConfigError::Missing(vec!["AWS_REGION"]));
    }
    Ok(config)
}

/// An SDK configuration for a local AWS-compatible server (moto) at
/// `endpoint`, with the same timeouts and retries, region `us-east-1` and
/// dummy credentials: what tests use, whatever the environment says.
pub async fn local_sdk_config(endpoint: &str) -> SdkConfig {
    local_sdk_config_with(endpoint, OPERATION_TIMEOUT).await
}

/// Like [`local_sdk_config`] with another call timeout: moto answers one
/// request at a time, so a test firing many at once needs room (a timed-out
/// attempt is retried, and a retried `ADD` counts twice).
pub async fn local_sdk_config_with(endpoint: &str, operation: Duration) -> SdkConfig {
    use aws_sdk_dynamodb::config::{Credentials, Region};
    loader(operation)
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "local"))
        .load()
        .await
}

/// `PHARMAGATE_AWS_TIMEOUT_SECS` (1-120), default 5 s.
fn operation_timeout() -> Result<Duration, ConfigError> {
    let Ok(text) = std::env::var(TIMEOUT_VAR) else { return Ok(OPERATION_TIMEOUT) };
    text.parse::<u64>()
        .ok()
        .filter(|n| (1..=120).contains(n))
        .map(Duration::from_secs)
        .ok_or(ConfigError::Invalid { name: TIMEOUT_VAR, message: "must be 1 to 120 (seconds)".into() })
}

fn loader(operation: Duration) -> aws_config::ConfigLoader {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(operation * 2 / 5)
        .operation_timeout(operation)
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(1));
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts).retry_config(retries)
}

/// The variable the test command sets to the local AWS server's URL.
pub const TEST_ENDPOINT_VAR: &str = "PHARMAGATE_TEST_AWS_ENDPOINT";

/// The local AWS server tests should use: `None` (with a notice) when
/// `PHARMAGATE_TEST_AWS_ENDPOINT` is unset, as under a plain `cargo test`;
/// a panic when it is set but nothing answers there, so a test run that was
/// meant to cover AWS never passes by skipping.
pub fn test_endpoint(test: &str) -> Option<String> {
    let Ok(url) = std::env::var(TEST_ENDPOINT_VAR) else {
        eprintln!(
            "note: {test} skipped: {TEST_ENDPOINT_VAR} is not set (./scripts/test.sh runs moto and sets it)"
        );
        return None;
    };
    let authority = url.split_once("://").map_or(url.as_str(), |(_, r)| r).trim_end_matches('/');
    let reachable = std::net::TcpStream::connect(authority).is_ok();
    assert!(reachable, "{TEST_ENDPOINT_VAR}={url} is set but nothing listens there: is moto running?");
    Some(url)
}

/// A name no other test run uses, for tables, key aliases and secrets.
pub fn unique_prefix(tag: &str) -> String {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).expect("OS randomness");
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("pgt-{tag}-{suffix}")
}

/// Calls each AWS adapter has made, since the process started.
#[derive(Debug, Default)]
pub struct CallCounters {
    pub dynamodb: AtomicU64,
    pub kms: AtomicU64,
    pub secrets_manager: AtomicU64,
}

impl CallCounters {
    pub fn new() -> Arc<Self> {
        Arc::new(CallCounters::default())
    }

    /// (DynamoDB, KMS, Secrets Manager) calls so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.dynamodb.load(Ordering::Relaxed),
            self.kms.load(Ordering::Relaxed),
            self.secrets_manager.load(Ordering::Relaxed),
        )
    }
}

pub(crate) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
