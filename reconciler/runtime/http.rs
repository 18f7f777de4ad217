//! The HTTP endpoints of `reconciler run`: `/metrics` (Prometheus text), `/healthz`
//! (fails when the loop has stalled) and `/status` (every pipeline's status as JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds the listener (separately, so a taken port fails the start, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let no_specs = shared.no_specs.lock().ok().and_then(|n| n.clone());
    if let Some(why) = no_specs {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failing: {why}: there is nothing to reconcile\n"),
        );
    }
    let fleet_trouble = shared.fleet_trouble.lock().ok().and_then(|t| t.clone());
    if let Some(why) = fleet_trouble {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("failing: {why}\n"));
    }
    let age = shared.last_pass_age();
    if age <= shared.stall_after {
        (
            StatusCode::OK,
            format!("ok: last pass {}s ago\n", age.as_secs()),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: no pass completed for {}s (limit {}s)\n",
                age.as_secs(),
                shared.stall_after.as_secs()
            ),
        )
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let statuses = shared
        .statuses
        .lock()
        .map(|s| s.values().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&statuses).unwrap_or_else(|_| "[]".into()),
    )
}
