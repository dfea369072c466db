//! The `pharmagate` binary's library: the local API Gateway, the embedded
//! seed, catalog import and the admin commands.

pub mod gateway;
pub mod import;
pub mod seed;
pub mod server;
