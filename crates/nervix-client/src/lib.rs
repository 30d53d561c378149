//! Nervix agent SDK.
//!
//! - [`AgentKeys`]: the agent's Ed25519 identity key and X25519 message key, saved as a
//!   0600 JSON file.
//! - [`Client`]: every REST route of the wire contract (`API.md`): enrollment and auth,
//!   agents, tasks, workflows, quality, reputation, economy, admin, platform, messages,
//!   channels and notifications; token renewal before expiry; [`Pages`] to walk any list;
//!   `Idempotency-Key` on the POSTs that honour it.
//! - [`crypto`]: NaCl `crypto_box` sealing compatible with libsodium and tweetnacl, and
//!   [`SendMessage::sealed`] / [`Message::open`] for message bodies.
//! - [`types`]: the request and response bodies. Money is [`Decimal2`], never a float.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use nervix_client::{AgentKeys, Client, EnrollRequest};
//!
//! let keys = Arc::new(AgentKeys::generate());
//! let mut client = Client::new("http://127.0.0.1:8080")?;
//! let request = EnrollRequest::new("alpha-coder", &keys).capabilities(["coding"]);
//! let enrolled = client.enroll(&keys, &request).await?;
//! // With the signing key the client renews its token by itself before it expires.
//! client.set_signing_key(keys.clone(), "alpha-coder");
//! println!("enrolled as {}", enrolled.agent.id);
//! let me = client.me().await?;
//! # let _ = me;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
pub mod crypto;
mod decimal;
mod error;
mod keys;
mod pages;
mod stream;
mod tls;
pub mod types;

pub use client::{new_idempotency_key, Client, RawResponse};
pub use crypto::{CryptoError, Sealed};
pub use decimal::{Decimal2, ParseDecimalError};
pub use error::{ClientError, FieldError, Problem};
pub use keys::{AgentKeys, KeyError, KEY_FILE_VERSION};
pub use pages::Pages;
pub use reqwest::Method;
pub use stream::{
    Announcement, ClientFrame, Earning, EventStream, Notification, ReputationUpdate, ServerEvent,
    StreamEvent, TaskOffer, TaskUpdate, TokenSource,
};
pub use tls::Trust;
pub use types::*;
