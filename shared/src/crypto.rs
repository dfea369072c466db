//! Envelope encryption of confidential fields.
//!
//! Each sealed value gets its own data key from the `KeyVault`, wrapped under
//! an encryption context that names the table, the item and the field. The
//! same context is the AES-GCM associated data of the value itself, so a
//! ciphertext copied to another item or field fails to decrypt at both layers.
//!
//! Text form (versioned): `pge1.<wrapped key>.<nonce>.<ciphertext>`, each part
//! base64url without padding.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use zeroize::Zeroizing;

use crate::ports::{EncryptionContext, KeyVault, VaultError};

const FORMAT: &str = "pge1";

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

pub async fn seal(
    vault: &dyn KeyVault,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<String, CryptoError> {
    let key = vault.generate_data_key(context).await?;
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| CryptoError::Unavailable(e.to_string()))?;
    let cipher = Aes256Gcm::new_from_slice(key.plaintext.as_ref()).expect("32-byte key");
    let aad = context.canonical_bytes();
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: &aad })
        .map_err(|_| CryptoError::Unavailable("encryption failed".into()))?;
    Ok(format!("{FORMAT}.{}.{}.{}", B64.encode(&key.wrapped), B64.encode(nonce), B64.encode(ciphertext)))
}

pub async fn open(
    vault: &dyn KeyVault,
    context: &EncryptionContext,
    sealed: &str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut parts = sealed.split('.');
    let (Some(FORMAT), Some(wrapped), Some(nonce), Some(ciphertext), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CryptoError::Malformed);
    };
    let decode = |s: &str| B64.decode(s).map_err(|_| CryptoError::Malformed);
    let (wrapped, nonce, ciphertext) = (decode(wrapped)?, decode(nonce)?, decode(ciphertext)?);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
    let key = vault.decrypt_data_key(&wrapped, context).await?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte key");
    let aad = context.canonical_bytes();
    let plaintext = cipher
        .decrypt(&Nonce::from(nonce), Payload { msg: &ciphertext, aad: &aad })
        .map_err(|_| CryptoError::Denied)?;
    Ok(Zeroizing::new(plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::LocalVault;

    fn ctx(pk: &str, field: &str) -> EncryptionContext {
        EncryptionContext::new([("table", "catalog"), ("pk", pk), ("sk", "MANUFACTURING"), ("field", field)])
    }

    #[tokio::test]
    async fn sealed_values_open_only_in_their_own_place() {
        let dir = tempfile::tempdir().unwrap();
        let vault = LocalVault::open_or_create(&dir.path().join("k")).unwrap();
        let here = ctx("PRODUCT#50-78-2", "process");
        let sealed = seal(&vault, &here, b"secret route").await.unwrap();
        assert!(sealed.starts_with("pge1."));
        assert!(!sealed.contains("secret"));
        assert_eq!(open(&vault, &here, &sealed).await.unwrap().as_slice(), b"secret route");
        let other_item = ctx("PRODUCT#64-17-5", "process");
        assert!(matches!(open(&vault, &other_item, &sealed).await, Err(CryptoError::Denied)));
        let other_field = ctx("PRODUCT#50-78-2", "notes");
        assert!(matches!(open(&vault, &other_field, &sealed).await, Err(CryptoError::Denied)));
    }

    #[tokio::test]
    async fn tampered_or_malformed_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vault = LocalVault::open_or_create(&dir.path().join("k")).unwrap();
        let here = ctx("PRODUCT#50-78-2", "process");
        let sealed = seal(&vault, &here, b"data").await.unwrap();
        let mut parts: Vec<String> = sealed.split('.').map(String::from).collect();
        let mut ct = B64.decode(&parts[3]).unwrap();
        ct[0] ^= 1;
        parts[3] = B64.encode(ct);
        assert!(matches!(open(&vault, &here, &parts.join(".")).await, Err(CryptoError::Denied)));
        for bad in ["", "pge1", "pge2.a.b.c", "pge1.!!.b.c", "pge1.a.b.c.d"] {
            assert!(matches!(open(&vault, &here, bad).await, Err(CryptoError::Malformed)), "{bad}");
        }
    }
}
