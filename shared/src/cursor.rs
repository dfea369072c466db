//! Opaque page cursors: base64url of a small versioned JSON document that
//! records where to resume and a fingerprint of the query it belongs to, so a
//! cursor from one search cannot be replayed against another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::Problem;

const MAX_CURSOR_CHARS: usize = 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    v: u8,
    q: String,
    a: String,
}

fn fingerprint(scope: &str) -> String {
    Sha256::digest(scope.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn encode(scope: &str, after: &str) -> String {
    let cursor = Cursor { v: 1, q: fingerprint(scope), a: after.to_string() };
    B64.encode(serde_json::to_vec(&cursor).expect("cursor serializes"))
}

/// The resume position in `text`, if it is a cursor issued for `scope`.
pub fn decode(scope: &str, text: &str) -> Result<String, Problem> {
    let invalid =
        || Problem::validation("cursor", "not a cursor returned by this listing with the same filters");
    if text.is_empty() || text.len() > MAX_CURSOR_CHARS {
        return Err(invalid());
    }
    let bytes = B64.decode(text).map_err(|_| invalid())?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if cursor.v != 1 || cursor.q != fingerprint(scope) || cursor.a.is_empty() {
        return Err(invalid());
    }
    Ok(cursor.a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_only_within_their_scope() {
        let c = encode("products:name:tob", "tobramycin\u{1f}32986-56-4");
        assert_eq!(decode("products:name:tob", &c).unwrap(), "tobramycin\u{1f}32986-56-4");
        assert_eq!(decode("products:name:ami", &c).unwrap_err().field.as_deref(), Some("cursor"));
        for bad in ["", "!!!", "eyJ2IjoxfQ", &"A".repeat(2000), &B64.encode(br#"{"v":2,"q":"x","a":"y"}"#)] {
            assert!(decode("products:name:tob", bad).is_err(), "{bad}");
        }
    }
}
