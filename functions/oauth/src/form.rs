//! The wire rules of the token, revocation and introspection endpoints:
//! `application/x-www-form-urlencoded` bodies, client credentials, and the
//! RFC 6749 §5.2 error shape.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use pharmagate_shared::domain::client::MAX_SECRET_LEN;
use pharmagate_shared::http as api;
use pharmagate_shared::redact::Secret;
use serde_json::json;

/// Largest form body accepted; ours carry a token and a few names.
pub const MAX_FORM_BYTES: usize = 8 * 1024;

/// An OAuth error response (RFC 6749 §5.2, RFC 7009 §2.2.1). The body also
/// carries the RFC 9457 members, so one client can read either shape.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        OAuthError { status, code, description: description.into(), retry_after: None }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// Unknown client, wrong secret, missing or malformed credentials: all
    /// the same answer.
    pub fn invalid_client() -> Self {
        OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed")
    }

    pub fn unsupported_grant_type() -> Self {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        )
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    /// Too many failed client authentications from this source or for this
    /// client: 429 with `Retry-After` (`slow_down`, RFC 8628's token error).
    pub fn slow_down(retry_after: u64) -> Self {
        let description = format!("too many failed authentications; retry in {retry_after} s");
        let mut e = OAuthError::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", description);
        e.retry_after = Some(retry_after);
        e
    }

    /// Over the client's rate limit or its customer's daily quota: 429 with
    /// `Retry-After`, as on every limited route, in the token endpoint's own
    /// error shape (its one 429 code is `slow_down`; the description says
    /// which limit, as the `rate-limited` problem's detail does elsewhere).
    pub fn rate_limited(retry_after: u64) -> Self {
        let description = format!("rate limit or daily quota exceeded; retry in {retry_after} s");
        let mut e = OAuthError::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", description);
        e.retry_after = Some(retry_after);
        e
    }

    pub fn to_response(&self, request_id: Option<&str>) -> Response<Body> {
        let mut body = json!({
            "error": self.code,
            "error_description": self.description,
            "type": format!("{}oauth-{}", api::PROBLEM_TYPE_PREFIX, self.code.replace('_', "-")),
            "title": "OAuth request refused",
            "status": self.status.as_u16(),
        });
        if let Some(id) = request_id {
            body["request_id"] = json!(id);
        }
        let mut response = api::json_response(self.status, &body);
        api::AuditNote { principal: None, reason: Some(self.code) }.attach(&mut response);
        response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"pharmagate\""));
        }
        response
    }
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a
/// space, `%XX` a byte; a broken escape or non-UTF-8 result is `None`.
pub fn form_decode(text: &str) -> Option<String> {
    pharmagate_shared::routes::percent_decode(&text.replace('+', " "))
}

/// A decoded form body. It carries client secrets and tokens, so its `Debug`
/// names the parameters and never shows a value.
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&String> {
        self.0.get(name)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        names.sort_unstable();
        write!(f, "Form {{ {}: [redacted] }}", names.join(", "))
    }
}

/// The form parameters of the body. Parameters without a value count as
/// omitted (RFC 6749 §3.1); a parameter given twice is refused (§3.2).
pub fn form_body(req: &Request) -> Result<Form, OAuthError> {
    if !is_form(req.headers()) {
        return Err(OAuthError::invalid_request("send the body as application/x-www-form-urlencoded"));
    }
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_FORM_BYTES {
        return Err(OAuthError::invalid_request(format!("the body is limited to {MAX_FORM_BYTES} bytes")));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| OAuthError::invalid_request("the body is not UTF-8"))?;
    let mut out = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || OAuthError::invalid_request("the body has a broken %-escape");
        let (name, value) = (form_decode(name).ok_or_else(bad)?, form_decode(value).ok_or_else(bad)?);
        if out.contains_key(&name) {
            return Err(OAuthError::invalid_request("a parameter is given more than once"));
        }
        out.insert(name, value);
    }
    out.retain(|_, v| !v.is_empty());
    Ok(Form(out))
}

fn is_form(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    let params_ok = parts.all(|p| {
        p.eq_ignore_ascii_case("charset=utf-8") || p.eq_ignore_ascii_case("charset=\"utf-8\"") || p.is_empty()
    });
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") && params_ok
}

/// Client credentials as presented; how they came decides nothing else.
pub struct Credentials {
    pub client_id: String,
    pub secret: Secret<String>,
}

/// Reads the client's credentials from HTTP Basic (form-decoded, RFC 6749
/// §2.3.1) or from the body (`client_secret_post`). Using both is refused,
/// as is a client id without a secret (we have no public clients).
pub fn credentials(req: &Request, form: &Form) -> Result<Credentials, OAuthError> {
    // API Gateway and lambda_http hand the function one value per header
    // (the last), so a repeated header cannot be seen here.
    let basic = req.headers().get(header::AUTHORIZATION).map(basic_credentials).transpose()?;
    match basic {
        Some(basic) => {
            if form.contains_key("client_secret") {
                return Err(OAuthError::invalid_request("use one client authentication method, not two"));
            }
            if form.get("client_id").is_some_and(|id| *id != basic.client_id) {
                return Err(OAuthError::invalid_request("client_id differs from the authenticated client"));
            }
            Ok(basic)
        }
        None => match (form.get("client_id"), form.get("client_secret")) {
            (Some(id), Some(secret)) => {
                Ok(Credentials { client_id: id.clone(), secret: Secret::new(secret.clone()) })
            }
            _ => Err(OAuthError::invalid_client()),
        },
    }
}

fn basic_credentials(value: &HeaderValue) -> Result<Credentials, OAuthError> {
    let text = value.to_str().map_err(|_| OAuthError::invalid_client())?;
    let (scheme, encoded) = text.split_once(' ').ok_or_else(OAuthError::invalid_client)?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 4 * MAX_SECRET_LEN {
        return Err(OAuthError::invalid_client());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| OAuthError::invalid_client())?;
    let decoded = String::from_utf8(decoded).map_err(|_| OAuthError::invalid_client())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(OAuthError::invalid_client)?;
    let (Some(client_id), Some(secret)) = (form_decode(id), form_decode(secret)) else {
        return Err(OAuthError::invalid_client());
    };
    Ok(Credentials { client_id, secret: Secret::new(secret) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_components_decode_plus_and_escapes() {
        assert_eq!(form_decode("acme%3Aerp%2Fsync+1%2B2%25").as_deref(), Some("acme:erp/sync 1+2%"));
        assert_eq!(form_decode("a%zz"), None);
        assert_eq!(form_decode("%ff"), None);
    }

    #[test]
    fn a_form_never_shows_its_values() {
        let mut map = HashMap::new();
        map.insert("client_secret".to_string(), "pgcs_secret".to_string());
        map.insert("token".to_string(), "eyJhbGciOi.payload.sig".to_string());
        assert_eq!(format!("{:?}", Form(map)), "Form { client_secret, token: [redacted] }");
    }

    #[test]
    fn over_a_limit_is_slow_down_with_retry_after_in_both_shapes() {
        let response = OAuthError::rate_limited(7).to_response(Some("req-1"));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "7");
        assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "application/json");
        assert_eq!(headers.get(header::PRAGMA).unwrap(), "no-cache");
        assert!(headers.get(header::WWW_AUTHENTICATE).is_none());
        let Body::Text(text) = response.body() else { panic!("a text body") };
        let body: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            body,
            json!({
                "error": "slow_down",
                "error_description": "rate limit or daily quota exceeded; retry in 7 s",
                "type": "urn:pharmagate:problem:oauth-slow-down",
                "title": "OAuth request refused",
                "status": 429,
                "request_id": "req-1",
            })
        );
    }
}
