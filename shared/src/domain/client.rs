//! OAuth clients: ids, secrets and scopes.
//!
//! - A client id is chosen by the administrator or generated (`pgc_<16 of
//!   0-9a-z>`). Any visible ASCII and inner spaces are allowed (RFC 6749's
//!   VSCHAR), which is why client authentication must form-decode the
//!   credentials (RFC 6749 §2.3.1): ids may hold `:`, `+`, `/`, `%`, spaces.
//! - A client secret is `pgcs_` plus 43 base62 characters (about 256 bits)
//!   from the OS; only its SHA-256 is stored, compared in constant time.
//! - Scopes are permission names; a client may be granted only the scopes in
//!   [`GRANTABLE_SCOPES`], so a token can never manage API keys or clients.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::apikey::{BASE36, BASE62, KeyHash, random_string};
use super::principal::Permission;

pub const CLIENT_ID_PREFIX: &str = "pgc_";
pub const CLIENT_SECRET_PREFIX: &str = "pgcs_";
const GENERATED_ID_LEN: usize = 16;
const SECRET_LEN: usize = 43;
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// Longest secret text looked at; anything longer is refused unread.
pub const MAX_SECRET_LEN: usize = 256;

/// What an OAuth client may be granted.
pub const GRANTABLE_SCOPES: &[Permission] = &[Permission::CatalogRead, Permission::ManufacturingRead];

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    /// 3-128 characters of visible ASCII or space, not starting or ending
    /// with a space.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok_len = (3..=MAX_CLIENT_ID_LEN).contains(&text.len());
        let ok_chars = text.bytes().all(|b| (0x20..=0x7e).contains(&b));
        let ok_ends = !text.starts_with(' ') && !text.ends_with(' ');
        // Principals share one id space (rate counters, usage, audit):
        // a client may not take the shape of an API key id.
        let key_shaped = super::apikey::KeyId::parse(text).is_ok();
        if key_shaped {
            return Err("client id must not have the shape of an API key id (12 of 0-9a-z)".into());
        }
        if ok_len && ok_chars && ok_ends {
            Ok(ClientId(text.to_string()))
        } else {
            Err(format!(
                "client id must be 3-{MAX_CLIENT_ID_LEN} characters of visible ASCII or inner spaces"
            ))
        }
    }

    pub fn generate() -> Self {
        ClientId(format!("{CLIENT_ID_PREFIX}{}", random_string(BASE36, GENERATED_ID_LEN)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ClientId::parse(&value)
    }
}

impl From<ClientId> for String {
    fn from(value: ClientId) -> Self {
        value.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client secret, as issued or as presented. Wiped on drop, never printed.
pub struct ClientSecret(Zeroizing<String>);

impl ClientSecret {
    pub fn generate() -> Self {
        let body = Zeroizing::new(random_string(BASE62, SECRET_LEN));
        ClientSecret(Zeroizing::new(format!("{CLIENT_SECRET_PREFIX}{}", body.as_str())))
    }

    /// Wraps presented text. Shape is not checked: a wrong secret and a
    /// malformed one must cost the same and fail the same way.
    pub fn presented(text: &str) -> Self {
        ClientSecret(Zeroizing::new(text.to_string()))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.0.as_bytes())
    }

    /// The secret text, to show once to the administrator. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// A space-separated scope list (RFC 6749 §3.3) as permissions, in the order
/// given, without repeats. Unknown names are an error naming the first one.
pub fn parse_scope_list(text: &str) -> Result<Vec<Permission>, String> {
    let mut out = Vec::new();
    for name in text.split(' ') {
        if name.is_empty() {
            continue;
        }
        let permission = Permission::parse(name).ok_or_else(|| {
            // Echo only what RFC 6749 allows in a scope token (and in an
            // error_description): printable ASCII without `"` and `\`.
            let safe =
                name.len() <= 40 && name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
            if safe { format!("unknown scope {name}") } else { "unknown scope".to_string() }
        })?;
        if !out.contains(&permission) {
            out.push(permission);
        }
    }
    Ok(out)
}

/// Scopes as the space-separated text tokens carry.
pub fn scope_text(scopes: &[Permission]) -> String {
    scopes.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" ")
}

/// Scopes an administrator may grant a client: non-empty, each grantable.
pub fn validate_grant(scopes: &[Permission]) -> Result<(), String> {
    if scopes.is_empty() {
        return Err("grant at least one scope".into());
    }
    match scopes.iter().find(|s| !GRANTABLE_SCOPES.contains(s)) {
        Some(bad) => Err(format!(
            "scope {} cannot be granted to a client; grantable: {}",
            bad.as_str(),
            scope_text(GRANTABLE_SCOPES)
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_allow_visible_ascii_and_inner_spaces() {
        for good in ["abc", "acme:erp/sync 1+2%", "pgc_0123456789abcdef", &"x".repeat(128)] {
            assert_eq!(ClientId::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "ab", " abc", "abc ", "a\tbc", "abc\u{e9}", "a\nb", &"x".repeat(129), "abcdefghijkl"]
        {
            assert!(ClientId::parse(bad).is_err(), "{bad:?}");
        }
        let generated = ClientId::generate();
        assert_eq!(generated.as_str().len(), 4 + 16);
        assert!(generated.as_str().starts_with("pgc_"));
    }

    #[test]
    fn secrets_are_long_random_and_redacted() {
        let (a, b) = (ClientSecret::generate(), ClientSecret::generate());
        assert_eq!(a.expose().len(), 5 + 43);
        assert!(a.expose().starts_with("pgcs_"));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(format!("{a:?}"), "ClientSecret([redacted])");
        assert!(ClientSecret::presented(a.expose()).hash().matches(&a.hash()));
        assert!(!b.hash().matches(&a.hash()));
    }

    #[test]
    fn scope_lists_parse_strictly() {
        assert_eq!(
            parse_scope_list("catalog:read  manufacturing:read catalog:read"),
            Ok(vec![Permission::CatalogRead, Permission::ManufacturingRead])
        );
        assert_eq!(parse_scope_list(""), Ok(vec![]));
        assert_eq!(parse_scope_list("catalog:read root"), Err("unknown scope root".into()));
        assert_eq!(parse_scope_list("a\"\\\n"), Err("unknown scope".into()));
        assert_eq!(
            scope_text(&[Permission::CatalogRead, Permission::ManufacturingRead]),
            "catalog:read manufacturing:read"
        );
        assert!(validate_grant(&[Permission::CatalogRead]).is_ok());
        assert!(validate_grant(&[]).is_err());
        assert!(validate_grant(&[Permission::KeysOwn]).unwrap_err().contains("keys:own"));
    }
}
