//! Domain types that cannot hold invalid values.

pub mod apikey;
pub mod cas;
pub mod client;
pub mod principal;
pub mod product;

pub use apikey::{ApiKey, KeyFormatError, KeyHash, KeyId};
pub use cas::{Cas, CasError};
pub use client::{ClientId, ClientSecret};
pub use principal::{CustomerId, Permission, Principal, Role, Tier};
pub use product::{FieldError, ManufacturingProcess, Product, ProductDraft};
