//! The KMS key vault: data keys from `GenerateDataKey`, unwrapped by
//! `Decrypt`, both bound to the encryption context (KMS refuses a wrapped key
//! under any other context). Wrap it in `crate::keycache::CachingVault` so a
//! warm function does not call KMS per request.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroizing;

use super::error::{Failure, classify};
use super::{CallCounters, count};
use crate::ports::{DataKey, EncryptionContext, KeyVault, VaultError};

#[derive(Clone)]
pub struct KmsVault {
    client: Client,
    /// Key id, key ARN, alias name (`alias/…`) or alias ARN.
    key_id: String,
    calls: Arc<CallCounters>,
}

impl KmsVault {
    pub fn new(sdk: &SdkConfig, key_id: impl Into<String>, calls: Arc<CallCounters>) -> Self {
        KmsVault { client: Client::new(sdk), key_id: key_id.into(), calls }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn to_vault_error(failure: Failure) -> VaultError {
    match failure {
        Failure::Unavailable(m) => VaultError::Unavailable(m),
        // Wrong context, wrong key or altered bytes: never decrypt.
        Failure::Service { code, .. }
            if code == "InvalidCiphertextException" || code == "IncorrectKeyException" =>
        {
            VaultError::Denied
        }
        // Missing, disabled or forbidden key: a deployment fault, fail closed.
        Failure::Service { code, message } => VaultError::Unavailable(format!("{code}: {message}")),
    }
}

fn key_bytes(plaintext: Option<Blob>) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let blob = plaintext.ok_or_else(|| VaultError::Unavailable("KMS returned no plaintext".into()))?;
    let bytes = Zeroizing::new(blob.into_inner());
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(VaultError::Unavailable(format!("KMS returned a {}-byte data key", bytes.len())));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

#[async_trait]
impl KeyVault for KmsVault {
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, VaultError> {
        count(&self.calls.kms);
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context.pairs().clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| to_vault_error(classify("GenerateDataKey", e)))?;
        let wrapped = out
            .ciphertext_blob
            .ok_or_else(|| VaultError::Unavailable("KMS returned no wrapped key".into()))?
            .into_inner();
        Ok(DataKey { plaintext: key_bytes(out.plaintext)?, wrapped })
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        count(&self.calls.kms);
        let out = self
            .client
            .decrypt()
            // Naming the key makes KMS refuse blobs wrapped by any other key.
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(context.pairs().clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| to_vault_error(classify("Decrypt", e)))?;
        key_bytes(out.plaintext)
    }
}
