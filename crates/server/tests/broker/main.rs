//! The broker's integration tests, one module per area, in one test executable: the helpers in
//! `common` compile once and the executable links once, instead of once per area.

mod common;

mod agents;
mod audit;
mod audit_journal;
mod creation;
mod credentials;
mod identity;
mod inject;
mod leaks;
mod limits;
mod members;
mod operations;
mod pause;
mod policies;
mod postgres;
mod proxy;
mod rate_limit;
mod replicas;
mod serve_tls;
mod service;
mod upstream_tls;
