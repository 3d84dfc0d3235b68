//! The capacity route.
//!
//! | method, path | answer |
//! |---|---|
//! | `GET /v1/capacity` | the [`Report`] now, against the class budgets in force (admin) |

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::report::Report;
use super::Capacity;
use crate::clock::now_ns;

/// The class p99 budgets in force (R1, W1, C1), milliseconds.
pub type Budgets = Arc<dyn Fn() -> [f64; 3] + Send + Sync>;

#[derive(Clone)]
struct Shared {
    capacity: Arc<Capacity>,
    budgets: Budgets,
}

/// The route over `capacity`, judged against `budgets`.
pub fn routes(capacity: Arc<Capacity>, budgets: Budgets) -> Router {
    Router::new()
        .route("/v1/capacity", get(report))
        .with_state(Shared { capacity, budgets })
}

async fn report(State(s): State<Shared>) -> Json<Report> {
    let budgets = (s.budgets)();
    Json(s.capacity.report(now_ns(), budgets))
}
