//! The agent's dashboard and the sign-in that leads to it (a signed challenge or a pasted
//! token), its forms (configuration, withdrawals, notifications), and its live feed: the
//! agent's own event stream as server-sent events, which `live.js` applies to the page.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, Utc};
use futures::Stream;
use nervix_core::economy::Destination;
use nervix_core::{AgentName, Capabilities, MaxConcurrentTasks, Money, Scope, Scopes};
use nervix_store::MarkRead;
use serde::Deserialize;
use uuid::Uuid;

use super::chart;
use super::page::{app_error, money, render, score, see_other, when, AgentRow, Layout};
use super::session::{self, is_tls, Origin, Session, SigninCsrf};
use crate::app::{self, agents, auth, economy, notifications, pages};
use crate::http::ClientIp;
use crate::hub::Next;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(dashboard))
        .route("/dashboard/sign-in", get(sign_in))
        .route("/dashboard/sign-in/challenge", post(challenge))
        .route("/dashboard/sign-in/signature", post(signature))
        .route("/dashboard/sign-in/token", post(token))
        .route("/dashboard/sign-out", post(sign_out))
        .route("/dashboard/events", get(events))
        .route("/dashboard/config", post(configure))
        .route("/dashboard/withdrawals", post(withdraw))
        .route("/dashboard/notifications/read", post(mark_read))
        .route("/dashboard/messages", get(messages))
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn {
    layout: Layout,
    csrf: String,
    admin: bool,
    handle: String,
    error: String,
}

#[derive(Debug, Deserialize)]
struct SignInQuery {
    admin: Option<String>,
}

async fn sign_in(
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<SignInQuery>,
) -> Response {
    let csrf = SigninCsrf::of(&headers);
    let page = SignIn {
        layout: Layout::new("Sign in", "dashboard", None),
        csrf: csrf.value.clone(),
        admin: q.admin.is_some(),
        handle: String::new(),
        error: String::new(),
    };
    csrf.attach(render(&page))
}

fn sign_in_again(headers: &HeaderMap, handle: &str, status: StatusCode, error: &str) -> Response {
    let csrf = SigninCsrf::of(headers);
    let page = SignIn {
        layout: Layout::new("Sign in", "dashboard", None),
        csrf: csrf.value.clone(),
        admin: false,
        handle: handle.to_owned(),
        error: error.to_owned(),
    };
    let mut res = csrf.attach(render(&page));
    *res.status_mut() = status;
    res
}

#[derive(Deserialize)]
struct ChallengeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    agent_id: String,
}

#[derive(Template)]
#[template(path = "challenge.html")]
struct ChallengePage {
    layout: Layout,
    csrf: String,
    agent_id: String,
    challenge_id: Uuid,
    challenge: String,
    expires: String,
}

async fn challenge(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<ChallengeForm>,
) -> Response {
    if let Some(refused) = SigninCsrf::refusal(&headers, &f.csrf) {
        return refused;
    }
    let handle = f.agent_id.trim();
    match auth::login_challenge(&state.app, handle).await {
        Ok(c) => render(&ChallengePage {
            layout: Layout::new("Sign the challenge", "dashboard", None),
            csrf: f.csrf,
            agent_id: handle.to_owned(),
            challenge_id: c.id,
            challenge: c.text,
            expires: when(c.expires_at),
        }),
        Err(e) => sign_in_again(
            &headers,
            handle,
            StatusCode::UNPROCESSABLE_ENTITY,
            &e.detail,
        ),
    }
}

#[derive(Deserialize)]
struct SignatureForm {
    #[serde(default)]
    csrf: String,
    challenge_id: Uuid,
    #[serde(default)]
    signature: String,
}

async fn signature(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(f): Form<SignatureForm>,
) -> Response {
    if let Some(refused) = SigninCsrf::refusal(&headers, &f.csrf) {
        return refused;
    }
    match auth::login(&state.app, f.challenge_id, &f.signature, ip).await {
        Ok(s) => {
            let to = home(s.agent.role == nervix_core::Role::Admin);
            session::start(&s.token, Origin::Minted, s.expires_at, is_tls(&headers), to)
        }
        Err(e) => sign_in_again(&headers, "", StatusCode::UNAUTHORIZED, &e.detail),
    }
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

async fn token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    if let Some(refused) = SigninCsrf::refusal(&headers, &f.csrf) {
        return refused;
    }
    let token = f.token.trim();
    match auth::authenticate(&state.app, token, ip).await {
        Ok(caller) => session::start(
            token,
            Origin::Pasted,
            caller.expires_at,
            is_tls(&headers),
            home(caller.is_admin()),
        ),
        Err(e) => sign_in_again(&headers, "", StatusCode::UNAUTHORIZED, &e.detail),
    }
}

fn home(admin: bool) -> &'static str {
    if admin {
        "/admin"
    } else {
        "/dashboard"
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// Signs out; a token the sign-in page minted is revoked, a pasted one is left alone (it is
/// the agent's, and may be in use elsewhere).
async fn sign_out(
    State(state): State<AppState>,
    s: Session,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(refused) = s.csrf_refusal(&f.csrf) {
        return refused;
    }
    if s.origin == Origin::Minted {
        if let Err(e) = auth::revoke(&state.app, &s.caller).await {
            return app_error(&e, Some(s.viewer));
        }
    }
    session::end(is_tls(&headers))
}

struct TaskRow {
    title: String,
    status: String,
    reward: String,
    deadline: String,
}

struct NoticeRow {
    title: String,
    body: String,
    at: String,
    unread: bool,
}

struct LedgerRow {
    at: String,
    kind: String,
    amount: String,
    memo: String,
}

struct WithdrawalRow {
    amount: String,
    destination: String,
    status: String,
    at: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    csrf: String,
    agent: AgentRow,
    available_cents: i64,
    available: String,
    escrow: String,
    pending: String,
    earned: String,
    withdrawn: String,
    earnings_chart: String,
    reputation_chart: String,
    automated: String,
    success: String,
    peer: String,
    eligible: Vec<TaskRow>,
    held: Vec<TaskRow>,
    work: Vec<(String, String, String, String)>,
    notifications: Vec<NoticeRow>,
    ledger: Vec<LedgerRow>,
    withdrawals: Vec<WithdrawalRow>,
    name: String,
    capabilities: String,
    max_concurrent: i64,
    available_for_work: bool,
}

fn task_row(t: &nervix_store::TaskRecord) -> TaskRow {
    TaskRow {
        title: t.title.clone(),
        status: t.status.to_string(),
        reward: money(t.reward_cents),
        deadline: when(t.deadline),
    }
}

/// Earnings per day (payouts and bonuses received), oldest first.
fn earnings_by_day(ledger: &[nervix_store::LedgerEntry]) -> Vec<(String, f64)> {
    let mut days: Vec<(String, i64)> = Vec::new();
    for e in ledger
        .iter()
        .rev()
        .filter(|e| e.amount > 0 && is_earning(&e.kind))
    {
        let day = e.created_at.format("%Y-%m-%d").to_string();
        match days.last_mut() {
            Some((d, sum)) if *d == day => *sum += e.amount,
            _ => days.push((day, e.amount)),
        }
    }
    days.into_iter()
        .map(|(d, c)| (d, c as f64 / 100.0))
        .collect()
}

fn is_earning(kind: &str) -> bool {
    matches!(kind, "payout" | "bonus" | "level_bonus" | "pair_bonus")
}

async fn dashboard(State(state): State<AppState>, s: Session) -> Response {
    if let Some(refused) = s.scope_refusal(Scopes::READ_ONLY) {
        return refused;
    }
    let d = match pages::dashboard(&state.app, &s.caller).await {
        Ok(d) => d,
        Err(e) => return app_error(&e, Some(s.viewer)),
    };
    let rep: Vec<(DateTime<Utc>, f64)> = d
        .history
        .iter()
        .map(|h| (h.at, h.score as f64 / 100.0))
        .collect();
    let b = d.balances;
    render(&DashboardPage {
        csrf: s.viewer.csrf.clone(),
        layout: Layout::new("Dashboard", "dashboard", Some(s.viewer)),
        agent: AgentRow::of(&d.agent),
        available_cents: b.available,
        available: money(b.available),
        escrow: money(b.escrow),
        pending: money(b.pending_withdrawal),
        earned: money(b.total_earned),
        withdrawn: money(b.total_withdrawn),
        earnings_chart: chart::bars(
            "earn",
            "Earnings per day",
            &earnings_by_day(&d.ledger),
            |v| format!("{v:.2}"),
        ),
        reputation_chart: chart::line("rep", "Reputation over time", &rep, |v| format!("{v:.2}")),
        automated: score(d.agent.rep_automated),
        success: score(d.agent.rep_success),
        peer: score(d.agent.rep_peer),
        eligible: d.eligible.iter().map(task_row).collect(),
        held: d.held.iter().map(task_row).collect(),
        work: d
            .work
            .iter()
            .map(|w| {
                (
                    w.task_title.clone(),
                    w.status.to_string(),
                    w.final_score.unwrap_or(w.quality_score).to_string(),
                    w.payout_cents.map(money).unwrap_or_default(),
                )
            })
            .collect(),
        notifications: d
            .notifications
            .iter()
            .map(|n| NoticeRow {
                title: n.title.clone(),
                body: n.body.clone(),
                at: when(n.created_at),
                unread: n.read_at.is_none(),
            })
            .collect(),
        ledger: d
            .ledger
            .iter()
            .take(20)
            .map(|e| LedgerRow {
                at: when(e.created_at),
                kind: e.kind.clone(),
                amount: money(e.amount),
                memo: e.memo.clone(),
            })
            .collect(),
        withdrawals: d
            .withdrawals
            .iter()
            .map(|w| WithdrawalRow {
                amount: money(w.amount_cents),
                destination: w.destination.clone(),
                status: w.status.to_string(),
                at: when(w.created_at),
            })
            .collect(),
        name: d.agent.name.clone(),
        capabilities: d.agent.capabilities.join(", "),
        max_concurrent: d.agent.max_concurrent_tasks,
        available_for_work: d.agent.available,
    })
}

/// The agent's live frames (from now on) as server-sent events, `event: <type>`, `data:` the
/// frame's JSON as the WebSocket sends it. The session is checked again whenever the agent's
/// access changes, like the WebSocket does.
async fn events(State(state): State<AppState>, s: Session) -> Response {
    if let Some(refused) = s.scope_refusal(Scopes::of(&[Scope::Events])) {
        return refused;
    }
    let sub = match state.hub.subscribe(s.caller.id, None).await {
        Ok(sub) => sub,
        Err(e) => return app_error(&app::Error::from(e), Some(s.viewer)),
    };
    let app = state.app.clone();
    let caller = Arc::new(s.caller);
    let stream = futures::stream::unfold(Some(sub), move |sub| {
        let app = app.clone();
        let caller = caller.clone();
        async move {
            let mut sub = sub?;
            loop {
                match sub.next().await {
                    Ok(Next::Frame(d)) => {
                        let kind = serde_json::from_str::<serde_json::Value>(&d.text)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_owned))
                            .unwrap_or_else(|| "frame".to_owned());
                        let event = Event::default()
                            .event(kind)
                            .id(d.seq.to_string())
                            .data(&*d.text);
                        return Some((Ok::<_, Infallible>(event), Some(sub)));
                    }
                    Ok(Next::Recheck) => {
                        if auth::recheck(&app, &caller).await.is_err() {
                            return None;
                        }
                    }
                    Ok(Next::Close(_)) | Err(_) => return None,
                }
            }
        }
    });
    sse(stream)
}

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
struct ConfigForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    agent_name: String,
    #[serde(default)]
    capabilities: String,
    #[serde(default)]
    max_concurrent_tasks: String,
    available: Option<String>,
}

fn parse_config(f: &ConfigForm) -> Result<agents::ConfigChange, app::Error> {
    let caps: Vec<String> = f
        .capabilities
        .split(',')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    let max: i64 = f
        .max_concurrent_tasks
        .trim()
        .parse()
        .map_err(|_| app::Error::field("max_concurrent_tasks", "must be a whole number"))?;
    Ok(agents::ConfigChange {
        name: Some(AgentName::parse(f.agent_name.trim())?),
        capabilities: Some(Capabilities::parse("capabilities", &caps)?),
        max_concurrent_tasks: Some(MaxConcurrentTasks::parse(max)?),
        available: Some(f.available.is_some()),
        ..agents::ConfigChange::default()
    })
}

async fn configure(
    State(state): State<AppState>,
    s: Session,
    Form(f): Form<ConfigForm>,
) -> Response {
    if let Some(refused) = s.csrf_refusal(&f.csrf) {
        return refused;
    }
    if let Some(refused) = s.scope_refusal(Scopes::of(&[Scope::ProfileWrite])) {
        return refused;
    }
    let change = match parse_config(&f) {
        Ok(c) => c,
        Err(e) => return app_error(&e, Some(s.viewer)),
    };
    match agents::configure(&state.app, &s.caller, change).await {
        Ok(_) => see_other("/dashboard#settings"),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

#[derive(Deserialize)]
struct WithdrawForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    destination: String,
}

async fn withdraw(
    State(state): State<AppState>,
    s: Session,
    Form(f): Form<WithdrawForm>,
) -> Response {
    if let Some(refused) = s.csrf_refusal(&f.csrf) {
        return refused;
    }
    if let Some(refused) = s.scope_refusal(Scopes::of(&[Scope::MoneyWithdraw])) {
        return refused;
    }
    let parsed = f
        .amount
        .trim()
        .parse::<Money>()
        .map_err(|_| app::Error::field("amount", "must be an amount like 12.50"))
        .and_then(|a| Ok((a, Destination::parse(f.destination.trim())?)));
    let (amount, destination) = match parsed {
        Ok(p) => p,
        Err(e) => return app_error(&e, Some(s.viewer)),
    };
    // No idempotency key: the form's redirect-after-post keeps a reload from sending it twice.
    let render: crate::app::idempotency::Render<nervix_store::WithdrawalRecord> =
        Arc::new(|_| Ok((201, serde_json::Value::Null)));
    match economy::request_withdrawal(&state.app, &s.caller, amount, destination, None, render)
        .await
    {
        Ok(_) => see_other("/dashboard#withdrawals"),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

async fn mark_read(State(state): State<AppState>, s: Session, Form(f): Form<CsrfOnly>) -> Response {
    if let Some(refused) = s.csrf_refusal(&f.csrf) {
        return refused;
    }
    if let Some(refused) = s.scope_refusal(Scopes::of(&[Scope::Notifications])) {
        return refused;
    }
    match notifications::mark_read(&state.app, &s.caller, &MarkRead::All).await {
        Ok(_) => see_other("/dashboard#notifications"),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}

#[derive(Deserialize)]
struct ThreadQuery {
    with: Option<String>,
    channel: Option<Uuid>,
}

struct MessageRow {
    from: String,
    at: String,
    encrypted: bool,
    payload: String,
}

#[derive(Template)]
#[template(path = "messages.html")]
struct MessagesPage {
    layout: Layout,
    channels: Vec<(Uuid, String, i64)>,
    with: String,
    open: String,
    messages: Vec<MessageRow>,
}

/// Message threads, shown as what the server holds: base64 ciphertext it cannot read.
async fn messages(
    State(state): State<AppState>,
    s: Session,
    axum::extract::Query(q): axum::extract::Query<ThreadQuery>,
) -> Response {
    if let Some(refused) = s.scope_refusal(Scopes::of(&[Scope::Messages])) {
        return refused;
    }
    use base64::Engine;
    let with = q
        .with
        .map(|w| w.trim().to_owned())
        .filter(|w| !w.is_empty());
    let (open, of) = match (&with, q.channel) {
        (_, Some(id)) => (
            format!("channel {id}"),
            Some(app::messages::HistoryOf::Channel(id)),
        ),
        (Some(w), None) => (
            format!("with @{w}"),
            Some(app::messages::HistoryOf::Agent(w.clone())),
        ),
        (None, None) => (String::new(), None),
    };
    match pages::threads(&state.app, &s.caller, of).await {
        Ok(t) => render(&MessagesPage {
            layout: Layout::new("Messages", "dashboard", Some(s.viewer)),
            channels: t
                .channels
                .iter()
                .map(|c| (c.id, c.name.clone(), c.member_count))
                .collect(),
            with: with.unwrap_or_default(),
            open,
            messages: t
                .thread
                .iter()
                .map(|m| MessageRow {
                    from: m.sender_handle.clone(),
                    at: when(m.created_at),
                    encrypted: m.encrypted,
                    payload: base64::engine::general_purpose::STANDARD.encode(&m.payload),
                })
                .collect(),
        }),
        Err(e) => app_error(&e, Some(s.viewer)),
    }
}
