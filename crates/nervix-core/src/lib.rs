//! Nervix domain model. Pure: no I/O, no clocks except where a caller passes `now`.
//!
//! Everything the server, storage and SDK agree on lives here: identifiers that validate on
//! construction, money in integer cents, the task state machine, reputation and reward math,
//! DAG checks, the matching score, the automated quality checks and the spot-check sampler.

pub mod agent;
pub mod artifact;
pub mod dag;
pub mod economy;
pub mod error;
pub mod ids;
pub mod matching;
pub mod message;
pub mod money;
pub mod notice;
pub mod quality;
pub mod receipt;
pub mod reputation;
pub mod review;
pub mod scope;
pub mod spot_check;
pub mod task;

pub use agent::{AgentName, Capabilities, EncryptionKey, MaxConcurrentTasks, Metadata, PublicKey};
pub use error::{FieldError, FieldErrors};
pub use ids::AgentHandle;
pub use money::Money;
pub use reputation::{Level, Reputation};
pub use scope::{Scope, Scopes};
pub use task::{Complexity, Lease, Notes, Reward, Role, TaskKind, TaskSpec, TaskStatus};
