//! What every HTTP handler gets: the application, and the edge's own per-client limits.
//! Cloned per request: everything inside is shared.

use std::sync::Arc;

use crate::app::App;
use crate::limits::Limits;

#[derive(Clone)]
pub struct AppState {
    pub app: App,
    pub limits: Arc<Limits>,
}
