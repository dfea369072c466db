//! pharmagate's shared library: the domain, the ports (item store, key vault,
//! secret store) with their embedded and AWS adapters, the repositories written once against those ports,
//! and the HTTP conventions every function follows.

pub mod anomaly;
pub mod audit;
pub mod aws;
pub mod clock;
pub mod config;
pub mod contract;
pub mod crypto;
pub mod cursor;
pub mod domain;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod guard;
pub mod http;
pub mod integrity;
pub mod jwt;
pub mod keycache;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod ports;
pub mod redact;
pub mod repo;
pub mod rotation;
pub mod routes;
pub mod secret_contract;
pub mod signing;
pub mod telemetry;
