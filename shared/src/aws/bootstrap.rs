//! Creates the AWS resources for a local run (moto or another AWS-compatible
//! server): the four tables with TTL, the KMS key with its alias, and the
//! integrity secret. Idempotent. In a real account SAM creates them
//! (`infra/template.yaml`); nothing calls this there unless asked.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};

use super::error::{Failure, classify};
use super::{AwsResources, DynamoStore, KmsVault, SecretsManagerStore};
use crate::ports::Table;

#[derive(Debug, thiserror::Error)]
#[error("bootstrap of {what} failed: {message}")]
pub struct BootstrapError {
    pub what: String,
    pub message: String,
}

fn fail(what: impl Into<String>, failure: Failure) -> BootstrapError {
    let message = match failure {
        Failure::Unavailable(m) => m,
        Failure::Service { code, message } => format!("{code}: {message}"),
    };
    BootstrapError { what: what.into(), message }
}

/// Whether `AWS_ENDPOINT_URL` names a server on this machine, where
/// `pharmagate dev --backend aws` may create what it needs.
pub fn is_local_endpoint() -> bool {
    std::env::var("AWS_ENDPOINT_URL").is_ok_and(|url| is_loopback_url(&url))
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Creates whatever of `resources` does not exist yet.
pub async fn bootstrap(
    resources: &AwsResources,
    store: &DynamoStore,
    vault: &KmsVault,
    secrets: &SecretsManagerStore,
) -> Result<(), BootstrapError> {
    for table in Table::ALL {
        ensure_table(store, resources.tables.name(table)).await?;
    }
    ensure_key(vault, &resources.kms_key_id).await?;
    crate::integrity::ensure_key(secrets, &resources.integrity_secret_id)
        .await
        .map_err(|e| BootstrapError { what: resources.integrity_secret_id.clone(), message: e.to_string() })
}

async fn ensure_table(store: &DynamoStore, name: &str) -> Result<(), BootstrapError> {
    let client = store.client();
    let attribute = |n: &str| {
        AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build()
    };
    let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build();
    let built = (|| {
        Ok::<_, aws_sdk_dynamodb::error::BuildError>((
            vec![attribute("PK")?, attribute("SK")?],
            vec![key("PK", KeyType::Hash)?, key("SK", KeyType::Range)?],
        ))
    })();
    let (attributes, schema) =
        built.map_err(|e| BootstrapError { what: name.into(), message: e.to_string() })?;
    let created = client
        .create_table()
        .table_name(name)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(schema))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) => match classify("CreateTable", e) {
            Failure::Service { code, .. } if code == "ResourceInUseException" => return Ok(()),
            other => return Err(fail(name, other)),
        },
    }
    wait_active(store, name).await?;
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name("TTL")
        .enabled(true)
        .build()
        .map_err(|e| BootstrapError { what: name.into(), message: e.to_string() })?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(|e| fail(name, classify("UpdateTimeToLive", e)))?;
    Ok(())
}

async fn wait_active(store: &DynamoStore, name: &str) -> Result<(), BootstrapError> {
    for _ in 0..120 {
        let out = store
            .client()
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| fail(name, classify("DescribeTable", e)))?;
        if out.table.and_then(|t| t.table_status) == Some(TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(BootstrapError { what: name.into(), message: "table did not become active in 60 s".into() })
}

/// Creates a symmetric key and points the alias at it, unless the alias
/// (or key id) already resolves.
async fn ensure_key(vault: &KmsVault, key_id: &str) -> Result<(), BootstrapError> {
    let client = vault.client();
    match client.describe_key().key_id(key_id).send().await {
        Ok(_) => return Ok(()),
        Err(e) => match classify("DescribeKey", e) {
            Failure::Service { code, .. } if code == "NotFoundException" => {}
            other => return Err(fail(key_id, other)),
        },
    }
    let Some(alias) = key_id.strip_prefix("alias/") else {
        return Err(BootstrapError {
            what: key_id.into(),
            message: "no such key; name an alias (alias/…) to have one created".into(),
        });
    };
    let key = client
        .create_key()
        .description(format!("pharmagate data keys ({alias})"))
        .send()
        .await
        .map_err(|e| fail(key_id, classify("CreateKey", e)))?;
    let id = key.key_metadata.map(|m| m.key_id).unwrap_or_default();
    client
        .create_alias()
        .alias_name(key_id)
        .target_key_id(id)
        .send()
        .await
        .map_err(|e| fail(key_id, classify("CreateAlias", e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn only_loopback_endpoints_are_local() {
        let cases = [
            ("http://127.0.0.1:5000", true),
            ("http://localhost:4566/", true),
            ("http://[::1]:5000", true),
            ("http://127.0.0.9", true),
            ("https://dynamodb.eu-west-1.amazonaws.com", false),
            ("http://10.0.0.5:5000", false),
            ("http://127.0.0.1.example.com", false),
            ("http://localhost.example.com:80", false),
        ];
        for (url, local) in cases {
            assert_eq!(is_loopback_url(url), local, "{url}");
        }
    }
}
