//! Black-box tests: the real `pharmagate` binary, `pharmagate dev` over HTTP,
//! and its admin commands on the same data directory.

mod evidence;
mod harness;

mod audit;
mod authn;
mod authorizer_cache;
mod authz;
mod catalog;
mod hardening;
mod import;
mod interop;
mod jwt_attacks;
mod keys_api;
mod lifecycle;
mod limits;
mod oauth;
mod outage;
mod products_write;
mod rotation;
mod routing;
mod store_integrity;
