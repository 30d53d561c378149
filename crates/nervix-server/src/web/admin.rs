//! The admin panel: the system page, agents (search, suspend, reinstate), tasks and a
//! workflow's DAG, the spot-check queue, withdrawals, the audit log, announcements and the
//! bonus pool. Every route takes an [`AdminSession`]: anyone else is sent to sign in and never
//! sees a control. Every form is checked for the session's CSRF token; each action is one of
//! the operations the admin API uses (and audits).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, Utc};
use nervix_core::notice::Announcement;
use nervix_core::review::Review;
use nervix_core::Money;
use serde::Deserialize;
use uuid::Uuid;

use super::chart::{self, Node};
use super::page::{app_error, money, render, see_other, when, AgentRow, Layout, Viewer};
use super::session::AdminSession;
use crate::app::{self, agents, audit, economy, notifications, pages, quality};
use crate::recent_errors::{LoggedError, RecentErrors};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(system))
        .route("/admin/agents", get(agent_list))
        .route("/admin/agents/{handle}/suspend", post(suspend))
        .route("/admin/agents/{handle}/reinstate", post(reinstate))
        .route("/admin/tasks", get(tasks))
        .route("/admin/workflows/{id}", get(workflow))
        .route("/admin/reviews", get(reviews))
        .route("/admin/reviews/{id}", post(decide_review))
        .route("/admin/withdrawals", get(withdrawals))
        .route("/admin/withdrawals/{id}/approve", post(approve_withdrawal))
        .route("/admin/withdrawals/{id}/reject", post(reject_withdrawal))
        .route("/admin/audit", get(audit_log))
        .route("/admin/announcements", get(announcements).post(announce))
        .route("/admin/bonus-pool", get(bonus_pool).post(fund_bonus_pool))
}

fn layout(title: &str, v: &Viewer) -> Layout {
    Layout::new(title, "admin", Some(v.clone()))
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

#[derive(Template)]
#[template(path = "admin/system.html")]
struct SystemPage {
    layout: Layout,
    version: &'static str,
    backend: &'static str,
    nodes: &'static str,
    connections: usize,
    agents: i64,
    online: i64,
    open: i64,
    completed: i64,
    workflows: i64,
    paid: String,
    review_queue: usize,
    pending_withdrawals: usize,
    bonus_pool: String,
    ledger_balanced: bool,
    errors: Vec<ErrorRow>,
}

/// A recent error as the system page lists it.
struct ErrorRow {
    at: String,
    target: String,
    message: String,
    request: String,
    request_id: String,
}

impl ErrorRow {
    fn of(e: LoggedError) -> Self {
        ErrorRow {
            at: when(e.at),
            target: e.target,
            message: e.message,
            request: e.request.unwrap_or_default(),
            request_id: e.request_id.unwrap_or_default(),
        }
    }
}

async fn system(State(state): State<AppState>, AdminSession(s): AdminSession) -> Response {
    match pages::system(&state.app, &s.caller).await {
        Ok(sys) => render(&SystemPage {
            layout: layout("System", &s.viewer),
            version: env!("CARGO_PKG_VERSION"),
            backend: sys.backend,
            nodes: if sys.multi_node {
                "several (Redis event bus)"
            } else {
                "one (in-process event bus)"
            },
            connections: state.hub.connections(),
            agents: sys.stats.agents,
            online: sys.stats.agents_online,
            open: sys.stats.tasks_open,
            completed: sys.stats.tasks_completed,
            workflows: sys.stats.workflows,
            paid: money(sys.stats.paid_out_cents),
            review_queue: sys.review_queue,
            pending_withdrawals: sys.pending_withdrawals,
            bonus_pool: money(sys.bonus_pool_cents),
            ledger_balanced: sys.ledger_balanced,
            errors: RecentErrors::global()
                .newest_first()
                .into_iter()
                .map(ErrorRow::of)
                .collect(),
        }),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/agents.html")]
struct AgentsPage {
    layout: Layout,
    csrf: String,
    q: String,
    rows: Vec<AgentRow>,
}

async fn agent_list(
    State(state): State<AppState>,
    AdminSession(s): AdminSession,
    Query(f): Query<Search>,
) -> Response {
    let q = f.q.unwrap_or_default().trim().to_owned();
    match pages::admin_agents(&state.app, &s.caller, Some(&q)).await {
        Ok(list) => render(&AgentsPage {
            layout: layout("Agents", &s.viewer),
            csrf: s.viewer.csrf.clone(),
            q,
            rows: list.iter().map(AgentRow::of).collect(),
        }),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

async fn set_suspended(
    state: &AppState,
    s: AdminSession,
    handle: &str,
    csrf: &str,
    on: bool,
) -> Response {
    let s = s.0;
    if let Some(refused) = s.csrf_refusal(csrf) {
        return refused;
    }
    match agents::set_suspended(&state.app, &s.caller, handle, on).await {
        Ok(_) => see_other("/admin/agents"),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

async fn suspend(
    State(state): State<AppState>,
    s: AdminSession,
    Path(handle): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    set_suspended(&state, s, &handle, &f.csrf, true).await
}

async fn reinstate(
    State(state): State<AppState>,
    s: AdminSession,
    Path(handle): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    set_suspended(&state, s, &handle, &f.csrf, false).await
}

struct TaskRow {
    title: String,
    status: String,
    reward: String,
    workflow: Option<(Uuid, String)>,
    created: String,
}

#[derive(Template)]
#[template(path = "admin/tasks.html")]
struct TasksPage {
    layout: Layout,
    tasks: Vec<TaskRow>,
    workflows: Vec<(Uuid, String, String)>,
}

async fn tasks(State(state): State<AppState>, AdminSession(s): AdminSession) -> Response {
    match pages::admin_tasks(&state.app, &s.caller).await {
        Ok(board) => {
            let name_of = |id: Uuid| {
                board
                    .workflows
                    .iter()
                    .find(|w| w.id == id)
                    .map_or_else(|| id.to_string(), |w| w.name.clone())
            };
            render(&TasksPage {
                layout: layout("Tasks and workflows", &s.viewer),
                tasks: board
                    .tasks
                    .iter()
                    .map(|t| TaskRow {
                        title: t.title.clone(),
                        status: t.status.to_string(),
                        reward: money(t.reward_cents),
                        workflow: t.workflow_id.map(|w| (w, name_of(w))),
                        created: when(t.created_at),
                    })
                    .collect(),
                workflows: board
                    .workflows
                    .iter()
                    .map(|w| (w.id, w.name.clone(), w.status.to_string()))
                    .collect(),
            })
        }
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

#[derive(Template)]
#[template(path = "admin/workflow.html")]
struct WorkflowPage {
    layout: Layout,
    name: String,
    status: String,
    dag: String,
}

async fn workflow(
    State(state): State<AppState>,
    AdminSession(s): AdminSession,
    Path(id): Path<Uuid>,
) -> Response {
    match pages::admin_workflow(&state.app, &s.caller, id).await {
        Ok((w, tasks)) => {
            let nodes: Vec<Node> = tasks
                .iter()
                .map(|t| Node {
                    id: t.id,
                    key: t.workflow_key.clone().unwrap_or_else(|| t.title.clone()),
                    title: t.title.clone(),
                    status: t.status.to_string(),
                    depends_on: t.depends_on.clone(),
                })
                .collect();
            render(&WorkflowPage {
                layout: layout(&format!("Workflow {}", w.name), &s.viewer),
                dag: chart::dag("dag", &format!("Workflow {}", w.name), &nodes),
                name: w.name,
                status: w.status.to_string(),
            })
        }
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

struct HeldRow {
    id: Uuid,
    task: String,
    agent: String,
    score: i64,
    checks: String,
    content: String,
    notes: String,
    deadline: String,
}

#[derive(Template)]
#[template(path = "admin/reviews.html")]
struct ReviewsPage {
    layout: Layout,
    csrf: String,
    threshold: u8,
    held: Vec<HeldRow>,
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

async fn reviews(State(state): State<AppState>, AdminSession(s): AdminSession) -> Response {
    match pages::review_queue(&state.app, &s.caller).await {
        Ok(list) => render(&ReviewsPage {
            layout: layout("Spot checks", &s.viewer),
            csrf: s.viewer.csrf.clone(),
            threshold: state.app.config.accept_threshold,
            held: list
                .iter()
                .map(|h| HeldRow {
                    id: h.submission.id,
                    task: h.task.as_ref().map(|t| t.title.clone()).unwrap_or_default(),
                    agent: h
                        .agent
                        .as_ref()
                        .map(|a| a.handle.clone())
                        .unwrap_or_default(),
                    score: h.submission.quality_score,
                    checks: pretty(&h.submission.checks),
                    content: pretty(&h.submission.content),
                    notes: h.submission.notes.clone().unwrap_or_default(),
                    deadline: h.submission.review_deadline.map(when).unwrap_or_default(),
                })
                .collect(),
        }),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

#[derive(Deserialize)]
struct ReviewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    score: String,
    #[serde(default)]
    feedback: String,
}

/// Approve with the score given, or reject (a review scoring 0: below any acceptance
/// threshold, so the submission is rejected like a failed check).
async fn decide_review(
    State(state): State<AppState>,
    AdminSession(s): AdminSession,
    Path(id): Path<Uuid>,
    Form(f): Form<ReviewForm>,
) -> Response {
    if let Some(refused) = s.csrf_refusal(&f.csrf) {
        return refused;
    }
    let threshold = i64::from(state.app.config.accept_threshold);
    let score = match f.decision.as_str() {
        "approve" => match f.score.trim().parse::<i64>() {
            Ok(n) if n >= threshold => Ok(n),
            Ok(_) => Err(app::Error::field(
                "score",
                format!("approving needs a score of at least {threshold}; reject instead"),
            )),
            Err(_) => Err(app::Error::field(
                "score",
                "must be an integer from 0 to 100",
            )),
        },
        "reject" => Ok(0),
        _ => Err(app::Error::field("decision", "must be approve or reject")),
    };
    let review = score.and_then(|n| {
        let feedback = Some(f.feedback.as_str()).filter(|t| !t.trim().is_empty());
        Ok(Review::parse(n, feedback)?)
    });
    let review = match review {
        Ok(r) => r,
        Err(e) => return app_error(&e, Some(s.viewer)),
    };
    match quality::review(&state.app, &s.caller, id, review).await {
        Ok(_) => see_other("/admin/reviews"),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

struct WithdrawalRow {
    id: Uuid,
    agent: String,
    amount: String,
    destination: String,
    status: String,
    pending: bool,
    at: String,
}

#[derive(Template)]
#[template(path = "admin/withdrawals.html")]
struct WithdrawalsPage {
    layout: Layout,
    csrf: String,
    rows: Vec<WithdrawalRow>,
}

async fn withdrawals(State(state): State<AppState>, AdminSession(s): AdminSession) -> Response {
    match pages::admin_withdrawals(&state.app, &s.caller).await {
        Ok(list) => render(&WithdrawalsPage {
            layout: layout("Withdrawals", &s.viewer),
            csrf: s.viewer.csrf.clone(),
            rows: list
                .into_iter()
                .map(|(w, agent)| WithdrawalRow {
                    id: w.id,
                    agent,
                    amount: money(w.amount_cents),
                    destination: w.destination,
                    pending: w.status == nervix_store::WithdrawalStatus::Pending,
                    status: w.status.to_string(),
                    at: when(w.created_at),
                })
                .collect(),
        }),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

async fn decide_withdrawal(
    state: &AppState,
    s: AdminSession,
    id: Uuid,
    csrf: &str,
    approve: bool,
) -> Response {
    let s = s.0;
    if let Some(refused) = s.csrf_refusal(csrf) {
        return refused;
    }
    match economy::decide_withdrawal(&state.app, &s.caller, id, approve).await {
        Ok(_) => see_other("/admin/withdrawals"),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

async fn approve_withdrawal(
    State(state): State<AppState>,
    s: AdminSession,
    Path(id): Path<Uuid>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    decide_withdrawal(&state, s, id, &f.csrf, true).await
}

async fn reject_withdrawal(
    State(state): State<AppState>,
    s: AdminSession,
    Path(id): Path<Uuid>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    decide_withdrawal(&state, s, id, &f.csrf, false).await
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    ip: String,
    details: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    layout: Layout,
    action: String,
    actor: String,
    target: String,
    since: String,
    until: String,
    rows: Vec<AuditRow>,
}

/// `YYYY-MM-DD` (a date input) or RFC 3339.
fn parse_time(field: &str, raw: &str) -> Result<Option<DateTime<Utc>>, app::Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| Some(d.and_utc()))
        .ok_or_else(|| app::Error::field(field, "must be a date (YYYY-MM-DD)"))
}

async fn audit_log(
    State(state): State<AppState>,
    AdminSession(s): AdminSession,
    Query(f): Query<AuditQuery>,
) -> Response {
    let text = |v: &Option<String>| v.as_deref().unwrap_or_default().trim().to_owned();
    let (action, actor, target, since, until) = (
        text(&f.action),
        text(&f.actor),
        text(&f.target),
        text(&f.since),
        text(&f.until),
    );
    let times = parse_time("since", &since).and_then(|a| Ok((a, parse_time("until", &until)?)));
    let (since_t, until_t) = match times {
        Ok(t) => t,
        Err(e) => return app_error(&e, Some(s.viewer)),
    };
    let some = |v: &str| Some(v.to_owned()).filter(|v| !v.is_empty());
    let filter = audit::Filter {
        action: some(&action),
        actor: some(&actor),
        target: some(&target),
        since: since_t,
        until: until_t,
    };
    match audit::list(&state.app, &s.caller, filter, None, 200).await {
        Ok(list) => render(&AuditPage {
            layout: layout("Audit log", &s.viewer),
            rows: list
                .into_iter()
                .map(|r| AuditRow {
                    at: r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    actor: r.actor_handle.unwrap_or_default(),
                    action: r.action,
                    target: r.target.unwrap_or_default(),
                    ip: r.client_ip.unwrap_or_default(),
                    details: r.details.to_string(),
                })
                .collect(),
            action,
            actor,
            target,
            since,
            until,
        }),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

#[derive(Template)]
#[template(path = "admin/announcements.html")]
struct AnnouncementsPage {
    layout: Layout,
    csrf: String,
    sent: Option<usize>,
}

#[derive(Deserialize)]
struct Sent {
    sent: Option<usize>,
}

async fn announcements(AdminSession(s): AdminSession, Query(q): Query<Sent>) -> Response {
    render(&AnnouncementsPage {
        layout: layout("Announcements", &s.viewer),
        csrf: s.viewer.csrf.clone(),
        sent: q.sent,
    })
}

#[derive(Deserialize)]
struct AnnounceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
}

async fn announce(
    State(state): State<AppState>,
    AdminSession(s): AdminSession,
    Form(f): Form<AnnounceForm>,
) -> Response {
    if let Some(refused) = s.csrf_refusal(&f.csrf) {
        return refused;
    }
    let a = match Announcement::parse(&f.title, &f.body) {
        Ok(a) => a,
        Err(e) => return app_error(&e.into(), Some(s.viewer)),
    };
    match notifications::announce(&state.app, &s.caller, a).await {
        Ok(done) => see_other(&format!("/admin/announcements?sent={}", done.recipients)),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

#[derive(Template)]
#[template(path = "admin/bonus_pool.html")]
struct BonusPoolPage {
    layout: Layout,
    csrf: String,
    balance: String,
}

async fn bonus_pool(State(state): State<AppState>, AdminSession(s): AdminSession) -> Response {
    match economy::bonus_pool(&state.app, &s.caller).await {
        Ok(b) => render(&BonusPoolPage {
            layout: layout("Bonus pool", &s.viewer),
            csrf: s.viewer.csrf.clone(),
            balance: b.to_string(),
        }),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

#[derive(Deserialize)]
struct FundForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    memo: String,
}

async fn fund_bonus_pool(
    State(state): State<AppState>,
    AdminSession(s): AdminSession,
    Form(f): Form<FundForm>,
) -> Response {
    if let Some(refused) = s.csrf_refusal(&f.csrf) {
        return refused;
    }
    let amount = match f.amount.trim().parse::<Money>() {
        Ok(a) => a,
        Err(_) => {
            let e = app::Error::field("amount", "must be an amount like 100.00");
            return app_error(&e, Some(s.viewer));
        }
    };
    let memo = Some(f.memo.trim().to_owned()).filter(|m| !m.is_empty());
    match economy::fund_bonus_pool(&state.app, &s.caller, amount, memo).await {
        Ok(_) => see_other("/admin/bonus-pool"),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The system page lists recent errors, escaped: a logged cause is text, never markup.
    #[test]
    fn system_page_lists_recent_errors_escaped() {
        let viewer = Viewer {
            handle: "admin".to_owned(),
            admin: true,
            csrf: "t".to_owned(),
        };
        let page = |errors: Vec<ErrorRow>| SystemPage {
            layout: layout("System", &viewer),
            version: "0",
            backend: "sqlite",
            nodes: "one",
            connections: 0,
            agents: 1,
            online: 0,
            open: 0,
            completed: 0,
            workflows: 0,
            paid: "0.00".to_owned(),
            review_queue: 0,
            pending_withdrawals: 0,
            bonus_pool: "0.00".to_owned(),
            ledger_balanced: true,
            errors,
        };
        let html = page(Vec::new()).render().unwrap();
        assert!(html.contains("None since this node started."));
        let html = page(vec![ErrorRow::of(LoggedError {
            at: Utc::now(),
            target: "nervix_server::error".to_owned(),
            message: "internal error error=<script>alert(1)</script>".to_owned(),
            request: Some("POST /v1/tasks".to_owned()),
            request_id: Some("0b6e-42".to_owned()),
        })])
        .render()
        .unwrap();
        assert!(html.contains("POST /v1/tasks"), "{html}");
        assert!(html.contains("0b6e-42"));
        assert!(html.contains("&#60;script&#62;alert(1)"), "{html}");
        assert!(!html.contains("<script>alert(1)"));
    }
}
