//! API keys: `pg_<env>_<id>_<secret><checksum>`.
//!
//! - `pg_` is a fixed prefix so secret scanners can find leaked keys;
//! - `<env>` names the deployment (`dev`, `test`, `live`, …) so a key from one
//!   environment is refused by another;
//! - `<id>` is the public key id (12 characters of `0-9a-z`), used for lookup,
//!   listing and revocation;
//! - `<secret>` is 32 base62 characters (about 190 bits) from the OS CSPRNG;
//! - `<checksum>` is the CRC-32 of everything before it, as 6 base62
//!   characters, so typos and truncated keys are rejected without a lookup.
//!
//! Only the SHA-256 of the whole key is stored. The secret has far more entropy
//! than a password, so a fast hash is enough: nobody can enumerate 2^190.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const KEY_PREFIX: &str = "pg";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const MAX_KEY_LEN: usize = 64;
pub(crate) const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub(crate) const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Why a text is not a well-formed API key. Never shown to callers (they get
/// one uniform 401); used in tests and logs as a reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("key has the wrong length")]
    Length,
    #[error("key does not have the pg_<env>_<id>_<secret> shape")]
    Shape,
    #[error("key checksum does not match")]
    Checksum,
}

impl KeyFormatError {
    pub fn reason(self) -> &'static str {
        match self {
            KeyFormatError::Length => "malformed_length",
            KeyFormatError::Shape => "malformed_shape",
            KeyFormatError::Checksum => "malformed_checksum",
        }
    }
}

/// The public id of a key. Safe to log and show.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() == ID_LEN && text.bytes().all(|b| BASE36.contains(&b)) {
            Ok(KeyId(text.to_string()))
        } else {
            Err(format!("key id must be {ID_LEN} characters of 0-9 and a-z"))
        }
    }

    pub fn generate() -> Self {
        KeyId(random_string(BASE36, ID_LEN))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        KeyId::parse(&value)
    }
}

impl From<KeyId> for String {
    fn from(value: KeyId) -> Self {
        value.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a whole key; what the store keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn of(bytes: &[u8]) -> Self {
        KeyHash(Sha256::digest(bytes).into())
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(KeyHash(out))
    }

    /// Constant-time comparison, so timing does not reveal how much matched.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

/// A whole API key, secret included. Its memory is wiped on drop and its
/// `Debug` output never shows the secret.
#[derive(Clone)]
pub struct ApiKey {
    text: Zeroizing<String>,
    id: KeyId,
    env: String,
}

impl ApiKey {
    /// Makes a new random key for environment `env` (2–8 of `a-z`).
    pub fn generate(env: &str) -> Self {
        assert!(valid_env(env), "environment name must be 2-8 characters of a-z");
        let id = KeyId::generate();
        let secret = Zeroizing::new(random_string(BASE62, SECRET_LEN));
        let mut text = Zeroizing::new(format!("{KEY_PREFIX}_{env}_{id}_{}", secret.as_str()));
        let checksum = checksum(text.as_bytes());
        text.push_str(&checksum);
        ApiKey { text, id, env: env.to_string() }
    }

    /// Checks the shape and checksum; does not look anything up.
    pub fn parse(text: &str) -> Result<Self, KeyFormatError> {
        if text.len() > MAX_KEY_LEN || text.len() < 3 + 3 + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN {
            return Err(KeyFormatError::Length);
        }
        let mut parts = text.split('_');
        let (Some(prefix), Some(env), Some(id), Some(tail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyFormatError::Shape);
        };
        let tail_ok = tail.len() == SECRET_LEN + CHECKSUM_LEN && tail.bytes().all(|b| BASE62.contains(&b));
        if prefix != KEY_PREFIX || !valid_env(env) || !tail_ok {
            return Err(KeyFormatError::Shape);
        }
        let id = KeyId::parse(id).map_err(|_| KeyFormatError::Shape)?;
        let (body, sum) = text.split_at(text.len() - CHECKSUM_LEN);
        if checksum(body.as_bytes()).as_bytes().ct_eq(sum.as_bytes()).unwrap_u8() != 1 {
            return Err(KeyFormatError::Checksum);
        }
        Ok(ApiKey { text: Zeroizing::new(text.to_string()), id, env: env.to_string() })
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn env(&self) -> &str {
        &self.env
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.text.as_bytes()).into())
    }

    /// The key text, for showing it once to its owner. Never log it.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey(pg_{}_{}_[redacted])", self.env, self.id)
    }
}

fn valid_env(env: &str) -> bool {
    (2..=8).contains(&env.len()) && env.bytes().all(|b| b.is_ascii_lowercase())
}

fn checksum(body: &[u8]) -> String {
    let mut n = u64::from(crc32fast::hash(body));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

/// Uniform random characters from `alphabet`, by rejection sampling OS
/// randomness (no modulo bias).
pub(crate) fn random_string(alphabet: &[u8], len: usize) -> String {
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("the operating system's random source failed");
        for &b in buf.iter().filter(|&&b| (b as usize) < limit) {
            if out.len() == len {
                break;
            }
            out.push(alphabet[b as usize % alphabet.len()] as char);
        }
    }
    buf.fill(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = ApiKey::generate("dev");
        let text = key.expose();
        assert_eq!(text.len(), 3 + 4 + 13 + 32 + 6);
        assert!(text.starts_with(&format!("pg_dev_{}_", key.id())));
        assert_eq!(ApiKey::parse(text).unwrap().hash(), key.hash());
    }

    #[test]
    fn keys_are_unique_and_secret_part_is_random() {
        let a = ApiKey::generate("dev");
        let b = ApiKey::generate("dev");
        assert_ne!(a.id(), b.id());
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn every_single_character_change_is_caught_by_the_checksum_or_shape() {
        let key = ApiKey::generate("test");
        let text = key.expose().to_string();
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(ApiKey::parse(&changed).is_err(), "change at {i} was accepted");
        }
    }

    #[test]
    fn malformed_keys_name_their_fault() {
        let key = ApiKey::generate("dev");
        let text = key.expose();
        assert_eq!(ApiKey::parse("").unwrap_err(), KeyFormatError::Length);
        assert_eq!(ApiKey::parse(&text[..text.len() - 1]).unwrap_err(), KeyFormatError::Shape);
        assert_eq!(ApiKey::parse(&format!("{text}x")).unwrap_err(), KeyFormatError::Shape);
        assert_eq!(ApiKey::parse(&"x".repeat(500)).unwrap_err(), KeyFormatError::Length);
        let other_prefix = text.replacen("pg_", "pk_", 1);
        assert_eq!(ApiKey::parse(&other_prefix).unwrap_err(), KeyFormatError::Shape);
        let mut flipped = text.to_string();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(ApiKey::parse(&flipped).unwrap_err(), KeyFormatError::Checksum);
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let key = ApiKey::generate("dev");
        let shown = format!("{key:?}");
        let secret = &key.expose()[20..];
        assert!(!shown.contains(secret));
        assert_eq!(shown, format!("ApiKey(pg_dev_{}_[redacted])", key.id()));
    }

    #[test]
    fn hash_round_trips_through_hex_and_compares() {
        let key = ApiKey::generate("dev");
        let hash = key.hash();
        let back = KeyHash::from_hex(&hash.to_hex()).unwrap();
        assert!(back.matches(&hash));
        assert!(!ApiKey::generate("dev").hash().matches(&hash));
        assert!(KeyHash::from_hex("zz").is_none());
        assert!(KeyHash::from_hex(&"é".repeat(32)).is_none());
    }

    #[test]
    fn key_ids_are_restricted() {
        assert!(KeyId::parse("abc123def456").is_ok());
        for bad in ["", "ABC123DEF456", "abc123def45", "abc123def4567", "abc123def45/"] {
            assert!(KeyId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
