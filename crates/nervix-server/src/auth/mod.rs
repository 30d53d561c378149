//! Tokens: EdDSA JWTs signed by the key ring, and their cryptographic check.
//!
//! A token is valid here when it is EdDSA-signed by one of our keys, has our `iss`/`aud` and is
//! unexpired. Whether its `jti` is still live, and the agent's role and suspension, are storage
//! questions that the application layer asks on every request (`app::auth::authenticate`).

pub mod keys;
mod token;
mod verified;

pub use token::{issue, kid_of, verify, AuthError, Claims, Issued, AUDIENCE, ISSUER};
pub use verified::VerifiedTokens;
