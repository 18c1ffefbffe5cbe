//! The queue dashboard: apalis-board's API (`/api/v1/…`: overview, queues,
//! tasks, workers, one task, push) and its web UI (every other path not
//! taken by `/healthz`, `/readyz`, `/metrics`), served by the worker's HTTP
//! server when `sync-worker --dashboard` is given. It reads the same Redis
//! through the job-queue's [`job_queue::Dashboard`] view.
//!
//! With `worker.dashboard_token` set, every dashboard request must carry
//! `Authorization: Bearer <token>` (compared in constant time); otherwise
//! 401. The health and metrics endpoints are never behind the token. Without
//! a token the dashboard is open to whoever reaches the listener: keep the
//! default loopback bind, or set a token.
//!
//! Job payloads are ids only, so the dashboard shows no personal data.

use apalis_board_api::framework::{ApiBuilder, RegisterRoute};
use apalis_board_api::ui::ServeUI;
use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use job_queue::JobQueue;
use secrecy::{ExposeSecret, SecretString};
use task_model::SyncJob;

/// The dashboard's routes, to merge into the worker's HTTP server.
pub fn dashboard_routes(queue: &JobQueue, token: Option<SecretString>) -> Router {
    let api = ApiBuilder::new(Router::new())
        .register(queue.config().queue(), queue.dashboard::<SyncJob>())
        .build();
    let routes = Router::new()
        .nest("/api/v1", api)
        .fallback_service(ServeUI::new());
    match token {
        None => routes,
        Some(token) => routes.layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { require_bearer(&token, req, next).await }
        })),
    }
}

async fn require_bearer(token: &SecretString, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.expose_secret().as_bytes()) => {
            next.run(req).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the dashboard needs Authorization: Bearer <worker.dashboard_token>\n",
        )
            .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
