//! Embedded adapters: the default backend for `pharmagate dev` and tests.

mod sqlite;
mod vault;

pub use sqlite::SqliteStore;
pub use vault::{LocalVault, MasterKeyError};
