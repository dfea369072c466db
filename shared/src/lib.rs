//! pharmagate's shared library: the domain, the ports (item store, key vault)
//! with their adapters, the repositories written once against those ports,
//! and the HTTP conventions every function follows.

pub mod clock;
pub mod config;
pub mod contract;
pub mod crypto;
pub mod cursor;
pub mod domain;
pub mod embedded;
pub mod http;
pub mod ports;
pub mod repo;
pub mod routes;
pub mod telemetry;
