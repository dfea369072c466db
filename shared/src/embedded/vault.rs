//! The embedded key vault: an AES-256-GCM master key in a 0600 file.
//!
//! It plays the part KMS plays in AWS: it hands out fresh data keys and
//! unwraps them again only for the same encryption context. The master key
//! never leaves this module.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ports::{DataKey, EncryptionContext, KeyVault, VaultError};

const WRAP_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("cannot read or create the master key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("master key file {path} must hold exactly 32 bytes; it holds {len}")]
    Length { path: String, len: usize },
    #[error("master key file {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: String, mode: u32 },
}

pub struct LocalVault {
    cipher: Aes256Gcm,
    /// First bytes of SHA-256(master key): names the key inside wrapped blobs.
    key_id: [u8; KEY_ID_LEN],
}

impl LocalVault {
    /// Loads the master key from `path`, creating it (mode 0600) if absent.
    pub fn open_or_create(path: &Path) -> Result<Self, MasterKeyError> {
        let shown = path.display().to_string();
        let io = |source| MasterKeyError::Io { path: shown.clone(), source };
        if !path.exists() {
            let mut key = Zeroizing::new([0u8; 32]);
            getrandom::fill(key.as_mut()).map_err(|e| io(std::io::Error::other(e.to_string())))?;
            let mut file =
                OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
            file.write_all(key.as_ref()).and_then(|_| file.sync_all()).map_err(io)?;
        }
        let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::Permissions { path: shown, mode });
        }
        let bytes = Zeroizing::new(fs::read(path).map_err(io)?);
        if bytes.len() != 32 {
            return Err(MasterKeyError::Length { path: shown, len: bytes.len() });
        }
        Ok(Self::from_key(&bytes))
    }

    fn from_key(key: &[u8]) -> Self {
        let digest = Sha256::digest(key);
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&digest[..KEY_ID_LEN]);
        let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte key");
        LocalVault { cipher, key_id }
    }
}

#[async_trait]
impl KeyVault for LocalVault {
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, VaultError> {
        let mut plaintext = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(plaintext.as_mut()).map_err(|e| VaultError::Unavailable(e.to_string()))?;
        getrandom::fill(&mut nonce).map_err(|e| VaultError::Unavailable(e.to_string()))?;
        let aad = context.canonical_bytes();
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext.as_ref(), aad: &aad })
            .map_err(|_| VaultError::Unavailable("data key encryption failed".into()))?;
        let mut wrapped = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + sealed.len());
        wrapped.push(WRAP_VERSION);
        wrapped.extend_from_slice(&self.key_id);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok(DataKey { plaintext, wrapped })
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let header = 1 + KEY_ID_LEN + NONCE_LEN;
        if wrapped.len() != header + 32 + 16
            || wrapped[0] != WRAP_VERSION
            || wrapped[1..=KEY_ID_LEN] != self.key_id
        {
            return Err(VaultError::Denied);
        }
        let nonce: [u8; NONCE_LEN] = wrapped[1 + KEY_ID_LEN..header].try_into().expect("length checked");
        let aad = context.canonical_bytes();
        let opened = Zeroizing::new(
            self.cipher
                .decrypt(&Nonce::from(nonce), Payload { msg: &wrapped[header..], aad: &aad })
                .map_err(|_| VaultError::Denied)?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&opened);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(item: &str) -> EncryptionContext {
        EncryptionContext::new([("table", "catalog"), ("pk", item), ("field", "process")])
    }

    #[tokio::test]
    async fn data_keys_unwrap_only_with_their_context() {
        let dir = tempfile::tempdir().unwrap();
        let vault = LocalVault::open_or_create(&dir.path().join("master.key")).unwrap();
        let key = vault.generate_data_key(&ctx("PRODUCT#50-78-2")).await.unwrap();
        let back = vault.decrypt_data_key(&key.wrapped, &ctx("PRODUCT#50-78-2")).await.unwrap();
        assert_eq!(*back, *key.plaintext);
        let moved = vault.decrypt_data_key(&key.wrapped, &ctx("PRODUCT#64-17-5")).await;
        assert!(matches!(moved, Err(VaultError::Denied)));
        let mut tampered = key.wrapped.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            vault.decrypt_data_key(&tampered, &ctx("PRODUCT#50-78-2")).await,
            Err(VaultError::Denied)
        ));
    }

    #[tokio::test]
    async fn master_key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = LocalVault::open_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let wrapped = first.generate_data_key(&ctx("a")).await.unwrap();
        let second = LocalVault::open_or_create(&path).unwrap();
        assert!(second.decrypt_data_key(&wrapped.wrapped, &ctx("a")).await.is_ok());
    }

    #[test]
    fn a_world_readable_or_short_master_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        fs::write(&path, [7u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            LocalVault::open_or_create(&path),
            Err(MasterKeyError::Permissions { mode: 0o644, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, [7u8; 31]).unwrap();
        assert!(matches!(LocalVault::open_or_create(&path), Err(MasterKeyError::Length { len: 31, .. })));
    }
}
