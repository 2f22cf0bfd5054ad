//! The client library's integration tests, one module per area, in one test executable: the
//! helpers compile once and the executable links once. The keychain tests (`keychain.rs`,
//! `secret_service.rs`) stay executables of their own: they run against a real OS keychain, in
//! a session of their own (`tests/stories/keychain.sh`) and under Wine.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests and their helpers: a panic is the failure report"
)]

#[path = "../common/mod.rs"]
mod common;

#[allow(dead_code, reason = "shared with other OAuth tests, which use all of it")]
#[path = "../../../../tests/support/oauth/browser.rs"]
mod browser;
#[allow(dead_code, reason = "shared with other OAuth tests, which use all of it")]
#[path = "../../../../tests/support/oauth/servers.rs"]
mod servers;
#[allow(dead_code, reason = "shared with the broker's and the CLI's tests, which use all of it")]
#[path = "../../../../tests/support/tls.rs"]
mod tls;

mod access;
mod approvals;
mod audit;
mod catalog;
mod inject;
mod oauth;
mod operations;
mod pause;
mod recovery;
mod refresh;
mod rotation;
mod workspace;
