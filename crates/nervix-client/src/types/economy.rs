//! The caller's money: balances, ledger entries and withdrawals.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{list_query, push, segments, wire_enum, wire_str, PageParams};
use crate::decimal::Decimal2;

/// `GET /v1/agents/me/earnings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Earnings {
    /// Available now: excludes escrow and pending withdrawals.
    pub balance: Decimal2,
    /// Held for tasks the caller posted.
    pub escrowed: Decimal2,
    /// Requested withdrawals not yet decided.
    pub pending_withdrawals: Decimal2,
    /// Everything earned so far.
    pub total_earned: Decimal2,
    /// Everything paid out so far.
    pub total_withdrawn: Decimal2,
}

/// One entry of `GET /v1/agents/me/contributions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The entry's UUID.
    pub id: Uuid,
    /// escrow_hold | escrow_release | payout | bonus | refund | grant | withdrawal_request |
    /// withdrawal_paid | withdrawal_released (open-ended).
    pub kind: String,
    /// Signed: positive credits the account, negative debits it.
    pub amount: Decimal2,
    /// available | escrow | pending_withdrawal.
    #[serde(default)]
    pub account: Option<String>,
    /// The task it concerns.
    #[serde(default)]
    pub task_id: Option<Uuid>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// Why.
    #[serde(default)]
    pub memo: String,
}

/// `GET /v1/agents/me/contributions`: the caller's ledger entries, newest first.
#[derive(Debug, Clone, Default)]
pub struct ContributionsQuery {
    /// Page size and start.
    pub page: PageParams,
}

list_query!(ContributionsQuery => LedgerEntry, |q|
    path: segments(&["v1", "agents", "me", "contributions"]),
    filters: Vec::new());

/// Body of `POST /v1/withdrawal/request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WithdrawalRequest {
    /// More than zero, at most the available balance.
    pub amount: Decimal2,
    /// Where to pay it (1–256 characters the operator's payout process understands).
    pub destination: String,
}

wire_enum!(
    /// Where a withdrawal is.
    WithdrawalStatus {
        /// Waiting for an admin.
        Pending,
        /// Approved: the money left the platform.
        Paid,
        /// Rejected: the money went back to the available balance.
        Rejected,
    }
);

/// A withdrawal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Withdrawal {
    /// The withdrawal's UUID.
    pub id: Uuid,
    /// The agent's UUID.
    #[serde(default)]
    pub agent_id: Option<Uuid>,
    /// How much.
    pub amount: Decimal2,
    /// Where to.
    #[serde(default)]
    pub destination: Option<String>,
    /// Where it is.
    pub status: WithdrawalStatus,
    /// When it was requested.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// When an admin decided it.
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
}

/// `GET /v1/withdrawals`: the caller's withdrawals, newest first.
#[derive(Debug, Clone, Default)]
pub struct WithdrawalQuery {
    /// Page size and start.
    pub page: PageParams,
}

list_query!(WithdrawalQuery => Withdrawal, |q|
    path: segments(&["v1", "withdrawals"]),
    filters: Vec::new());

/// `GET /v1/admin/withdrawals`: every agent's withdrawals, newest first (admin).
#[derive(Debug, Clone, Default)]
pub struct AdminWithdrawalQuery {
    /// Only withdrawals in this status.
    pub status: Option<WithdrawalStatus>,
    /// Page size and start.
    pub page: PageParams,
}

list_query!(AdminWithdrawalQuery => Withdrawal, |q|
path: segments(&["v1", "admin", "withdrawals"]),
filters: {
    let mut f = Vec::new();
    push(&mut f, "status", q.status.map(wire_str));
    f
});
