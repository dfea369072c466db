//! CAS Registry Numbers: a type that can only hold a valid one.
//!
//! Accepted spelling (documented in README, "CAS numbers"):
//! - three groups of ASCII digits separated by single hyphens: `N…N-NN-N`;
//! - the first group has 2 to 7 significant digits; leading zeros are accepted
//!   and dropped (`0050-78-2` is `50-78-2`), up to 10 characters in that group;
//! - no whitespace anywhere, no other separators, no non-ASCII digits;
//! - the last digit is the check digit: the sum of every other digit times its
//!   position counted from the right (1, 2, 3, …), modulo 10.
//!
//! The value is stored as one integer, so two spellings of one substance are
//! the same value and the same storage key: the canonical text form is the only
//! one ever written.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest input we look at; anything longer is rejected without echoing it.
const MAX_INPUT_LEN: usize = 16;
const MAX_FIRST_GROUP_CHARS: usize = 10;

/// A valid CAS Registry Number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cas(u64);

/// Why a text is not a CAS number. Messages are safe to show to callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CasError {
    #[error("CAS number is empty")]
    Empty,
    #[error("CAS number is longer than {MAX_INPUT_LEN} characters")]
    TooLong,
    #[error("CAS number must not contain whitespace")]
    Whitespace,
    #[error("CAS number must have the form NNNNNNN-NN-N (digits and two hyphens)")]
    Format,
    #[error("the first group of a CAS number must have 2 to 7 digits (not counting leading zeros)")]
    FirstGroupLength,
    #[error("CAS number {shown} fails its check digit: expected {expected}, found {found}")]
    CheckDigit { shown: String, expected: u8, found: u8 },
}

impl Cas {
    /// Parses the accepted spellings described in the module documentation.
    pub fn parse(input: &str) -> Result<Self, CasError> {
        if input.is_empty() {
            return Err(CasError::Empty);
        }
        if input.len() > MAX_INPUT_LEN {
            return Err(CasError::TooLong);
        }
        if input.chars().any(char::is_whitespace) {
            return Err(CasError::Whitespace);
        }
        let mut groups = input.split('-');
        let (Some(first), Some(second), Some(check), None) =
            (groups.next(), groups.next(), groups.next(), groups.next())
        else {
            return Err(CasError::Format);
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(first) || !all_digits(second) || !all_digits(check) {
            return Err(CasError::Format);
        }
        if second.len() != 2 || check.len() != 1 {
            return Err(CasError::Format);
        }
        let significant = first.trim_start_matches('0');
        if first.len() > MAX_FIRST_GROUP_CHARS || !(2..=7).contains(&significant.len()) {
            return Err(CasError::FirstGroupLength);
        }
        // Digits before the check digit, most significant first; at most 9,
        // so the value (with the check digit, 10 digits) fits a u64.
        let digits = || significant.bytes().chain(second.bytes()).map(|b| u64::from(b - b'0'));
        let count = significant.len() + 2;
        let sum: u64 = digits().enumerate().map(|(i, d)| (count - i) as u64 * d).sum();
        let expected = (sum % 10) as u8;
        let found = check.as_bytes()[0] - b'0';
        if expected != found {
            return Err(CasError::CheckDigit {
                shown: format!("{significant}-{second}-{check}"),
                expected,
                found,
            });
        }
        let body = digits().fold(0u64, |acc, d| acc * 10 + d);
        Ok(Cas(body * 10 + u64::from(found)))
    }

    /// The canonical text, e.g. `953769-46-5`.
    pub fn canonical(&self) -> String {
        self.to_string()
    }

    /// The number as one integer (digits without hyphens), e.g. `953769465`.
    pub fn as_u64(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for Cas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let check = self.0 % 10;
        let second = (self.0 / 10) % 100;
        let first = self.0 / 1000;
        write!(f, "{first}-{second:02}-{check}")
    }
}

impl fmt::Debug for Cas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cas({self})")
    }
}

impl FromStr for Cas {
    type Err = CasError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cas::parse(s)
    }
}

impl Serialize for Cas {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cas {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Cas::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::{BufRead, BufReader};

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
    }

    #[test]
    fn featured_products_parse_to_their_canonical_form() {
        for text in ["953769-46-5", "32986-56-4", "665-66-7", "50-78-2", "7732-18-5"] {
            assert_eq!(Cas::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn leading_zeros_are_dropped_so_one_substance_has_one_key() {
        let plain = Cas::parse("50-78-2").unwrap();
        for spelling in ["050-78-2", "0000050-78-2", "0000000050-78-2"] {
            let cas = Cas::parse(spelling).unwrap();
            assert_eq!(cas, plain);
            assert_eq!(cas.to_string(), "50-78-2");
        }
        assert_eq!(Cas::parse("00000000050-78-2"), Err(CasError::FirstGroupLength));
        assert_eq!(Cas::parse("05-78-2"), Err(CasError::FirstGroupLength));
    }

    #[test]
    fn second_group_keeps_its_leading_zero() {
        let cas = Cas::parse("7440-05-3").unwrap();
        assert_eq!(cas.to_string(), "7440-05-3");
        assert_eq!(cas.as_u64(), 7440053);
    }

    #[test]
    fn whitespace_anywhere_is_rejected() {
        for text in [" 50-78-2", "50-78-2 ", "50 -78-2", "50- 78-2", "50-78-\t2", "50\u{a0}-78-2"] {
            assert_eq!(Cas::parse(text), Err(CasError::Whitespace), "{text:?}");
        }
    }

    #[test]
    fn malformed_inputs_name_their_fault() {
        assert_eq!(Cas::parse(""), Err(CasError::Empty));
        assert_eq!(Cas::parse("12345678901234567"), Err(CasError::TooLong));
        for text in [
            "50782",
            "50-782",
            "50-78-2-1",
            "50_78_2",
            "5a-78-2",
            "50-7-82",
            "50--78-2",
            "-50-78-2",
            "50-78-",
            "٥٠-78-2",
        ] {
            let err = Cas::parse(text).unwrap_err();
            assert!(matches!(err, CasError::Format | CasError::TooLong), "{text:?} gave {err:?}");
        }
        assert_eq!(Cas::parse("1-00-1"), Err(CasError::FirstGroupLength));
        assert_eq!(Cas::parse("12345678-00-1"), Err(CasError::FirstGroupLength));
    }

    #[test]
    fn wrong_check_digit_reports_expected_digit() {
        assert_eq!(
            Cas::parse("953769-46-4"),
            Err(CasError::CheckDigit { shown: "953769-46-4".into(), expected: 5, found: 4 })
        );
    }

    #[test]
    fn every_check_digit_but_one_is_rejected() {
        let accepted: Vec<u8> = (0..10u8).filter(|d| Cas::parse(&format!("32986-56-{d}")).is_ok()).collect();
        assert_eq!(accepted, vec![4]);
    }

    #[test]
    fn serde_round_trip_uses_canonical_text() {
        let cas: Cas = serde_json::from_str("\"0665-66-7\"").unwrap();
        assert_eq!(serde_json::to_string(&cas).unwrap(), "\"665-66-7\"");
        assert!(serde_json::from_str::<Cas>("\"665-66-8\"").is_err());
    }

    #[test]
    fn every_real_pubchem_number_parses_and_round_trips() {
        let file = std::fs::File::open(fixture("pubchem-identifiers.tsv.gz")).unwrap();
        let reader = BufReader::new(flate2::read::GzDecoder::new(file));
        let mut seen = HashSet::new();
        let mut count = 0;
        for line in reader.lines().skip(1) {
            let line = line.unwrap();
            let text = line.split('\t').next().unwrap();
            let cas = Cas::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(cas.to_string(), text);
            seen.insert(cas);
            count += 1;
        }
        assert_eq!(count, 71_347);
        assert_eq!(seen.len(), count, "distinct numbers stay distinct");
    }

    #[test]
    fn every_fake_registry_number_is_rejected() {
        let text = std::fs::read_to_string(fixture("invalid-cas-fake-registry.txt")).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 999);
        for line in lines {
            assert_eq!(Cas::parse(line), Err(CasError::FirstGroupLength), "{line}");
        }
    }
}
