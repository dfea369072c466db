//! Who is calling: principals, roles and their permissions, tiers, customers.
//!
//! Roles map to permissions through one table (`ROLE_PERMISSIONS`); anything
//! not listed there is denied. Object-level rules (a customer's own keys, an
//! entitlement for a product's manufacturing data) are checked by the handlers
//! on top of these permissions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A thing a principal may do. The string forms are the OAuth scope names too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "catalog:read")]
    CatalogRead,
    #[serde(rename = "catalog:write")]
    CatalogWrite,
    #[serde(rename = "catalog:delete")]
    CatalogDelete,
    /// Read manufacturing data of products the customer is entitled to.
    #[serde(rename = "manufacturing:read")]
    ManufacturingRead,
    /// Read manufacturing data of every product, without an entitlement.
    #[serde(rename = "manufacturing:read-any")]
    ManufacturingReadAny,
    /// Manage the API keys of one's own customer.
    #[serde(rename = "keys:own")]
    KeysOwn,
    /// Manage the API keys of every customer.
    #[serde(rename = "keys:any")]
    KeysAny,
    /// Create, list, delete OAuth clients and rotate their secrets.
    #[serde(rename = "clients:manage")]
    ClientsManage,
    /// Read the audit trail of every request.
    #[serde(rename = "audit:read")]
    AuditRead,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::CatalogRead,
        Permission::CatalogWrite,
        Permission::CatalogDelete,
        Permission::ManufacturingRead,
        Permission::ManufacturingReadAny,
        Permission::KeysOwn,
        Permission::KeysAny,
        Permission::ClientsManage,
        Permission::AuditRead,
    ];

    /// The scope name (`catalog:read`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::CatalogRead => "catalog:read",
            Permission::CatalogWrite => "catalog:write",
            Permission::CatalogDelete => "catalog:delete",
            Permission::ManufacturingRead => "manufacturing:read",
            Permission::ManufacturingReadAny => "manufacturing:read-any",
            Permission::KeysOwn => "keys:own",
            Permission::KeysAny => "keys:any",
            Permission::ClientsManage => "clients:manage",
            Permission::AuditRead => "audit:read",
        }
    }

    pub fn parse(text: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Partner,
    Developer,
    Admin,
}

/// The role → permission table. Default deny: a permission not listed for a
/// role is refused.
const ROLE_PERMISSIONS: &[(Role, &[Permission])] = &[
    (Role::Customer, &[Permission::CatalogRead, Permission::KeysOwn]),
    (Role::Partner, &[Permission::CatalogRead, Permission::ManufacturingRead, Permission::KeysOwn]),
    (
        Role::Developer,
        &[
            Permission::CatalogRead,
            Permission::CatalogWrite,
            Permission::ManufacturingRead,
            Permission::KeysOwn,
        ],
    ),
    (Role::Admin, &Permission::ALL),
];

impl Role {
    pub const ALL: [Role; 4] = [Role::Customer, Role::Partner, Role::Developer, Role::Admin];

    pub fn permissions(self) -> &'static [Permission] {
        ROLE_PERMISSIONS.iter().find(|(role, _)| *role == self).map_or(&[], |(_, perms)| perms)
    }

    pub fn allows(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Partner => "partner",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| "role must be one of customer, partner, developer, admin".to_string())
    }
}

/// Commercial tier; decides rate limits and the gateway usage plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Paid,
    Internal,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Free, Tier::Paid, Tier::Internal];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Paid => "paid",
            Tier::Internal => "internal",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| "tier must be one of free, paid, internal".to_string())
    }
}

/// A customer account id: 2–64 characters of lowercase ASCII letters, digits
/// and inner hyphens, so it is safe in storage keys, logs and URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok_len = (2..=64).contains(&text.len());
        let ok_chars = text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ok_ends = !text.starts_with('-') && !text.ends_with('-');
        if ok_len && ok_chars && ok_ends {
            Ok(CustomerId(text.to_string()))
        } else {
            Err("customer id must be 2-64 characters of a-z, 0-9 and inner hyphens".to_string())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CustomerId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        CustomerId::parse(&value)
    }
}

impl From<CustomerId> for String {
    fn from(value: CustomerId) -> Self {
        value.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An authenticated caller, as the authorizer hands it to the functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The API key id (public part of the key), or the OAuth client id.
    pub id: String,
    pub customer: CustomerId,
    pub role: Role,
    pub tier: Tier,
    /// For OAuth access tokens: the granted scopes. The principal may do
    /// only what its role allows *and* a scope names. `None` for API keys.
    pub scopes: Option<Vec<Permission>>,
}

impl Principal {
    pub fn can(&self, permission: Permission) -> bool {
        self.role.allows(permission) && self.scopes.as_ref().is_none_or(|s| s.contains(&permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table_is_default_deny() {
        assert_eq!(Role::Customer.permissions(), &[Permission::CatalogRead, Permission::KeysOwn]);
        assert!(!Role::Customer.allows(Permission::ManufacturingRead));
        assert!(!Role::Customer.allows(Permission::CatalogWrite));
        assert!(!Role::Developer.allows(Permission::CatalogDelete));
        assert!(!Role::Developer.allows(Permission::KeysAny));
        assert!(!Role::Partner.allows(Permission::ManufacturingReadAny));
        for role in [Role::Customer, Role::Partner, Role::Developer] {
            assert!(!role.allows(Permission::AuditRead), "{role:?} reads the audit trail");
        }
        for p in Permission::ALL {
            assert!(Role::Admin.allows(p));
        }
    }

    #[test]
    fn permission_names_are_scope_strings() {
        let names: Vec<String> = Permission::ALL
            .iter()
            .map(|p| serde_json::to_value(p).unwrap().as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "catalog:read",
                "catalog:write",
                "catalog:delete",
                "manufacturing:read",
                "manufacturing:read-any",
                "keys:own",
                "keys:any",
                "clients:manage",
                "audit:read"
            ]
        );
        for p in Permission::ALL {
            assert_eq!(serde_json::to_value(p).unwrap().as_str(), Some(p.as_str()));
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("Catalog:read"), None);
    }

    #[test]
    fn scopes_narrow_a_role_but_never_widen_it() {
        let customer = CustomerId::parse("acme").unwrap();
        let partner = |scopes: Option<Vec<Permission>>| Principal {
            id: "c".into(),
            customer: customer.clone(),
            role: Role::Partner,
            tier: Tier::Paid,
            scopes,
        };
        assert!(partner(None).can(Permission::ManufacturingRead));
        let narrowed = partner(Some(vec![Permission::CatalogRead]));
        assert!(narrowed.can(Permission::CatalogRead));
        assert!(!narrowed.can(Permission::ManufacturingRead));
        let widened = partner(Some(vec![Permission::CatalogWrite, Permission::KeysAny]));
        assert!(!widened.can(Permission::CatalogWrite));
        assert!(!widened.can(Permission::KeysAny));
    }

    #[test]
    fn roles_and_tiers_parse_only_known_names() {
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("Admin".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
        assert_eq!("paid".parse::<Tier>(), Ok(Tier::Paid));
        assert!("gold".parse::<Tier>().is_err());
    }

    #[test]
    fn customer_ids_are_restricted() {
        assert_eq!(CustomerId::parse("demo-customer").unwrap().as_str(), "demo-customer");
        for bad in ["", "a", "-a", "a-", "Demo", "a b", "a#b", "a/b", &"x".repeat(65)] {
            assert!(CustomerId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<CustomerId>("\"UPPER\"").is_err());
    }
}
