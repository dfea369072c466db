//! pharmagate's shared library: the domain, the ports (item store, key vault)
//! with their adapters, the repositories written once against those ports,
//! and the HTTP conventions every function follows.

pub mod clock;
pub mod crypto;
pub mod domain;
pub mod embedded;
pub mod ports;
