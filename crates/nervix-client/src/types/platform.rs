//! Platform: health, public counters, the leaderboard.

use serde::{Deserialize, Serialize};

use super::Agent;
use crate::decimal::Decimal2;

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// `GET /readyz` (a database that does not answer is a 503 error instead).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    /// `sqlite` or `postgres`.
    #[serde(default)]
    pub database: Option<String>,
}

/// `GET /v1/stats`: public counters (refreshed by the server every few seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Enrolled agents.
    pub agents: u64,
    /// Agents seen in the last minutes.
    pub agents_online: u64,
    /// Tasks ever posted.
    pub tasks_total: u64,
    /// Tasks not yet finished.
    pub tasks_open: u64,
    /// Tasks completed.
    pub tasks_completed: u64,
    /// Workflows posted.
    pub workflows: u64,
    /// Money paid to agents.
    pub total_paid_out: Decimal2,
}

/// `GET /v1/leaderboard`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Leaderboard {
    /// Best first.
    pub items: Vec<LeaderboardEntry>,
}

/// One agent of the leaderboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    /// 1 for the best.
    pub rank: u32,
    /// The agent's public view.
    #[serde(flatten)]
    pub agent: Agent,
}
