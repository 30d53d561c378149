//! JSON shapes of the wire contract that more than one route uses. Each `api/` module keeps
//! the shapes that are its own.

pub mod agents;
pub mod economy;
pub mod int;
pub mod messages;
pub mod notifications;
pub mod submissions;
pub mod tasks;
