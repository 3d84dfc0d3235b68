//! The capacity route.
//!
//! | method, path | answer |
//! |---|---|
//! | `GET /v1/capacity` | the [`Report`] now, against the class budgets and versions in force (admin) |

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::report::Report;
use super::{Capacity, InForce};
use crate::clock::now_ns;

/// What the policy in force says: class budgets and version names.
pub type InForceView = Arc<dyn Fn() -> InForce + Send + Sync>;

#[derive(Clone)]
struct Shared {
    capacity: Arc<Capacity>,
    in_force: InForceView,
}

/// The route over `capacity`, judged against what `in_force` says.
pub fn routes(capacity: Arc<Capacity>, in_force: InForceView) -> Router {
    Router::new()
        .route("/v1/capacity", get(report))
        .with_state(Shared { capacity, in_force })
}

async fn report(State(s): State<Shared>) -> Json<Report> {
    let in_force = (s.in_force)();
    Json(s.capacity.report(now_ns(), &in_force))
}
