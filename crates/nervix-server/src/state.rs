//! What every HTTP handler gets: the application, the edge's own per-client limits, and this
//! node's real-time hub. Cloned per request: everything inside is shared.

use std::sync::Arc;

use crate::app::App;
use crate::hub::Hub;
use crate::limits::Limits;

#[derive(Clone)]
pub struct AppState {
    pub app: App,
    pub limits: Arc<Limits>,
    /// Agent connections of this node (`GET /v1/agent/connect`).
    pub hub: Arc<Hub>,
}
