//! The JSON control API under `/_sim/` (no auth): the HTTP face of
//! [`SimHandle`](super::SimHandle), for tests and tools in other processes.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::Value;

use super::http::{decode, error, refusal};
use super::store::PatientAction;
use super::{FaultRule, PatientsMode, Shared, SimHandle, lock};

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/reset", post(reset))
        .route("/stats", get(stats))
        .route(
            "/faults",
            get(list_faults)
                .put(replace_faults)
                .post(add_fault)
                .delete(clear_faults),
        )
        .route("/tasks/{code}", get(task))
        .route("/tasks/{code}/{action}", post(act))
        .route("/patients", put(start_patients).delete(stop_patients))
}

fn handle(shared: Arc<Shared>) -> SimHandle {
    SimHandle { shared }
}

fn ok_json<T: serde::Serialize>(v: &T) -> Response {
    axum::Json(v).into_response()
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    handle(shared).reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    ok_json(&handle(shared).stats())
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Response {
    ok_json(&handle(shared).faults())
}

async fn replace_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let rules: Vec<FaultRule> = match decode(&body) {
        Ok(r) => r,
        Err(r) => return refusal(r),
    };
    match handle(shared).set_faults(rules) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn add_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let rule: FaultRule = match decode(&body) {
        Ok(r) => r,
        Err(r) => return refusal(r),
    };
    match handle(shared).add_fault(rule) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    handle(shared).clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn task(State(shared): State<Arc<Shared>>, Path(code): Path<String>) -> Response {
    let code = code.trim_start_matches('@');
    match lock(&shared.store).get_task(code) {
        Some(view) => ok_json(&view),
        None => error(StatusCode::NOT_FOUND, &format!("no task {code:?}")),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    assessment: Option<Value>,
}

async fn act(
    State(shared): State<Arc<Shared>>,
    Path((code, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let code = code.trim_start_matches('@');
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        match decode(&body) {
            Ok(b) => b,
            Err(r) => return refusal(r),
        }
    };
    let mut store = lock(&shared.store);
    let assessment = || {
        body.assessment.clone().unwrap_or_else(|| {
            let instrument = store.task_instrument_ref(code).unwrap_or(Value::Null);
            serde_json::json!({ "instrument": instrument, "values": {} })
        })
    };
    let action = match action.as_str() {
        "start" => PatientAction::Start,
        "save" => PatientAction::Save(assessment()),
        "complete" => PatientAction::Complete(assessment()),
        "cancel" => PatientAction::Cancel,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("unknown action {other:?} (start, save, complete, cancel)"),
            );
        }
    };
    match store.patient_action(code, action) {
        Ok(view) => ok_json(&view),
        Err(r) => refusal(r),
    }
}

async fn start_patients(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mode: PatientsMode = match decode(&body) {
        Ok(m) => m,
        Err(r) => return refusal(r),
    };
    match handle(shared).set_patients(Some(mode)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn stop_patients(State(shared): State<Arc<Shared>>) -> Response {
    match handle(shared).set_patients(None) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}
