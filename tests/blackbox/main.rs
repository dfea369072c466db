//! Black-box tests: the real `pharmagate` binary, `pharmagate dev` over HTTP,
//! and its admin commands on the same data directory.

mod harness;

mod authn;
mod authorizer_cache;
mod authz;
mod catalog;
mod hardening;
mod import;
mod keys_api;
mod lifecycle;
mod products_write;
mod routing;
