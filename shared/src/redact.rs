//! Values that must never reach a log line: a wrapper whose `Debug` and
//! `Display` print `[redacted]`, so `tracing::info!(?x)` or `{x}` on one of
//! them is safe by construction, and reading the value is an explicit,
//! greppable `expose()`.
//!
//! The other secret-bearing types (`ApiKey`, `ClientSecret`, `DataKey`,
//! `SecretVersion`, `SigningKey`, `ManufacturingProcess`) redact themselves
//! the same way; this one is for plain strings taken from requests (client
//! secrets and tokens in OAuth forms, bearer tokens in headers).

use std::fmt;

use zeroize::Zeroize;

/// A secret value: never printed, wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself, for the one place that needs it. Never log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_debug_nor_display_shows_the_value() {
        let s = Secret::new("pgcs_topsecret".to_string());
        assert_eq!(format!("{s:?} {s} {:?}", Some(&s)), "[redacted] [redacted] Some([redacted])");
        assert_eq!(s.expose(), "pgcs_topsecret");
    }
}
