//! Envelope encryption of confidential fields.
//!
//! A value is bound to two things:
//! - the **key context** (e.g. table and field): the data key is wrapped by
//!   the `KeyVault` under it, so KMS refuses to unwrap it anywhere else;
//! - the **item** (e.g. partition and sort key): part of the AES-256-GCM
//!   associated data only, together with the key context.
//!
//! Keeping the item out of the key context is what lets one cached data key
//! (`crate::keycache`) serve many items, so a warm process does not call KMS
//! per value read; a ciphertext copied to another item or field still fails
//! to decrypt, because its associated data no longer matches.
//!
//! Text form (versioned), each part base64url without padding:
//! `pge2.<wrapped key>.<nonce>.<ciphertext>`. `pge1` values (a data key per
//! value, wrapped under key context and item together) are still read.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use zeroize::Zeroizing;

use crate::ports::{EncryptionContext, KeyVault, VaultError};

const FORMAT: &str = "pge2";
const LEGACY_FORMAT: &str = "pge1";

/// Where a sealed value belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// What the data key is wrapped under (the KMS encryption context).
    pub key_context: EncryptionContext,
    /// The item the value belongs to: associated data only.
    pub item: EncryptionContext,
}

impl Binding {
    /// Associated data of a `pge2` value: both parts, length-prefixed.
    fn aad(&self) -> Vec<u8> {
        let mut out = FORMAT.as_bytes().to_vec();
        for part in [self.key_context.canonical_bytes(), self.item.canonical_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(&part);
        }
        out
    }

    /// The single context a `pge1` value was sealed under.
    fn legacy_context(&self) -> EncryptionContext {
        self.key_context
            .pairs()
            .iter()
            .chain(self.item.pairs())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("sealed value is malformed")]
    Malformed,
    /// Wrong context or tampered data.
    #[error("sealed value does not belong here or was altered")]
    Denied,
    #[error("key vault unavailable: {0}")]
    Unavailable(String),
}

impl From<VaultError> for CryptoError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Denied => CryptoError::Denied,
            VaultError::Unavailable(m) => CryptoError::Unavailable(m),
        }
    }
}

pub async fn seal(vault: &dyn KeyVault, binding: &Binding, plaintext: &[u8]) -> Result<String, CryptoError> {
    let key = vault.generate_data_key(&binding.key_context).await?;
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| CryptoError::Unavailable(e.to_string()))?;
    let cipher = Aes256Gcm::new_from_slice(key.plaintext.as_ref()).expect("32-byte key");
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: &binding.aad() })
        .map_err(|_| CryptoError::Unavailable("encryption failed".into()))?;
    Ok(format!("{FORMAT}.{}.{}.{}", B64.encode(&key.wrapped), B64.encode(nonce), B64.encode(ciphertext)))
}

pub async fn open(
    vault: &dyn KeyVault,
    binding: &Binding,
    sealed: &str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut parts = sealed.split('.');
    let (Some(format), Some(wrapped), Some(nonce), Some(ciphertext), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CryptoError::Malformed);
    };
    let decode = |s: &str| B64.decode(s).map_err(|_| CryptoError::Malformed);
    let (wrapped, nonce, ciphertext) = (decode(wrapped)?, decode(nonce)?, decode(ciphertext)?);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
    let (key, aad) = match format {
        FORMAT => (vault.decrypt_data_key(&wrapped, &binding.key_context).await?, binding.aad()),
        LEGACY_FORMAT => {
            let context = binding.legacy_context();
            (vault.decrypt_data_key(&wrapped, &context).await?, context.canonical_bytes())
        }
        _ => return Err(CryptoError::Malformed),
    };
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte key");
    let plaintext = cipher
        .decrypt(&Nonce::from(nonce), Payload { msg: &ciphertext, aad: &aad })
        .map_err(|_| CryptoError::Denied)?;
    Ok(Zeroizing::new(plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::LocalVault;

    fn binding(pk: &str, field: &str) -> Binding {
        Binding {
            key_context: EncryptionContext::new([("table", "catalog"), ("field", field)]),
            item: EncryptionContext::new([("pk", pk), ("sk", "MANUFACTURING")]),
        }
    }

    #[tokio::test]
    async fn sealed_values_open_only_in_their_own_place() {
        let dir = tempfile::tempdir().unwrap();
        let vault = LocalVault::open_or_create(&dir.path().join("k")).unwrap();
        let here = binding("PRODUCT#50-78-2", "process");
        let sealed = seal(&vault, &here, b"secret route").await.unwrap();
        assert!(sealed.starts_with("pge2."));
        assert!(!sealed.contains("secret"));
        assert_eq!(open(&vault, &here, &sealed).await.unwrap().as_slice(), b"secret route");
        let other_item = binding("PRODUCT#64-17-5", "process");
        assert!(matches!(open(&vault, &other_item, &sealed).await, Err(CryptoError::Denied)));
        let other_field = binding("PRODUCT#50-78-2", "notes");
        assert!(matches!(open(&vault, &other_field, &sealed).await, Err(CryptoError::Denied)));
    }

    /// A `pge1` value as the previous version wrote it: a data key per value
    /// under the whole context, which was also the associated data.
    async fn seal_v1(vault: &dyn KeyVault, context: &EncryptionContext, plaintext: &[u8]) -> String {
        let key = vault.generate_data_key(context).await.unwrap();
        let nonce = [7u8; 12];
        let cipher = Aes256Gcm::new_from_slice(key.plaintext.as_ref()).unwrap();
        let aad = context.canonical_bytes();
        let ct = cipher.encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: &aad }).unwrap();
        format!("pge1.{}.{}.{}", B64.encode(&key.wrapped), B64.encode(nonce), B64.encode(ct))
    }

    #[tokio::test]
    async fn legacy_pge1_values_still_open_in_their_own_place_only() {
        let dir = tempfile::tempdir().unwrap();
        let vault = LocalVault::open_or_create(&dir.path().join("k")).unwrap();
        let here = binding("PRODUCT#50-78-2", "process");
        let v1 = seal_v1(&vault, &here.legacy_context(), b"old record").await;
        assert_eq!(open(&vault, &here, &v1).await.unwrap().as_slice(), b"old record");
        let elsewhere = binding("PRODUCT#64-17-5", "process");
        assert!(matches!(open(&vault, &elsewhere, &v1).await, Err(CryptoError::Denied)));
    }

    #[tokio::test]
    async fn tampered_or_malformed_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vault = LocalVault::open_or_create(&dir.path().join("k")).unwrap();
        let here = binding("PRODUCT#50-78-2", "process");
        let sealed = seal(&vault, &here, b"data").await.unwrap();
        let mut parts: Vec<String> = sealed.split('.').map(String::from).collect();
        let mut ct = B64.decode(&parts[3]).unwrap();
        ct[0] ^= 1;
        parts[3] = B64.encode(ct);
        assert!(matches!(open(&vault, &here, &parts.join(".")).await, Err(CryptoError::Denied)));
        for bad in ["", "pge2", "pge3.a.b.c", "pge2.!!.b.c", "pge2.a.b.c.d"] {
            assert!(matches!(open(&vault, &here, bad).await, Err(CryptoError::Malformed)), "{bad}");
        }
    }
}
