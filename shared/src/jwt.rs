//! JWT access tokens (RFC 9068), signed with Ed25519 and verified as strictly
//! as RFC 8725 asks.
//!
//! The verifier decides everything from its own configuration, never from
//! the token: the only algorithm is `EdDSA`; `kid` only selects among keys we
//! already hold; a header may carry `alg`, `typ` and `kid` and nothing else
//! (so `jku`, `x5u`, `jwk`, `x5c`, `crit` are refused without being read);
//! `typ` must be `at+jwt`; the signature is checked (strictly: no small-order
//! keys, canonical encodings) before any claim is looked at; then every
//! claim must have its exact JSON type and `iss`, `aud`, `exp`, `nbf`, `iat`
//! are checked with a small fixed leeway.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const ALG: &str = "EdDSA";
pub const TYP: &str = "at+jwt";
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 30;
/// Longest token looked at; ours are about 500 bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Our key ids are RFC 7638 thumbprints: 43 characters.
pub const MAX_KID_LEN: usize = 64;

/// Why a token was refused. Callers get one uniform 401; the reason goes to
/// logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is not three base64url segments of sane length")]
    Malformed,
    #[error("token header is not acceptable")]
    Header,
    #[error("token names a key we do not hold")]
    UnknownKey,
    #[error("token signature does not verify")]
    Signature,
    #[error("token claims are missing or of the wrong type")]
    Claims,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued by someone else")]
    Issuer,
    #[error("token is meant for another audience")]
    Audience,
}

impl JwtError {
    /// A short reason code for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            JwtError::Malformed => "jwt_malformed",
            JwtError::Header => "jwt_header",
            JwtError::UnknownKey => "jwt_unknown_key",
            JwtError::Signature => "jwt_signature",
            JwtError::Claims => "jwt_claims",
            JwtError::Expired => "jwt_expired",
            JwtError::NotYetValid => "jwt_not_yet_valid",
            JwtError::Issuer => "jwt_issuer",
            JwtError::Audience => "jwt_audience",
        }
    }
}

/// The claims of our access tokens. Every field has one JSON type; any
/// other type, a missing required claim or an unknown claim fails parsing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    /// The client's token generation when the token was issued: deleting
    /// and re-creating a client id, or rotating its secret with no grace
    /// period, starts a new generation and retires every older token.
    pub client_gen: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
}

/// What a verifier insists on, from its own configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
    /// Longest lifetime (`exp - iat`) we ever issue; longer tokens are forged
    /// or from a misconfigured issuer.
    pub max_lifetime_secs: i64,
}

// ------------------------------------------------------------------ keys --

#[derive(Debug, thiserror::Error)]
#[error("signing key material is malformed: {0}")]
pub struct KeyMaterialError(&'static str);

/// An Ed25519 private key with its key id. Never printed.
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
    /// Unix time from which the key may sign (see `crate::rotation`): a
    /// rotated-in key is published first and used only once every verifier
    /// has had time to learn it. `None`: at once.
    sign_from: Option<i64>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey {{ kid: {:?}, key: [redacted] }}", self.kid)
    }
}

/// The secret value that holds a signing key: a private JWK (RFC 8037).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateJwk {
    kty: String,
    crv: String,
    alg: String,
    kid: String,
    x: String,
    d: String,
    /// Our own member (RFC 7517 §4 allows more): when the key may start
    /// signing. Absent in keys made before rotation existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sign_from: Option<i64>,
}

impl SigningKey {
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("the operating system's random source failed");
        Self::from_seed(&seed)
    }

    fn from_seed(seed: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let kid = thumbprint(&key.verifying_key());
        SigningKey { kid, key, sign_from: None }
    }

    /// The same key, allowed to sign from `at` (Unix seconds) on.
    pub fn with_sign_from(mut self, at: i64) -> Self {
        self.sign_from = Some(at);
        self
    }

    pub fn sign_from(&self) -> Option<i64> {
        self.sign_from
    }

    /// Whether the key may sign at `now`.
    pub fn may_sign_at(&self, now: i64) -> bool {
        self.sign_from.is_none_or(|t| t <= now)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { kid: self.kid.clone(), key: self.key.verifying_key() }
    }

    /// The secret-store value: a private JWK. Wiped on drop.
    pub fn to_secret(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.key.to_bytes());
        let jwk = PrivateJwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: ALG.into(),
            kid: self.kid.clone(),
            x: B64.encode(self.key.verifying_key().as_bytes()),
            d: B64.encode(seed.as_ref()),
            sign_from: self.sign_from,
        };
        Zeroizing::new(serde_json::to_string(&jwk).expect("a JWK serializes"))
    }

    /// Reads a private JWK, checking that `x` and `kid` belong to `d`.
    pub fn from_secret(text: &str) -> Result<Self, KeyMaterialError> {
        let jwk: PrivateJwk =
            serde_json::from_str(text).map_err(|_| KeyMaterialError("not a private JWK"))?;
        if (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str()) != ("OKP", "Ed25519", ALG) {
            return Err(KeyMaterialError("not an Ed25519 key"));
        }
        let seed = Zeroizing::new(B64.decode(&jwk.d).map_err(|_| KeyMaterialError("d is not base64url"))?);
        let seed: &[u8; 32] =
            seed.as_slice().try_into().map_err(|_| KeyMaterialError("d is not 32 bytes"))?;
        let key = Self::from_seed(seed);
        let key = SigningKey { sign_from: jwk.sign_from, ..key };
        if B64.encode(key.key.verifying_key().as_bytes()) != jwk.x || key.kid != jwk.kid {
            return Err(KeyMaterialError("x or kid does not match d"));
        }
        Ok(key)
    }

    /// Signs `claims` as an RFC 9068 access token.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = json!({"alg": ALG, "typ": TYP, "kid": self.kid});
        let body = serde_json::to_vec(claims).expect("claims serialize");
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(body));
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
    }
}

/// A public key we accept signatures from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as a public JWK for the JWKS document (RFC 7517, RFC 8037).
    pub fn to_jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64.encode(self.key.as_bytes()),
            "kid": self.kid,
            "use": "sig",
            "alg": ALG,
        })
    }

    /// The bare signature check this module adds its rules around (also the
    /// baseline of the verification benchmark).
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), JwtError> {
        let bytes: &[u8; 64] = signature.try_into().map_err(|_| JwtError::Signature)?;
        let signature = Signature::from_bytes(bytes);
        self.key.verify_strict(message, &signature).map_err(|_| JwtError::Signature)
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: the key id we publish.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(key.as_bytes()));
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

/// The keys a verifier accepts, found by `kid` only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

impl KeySet {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        let mut unique: Vec<PublicKey> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.iter().any(|k| k.kid == key.kid) {
                unique.push(key);
            }
        }
        KeySet { keys: unique }
    }

    pub fn find(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The JWKS document.
    pub fn to_jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(PublicKey::to_jwk).collect::<Vec<_>>()})
    }
}

// ---------------------------------------------------------- verification --

/// A token split and its header checked, not yet verified.
pub struct Parsed<'a> {
    pub kid: String,
    signing_input: &'a str,
    payload: &'a str,
    signature: Vec<u8>,
}

/// Splits `token` and checks its header. Nothing here trusts the token: the
/// `kid` it returns is only a name to look up among our own keys.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    if header.is_empty() || payload.is_empty() || signature.is_empty() || payload.contains('.') {
        return Err(JwtError::Malformed);
    }
    let header = B64.decode(header).map_err(|_| JwtError::Malformed)?;
    let kid = check_header(&header)?;
    let signature = B64.decode(signature).map_err(|_| JwtError::Malformed)?;
    Ok(Parsed { kid, signing_input, payload, signature })
}

/// The only header members we accept. Typed parsing also refuses a member
/// given twice (`{"alg":"EdDSA","alg":"none"}`), which libraries resolve
/// differently.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

fn check_header(bytes: &[u8]) -> Result<String, JwtError> {
    // Unknown members (jku, x5u, jwk, x5c, crit, …) fail here: never followed.
    let header: Header = serde_json::from_slice(bytes).map_err(|_| JwtError::Header)?;
    if header.alg != ALG {
        return Err(JwtError::Header);
    }
    // Media types compare case-insensitively; RFC 9068 allows the full form.
    if !header.typ.eq_ignore_ascii_case(TYP) && !header.typ.eq_ignore_ascii_case("application/at+jwt") {
        return Err(JwtError::Header);
    }
    if header.kid.is_empty() || header.kid.len() > MAX_KID_LEN {
        return Err(JwtError::Header);
    }
    Ok(header.kid)
}

impl Parsed<'_> {
    /// Checks the signature with `key` (chosen by the caller from our own
    /// keys), then the claims against `expect` at time `now`.
    pub fn verify(&self, key: &PublicKey, expect: &Expectations, now: i64) -> Result<Claims, JwtError> {
        if key.kid != self.kid {
            return Err(JwtError::UnknownKey);
        }
        key.verify_signature(self.signing_input.as_bytes(), &self.signature)?;
        let payload = B64.decode(self.payload).map_err(|_| JwtError::Claims)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| JwtError::Claims)?;
        check_claims(&claims, expect, now)?;
        Ok(claims)
    }
}

fn check_claims(claims: &Claims, expect: &Expectations, now: i64) -> Result<(), JwtError> {
    if claims.iss != expect.issuer {
        return Err(JwtError::Issuer);
    }
    if claims.aud != expect.audience {
        return Err(JwtError::Audience);
    }
    if claims.sub.is_empty() || claims.sub != claims.client_id || claims.jti.is_empty() {
        return Err(JwtError::Claims);
    }
    if claims.exp <= claims.iat || claims.exp - claims.iat > expect.max_lifetime_secs {
        return Err(JwtError::Claims);
    }
    if now >= claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(JwtError::Expired);
    }
    let not_before = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
    if not_before > now.saturating_add(LEEWAY_SECS) {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

/// Verifies `token` against `keys`: parse, find the key by `kid`, verify.
pub fn verify(token: &str, keys: &KeySet, expect: &Expectations, now: i64) -> Result<Claims, JwtError> {
    let parsed = parse(token)?;
    let key = keys.find(&parsed.kid).ok_or(JwtError::UnknownKey)?;
    parsed.verify(key, expect, now)
}

/// A fresh token id: 128 random bits, base64url.
pub fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect() -> Expectations {
        Expectations {
            issuer: "https://as.test".into(),
            audience: "pharmagate".into(),
            max_lifetime_secs: 900,
        }
    }

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "https://as.test".into(),
            sub: "pgc_a".into(),
            aud: "pharmagate".into(),
            client_id: "pgc_a".into(),
            client_gen: "g1".into(),
            scope: "catalog:read".into(),
            iat: now,
            exp: now + 900,
            nbf: None,
            jti: new_jti(),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_its_claims() {
        let key = SigningKey::generate();
        let keys = KeySet::new(vec![key.public()]);
        let c = claims(1_000_000);
        let token = key.sign(&c);
        assert_eq!(verify(&token, &keys, &expect(), 1_000_000), Ok(c));
    }

    #[test]
    fn secret_form_round_trips_and_is_checked() {
        let key = SigningKey::generate();
        let text = key.to_secret();
        let back = SigningKey::from_secret(&text).unwrap();
        assert_eq!(back.kid(), key.kid());
        assert_eq!(back.public(), key.public());
        assert_eq!(key.kid().len(), 43);
        let other = SigningKey::generate();
        let swapped = text.replace(key.kid(), other.kid());
        assert!(SigningKey::from_secret(&swapped).is_err());
        assert!(format!("{key:?}").contains("[redacted]"));
    }

    #[test]
    fn headers_allow_only_our_members_once() {
        let key = SigningKey::generate();
        let body = B64.encode(serde_json::to_vec(&claims(1_000_000)).unwrap());
        let kid = key.kid().to_string();
        let cases = [
            format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","alg":"none"}}"#),
            format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","jku":"http://x"}}"#),
            format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","crit":["exp"]}}"#),
            format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"eddsa","typ":"at+jwt","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#),
            r#"{"alg":"EdDSA","typ":"at+jwt","kid":""}"#.to_string(),
            format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":{}}}"#, 7),
        ];
        for header in cases {
            let token = format!("{}.{body}.{}", B64.encode(&header), B64.encode([0u8; 64]));
            assert_eq!(parse(&token).err(), Some(JwtError::Header), "{header}");
        }
        let ok = format!(r#"{{"alg":"EdDSA","typ":"application/AT+JWT","kid":"{kid}"}}"#);
        let token = format!("{}.{body}.{}", B64.encode(&ok), B64.encode([0u8; 64]));
        assert_eq!(parse(&token).map(|p| p.kid).ok(), Some(kid));
    }

    #[test]
    fn time_claims_have_a_fixed_small_leeway() {
        let key = SigningKey::generate();
        let keys = KeySet::new(vec![key.public()]);
        let c = claims(1_000_000);
        let token = key.sign(&c);
        assert!(verify(&token, &keys, &expect(), c.exp + LEEWAY_SECS - 1).is_ok());
        assert_eq!(verify(&token, &keys, &expect(), c.exp + LEEWAY_SECS), Err(JwtError::Expired));
        assert!(verify(&token, &keys, &expect(), c.iat - LEEWAY_SECS).is_ok());
        assert_eq!(verify(&token, &keys, &expect(), c.iat - LEEWAY_SECS - 1), Err(JwtError::NotYetValid));
        let long = Claims { exp: c.iat + 901, ..c.clone() };
        assert_eq!(verify(&key.sign(&long), &keys, &expect(), c.iat), Err(JwtError::Claims));
    }
}
