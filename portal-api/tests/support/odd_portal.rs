//! A portal that breaks the contract in the ways a real one might: it
//! ignores `offset`, sends wrong types, and echoes our API key back in an
//! error body. Real HTTP (axum), so the client is tested end to end.

use axum::Router;
use axum::extract::{Query, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;

pub struct OddPortal {
    pub url: String,
    _server: tokio::task::JoinHandle<()>,
}

pub async fn start() -> OddPortal {
    let app = Router::new()
        // Always the same full page, whatever the offset.
        .route(
            "/tasks",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
                let tasks: Vec<_> = (0..limit)
                    .map(|i| json!({"code": format!("T{i}"), "host_system_id": format!("h{i}"), "subject_code": "S1", "status": "waiting"}))
                    .collect();
                axum::Json(json!({"tasks": tasks, "count": 1_000_000}))
            }),
        )
        // A status the contract does not know, at a known path.
        .route(
            "/tasks/{code}",
            get(|| async {
                axum::Json(json!({"code": "T1", "host_system_id": "h1", "subject_code": "S1", "status": "archived"}))
            })
            // An error page that echoes the request headers.
            .put(|req: Request| async move {
                let key = req
                    .headers()
                    .get("x-portal-api-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("upstream failed; request had X-Portal-API-Key: {key}"),
                )
                    .into_response()
            })
            .delete(|req: Request| async move {
                let key = req
                    .headers()
                    .get("x-portal-api-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": format!("bad key {key}")})),
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    OddPortal {
        url: format!("http://{addr}"),
        _server: server,
    }
}

impl Drop for OddPortal {
    fn drop(&mut self) {
        self._server.abort();
    }
}
