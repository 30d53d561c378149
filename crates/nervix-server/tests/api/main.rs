//! End-to-end tests of the HTTP API: a real server on a random port, driven by the SDK (and
//! by raw requests where the SDK would refuse to send something malformed). Every case that
//! touches storage runs on SQLite and on PostgreSQL (`sqlite::*`, `postgres::*`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod a2a;
mod artifacts;
mod contract;
mod economy;
mod foundation;
mod messages;
mod quality;
mod realtime;
mod scopes;
mod signing_keys;
mod tasks;
