//! The AWS resources a process uses, named by the environment and checked
//! at start-up, so a missing name fails the cold start with a message that
//! says which variable to set, never a request later.

use super::TableNames;
use crate::config::ConfigError;

pub const PREFIX_VAR: &str = "PHARMAGATE_AWS_PREFIX";
pub const TABLE_VARS: [&str; 6] = [
    "PHARMAGATE_TABLE_CATALOG",
    "PHARMAGATE_TABLE_KEYS",
    "PHARMAGATE_TABLE_CUSTOMERS",
    "PHARMAGATE_TABLE_CLIENTS",
    "PHARMAGATE_TABLE_USAGE",
    "PHARMAGATE_TABLE_AUDIT",
];
pub const KMS_KEY_VAR: &str = "PHARMAGATE_KMS_KEY_ID";
pub const INTEGRITY_SECRET_VAR: &str = "PHARMAGATE_SECRET_INTEGRITY";
pub const SIGNING_SECRET_VAR: &str = "PHARMAGATE_SIGNING_SECRET_ID";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    pub tables: TableNames,
    /// Key id, ARN or `alias/…` of the KMS key that wraps data keys.
    pub kms_key_id: String,
    /// Secrets Manager secret holding the integrity (MAC) key.
    pub integrity_secret_id: String,
    /// Secrets Manager secret holding the token signing key (rotated).
    pub signing_secret_id: String,
}

impl AwsResources {
    /// Every name derived from one prefix: tables `<prefix>-catalog` …,
    /// key `alias/<prefix>`, secret `<prefix>/integrity-key`.
    pub fn with_prefix(prefix: &str) -> Self {
        AwsResources {
            tables: TableNames {
                catalog: format!("{prefix}-catalog"),
                keys: format!("{prefix}-keys"),
                customers: format!("{prefix}-customers"),
                clients: format!("{prefix}-clients"),
                usage: format!("{prefix}-usage"),
                audit: format!("{prefix}-audit"),
            },
            kms_key_id: format!("alias/{prefix}"),
            integrity_secret_id: format!("{prefix}/integrity-key"),
            signing_secret_id: format!("{prefix}/jwt-signing-key"),
        }
    }

    /// Names from `PHARMAGATE_TABLE_*`, `PHARMAGATE_KMS_KEY_ID` and
    /// `PHARMAGATE_SECRET_INTEGRITY`; any not set is derived from
    /// `PHARMAGATE_AWS_PREFIX` when that is set, else reported missing.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let prefix = lookup(PREFIX_VAR);
        if let Some(p) = &prefix {
            let ok = (1..=40).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(ConfigError::Invalid {
                    name: PREFIX_VAR,
                    message: "must be 1-40 characters of letters, digits, - and _".into(),
                });
            }
        }
        let derived = prefix.as_deref().map(AwsResources::with_prefix);
        let mut missing = Vec::new();
        let mut pick = |var: &'static str, from_prefix: Option<&String>| {
            lookup(var).or_else(|| from_prefix.cloned()).unwrap_or_else(|| {
                missing.push(var);
                String::new()
            })
        };
        let d = derived.as_ref();
        let tables = TableNames {
            catalog: pick(TABLE_VARS[0], d.map(|d| &d.tables.catalog)),
            keys: pick(TABLE_VARS[1], d.map(|d| &d.tables.keys)),
            customers: pick(TABLE_VARS[2], d.map(|d| &d.tables.customers)),
            clients: pick(TABLE_VARS[3], d.map(|d| &d.tables.clients)),
            usage: pick(TABLE_VARS[4], d.map(|d| &d.tables.usage)),
            audit: pick(TABLE_VARS[5], d.map(|d| &d.tables.audit)),
        };
        let kms_key_id = pick(KMS_KEY_VAR, d.map(|d| &d.kms_key_id));
        let integrity_secret_id = pick(INTEGRITY_SECRET_VAR, d.map(|d| &d.integrity_secret_id));
        let signing_secret_id = pick(SIGNING_SECRET_VAR, d.map(|d| &d.signing_secret_id));
        if !missing.is_empty() {
            return Err(ConfigError::Missing(missing));
        }
        Ok(AwsResources { tables, kms_key_id, integrity_secret_id, signing_secret_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_prefix_or_each_variable_and_missing_ones_are_named() {
        let only_prefix = AwsResources::from_lookup(|n| (n == PREFIX_VAR).then(|| "pg-test".into())).unwrap();
        assert_eq!(only_prefix.tables.keys, "pg-test-keys");
        assert_eq!(only_prefix.kms_key_id, "alias/pg-test");
        assert_eq!(only_prefix.integrity_secret_id, "pg-test/integrity-key");

        let overridden = AwsResources::from_lookup(|n| match n {
            PREFIX_VAR => Some("pg".into()),
            KMS_KEY_VAR => Some("1234abcd-12ab-34cd-56ef-1234567890ab".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(overridden.kms_key_id, "1234abcd-12ab-34cd-56ef-1234567890ab");
        assert_eq!(overridden.tables.catalog, "pg-catalog");

        let partial = AwsResources::from_lookup(|n| (n == TABLE_VARS[0]).then(|| "cat".into()));
        let Err(ConfigError::Missing(missing)) = partial else { panic!("expected missing variables") };
        assert_eq!(
            missing,
            [
                "PHARMAGATE_TABLE_KEYS",
                "PHARMAGATE_TABLE_CUSTOMERS",
                "PHARMAGATE_TABLE_CLIENTS",
                "PHARMAGATE_TABLE_USAGE",
                "PHARMAGATE_TABLE_AUDIT",
                "PHARMAGATE_KMS_KEY_ID",
                "PHARMAGATE_SECRET_INTEGRITY",
                "PHARMAGATE_SIGNING_SECRET_ID"
            ]
        );
        let bad = AwsResources::from_lookup(|n| (n == PREFIX_VAR).then(|| "no spaces".into()));
        assert!(matches!(bad, Err(ConfigError::Invalid { name: PREFIX_VAR, .. })));
    }
}
