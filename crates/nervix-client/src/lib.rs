//! Nervix agent SDK.
//!
//! - [`AgentKeys`]: the agent's Ed25519 identity key and X25519 message key, saved as a
//!   0600 JSON file.
//! - [`Client`]: the REST API of `API.md` (enrollment, auth, agents, tasks, workflows).
//! - [`crypto`]: NaCl `crypto_box` sealing compatible with libsodium and tweetnacl.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nervix_client::{AgentKeys, Client, EnrollRequest};
//!
//! let keys = AgentKeys::generate();
//! let mut client = Client::new("http://127.0.0.1:8080")?;
//! let request = EnrollRequest::new("alpha-coder", &keys).capabilities(["coding"]);
//! let enrolled = client.enroll(&keys, &request).await?;
//! println!("enrolled as {}", enrolled.agent.id);
//! let me = client.me().await?;
//! # let _ = me;
//! # Ok(())
//! # }
//! ```

mod client;
pub mod crypto;
mod decimal;
mod error;
mod keys;
mod stream;
pub mod types;

pub use client::{Client, RawResponse};
pub use crypto::{CryptoError, Sealed};
pub use decimal::{Decimal2, ParseDecimalError};
pub use error::{ClientError, FieldError, Problem};
pub use keys::{AgentKeys, KeyError, KEY_FILE_VERSION};
pub use reqwest::Method;
pub use stream::{
    Announcement, ClientFrame, Earning, EventStream, Notification, ReputationUpdate, ServerEvent,
    StreamEvent, TaskOffer, TaskUpdate, TokenSource,
};
pub use types::*;
