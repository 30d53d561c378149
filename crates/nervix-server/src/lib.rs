//! The Nervix server: an axum app over a [`nervix_store::Store`], an event bus and a set of
//! supervised background workers.
//!
//! Layers, each importing only the ones below it: `api` (HTTP handlers, one module per area)
//! → `http` (extractors, middleware), `wire` (shared JSON shapes), `error` (problem+json) →
//! `app` (the operations and their events) → `matching`, `presence`, `bus`, `auth`, `metrics`,
//! `config` → the store and the domain core. The real-time `hub` sits beside `app`: it feeds
//! agent connections from the bus and the store, and knows nothing of the operations; the
//! `outbox` stores and publishes the frames operations produce, off the request path. `workers` call `app`; `server` wires everything.

pub mod api;
pub mod app;
pub mod artifact_store;
pub mod auth;
pub mod bus;
pub mod config;
pub mod error;
pub mod http;
pub mod hub;
pub mod limits;
pub mod matching;
pub mod metrics;
pub mod openapi;
pub mod operator;
pub mod outbox;
pub mod presence;
pub mod private_fs;
pub mod quota;
pub mod recent_errors;
pub mod server;
pub mod spot_checks;
pub mod state;
pub mod stats;
pub mod supervisor;
pub mod tls;
pub mod web;
pub mod wire;
pub mod workers;

pub use config::{Config, ServeArgs};
pub use server::{ensure_data_dir, open_store, run_from_args, start, Running, ServerError};
