//! Embedded adapters: the default backend for `pharmagate dev` and tests.

mod secrets;
mod sqlite;
mod vault;

pub use secrets::EmbeddedSecrets;

pub use sqlite::SqliteStore;
pub use vault::{LocalVault, MasterKeyError};
