//! The simulator's HTTP side: the portal routes, the layer that checks the
//! API key, injects faults and counts requests, and the plain and TLS
//! servers.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::faults::{ENDPOINTS, FaultKind};
use super::store::Refusal;
use super::{MAX_LIMIT, Shared, lock};
use crate::client::API_KEY_HEADER;
use crate::wire::{
    ConsentPackage, EnrollmentProfile, ErrorBody, Study, SubjectUpdate, TaskQuery, TaskUpdate,
    UserUpdate,
};

type AppState = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let portal = Router::new()
        .route("/tasks", get(list_tasks).post(submit_tasks))
        .route(
            "/tasks/{code}",
            get(get_task).put(update_task).delete(delete_task),
        )
        .route("/subjects", get(list_subjects))
        .route("/subjects/{code}", put(update_subject))
        .route("/subjects/{code}/users", get(list_users))
        .route("/subjects/{code}/users/{user}", put(update_user))
        .route("/consents", get(list_consents).post(submit_consents))
        .route(
            "/consents/{code}",
            put(update_consent).delete(delete_consent),
        )
        .route("/studies", post(create_study))
        .route("/studies/{id}", get(get_study))
        .route("/enrollmentprofiles", post(publish_profile))
        .route_layer(middleware::from_fn_with_state(shared.clone(), portal_layer));
    Router::new()
        .merge(portal)
        .nest("/_sim", super::control::router())
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(shared)
}

/// The endpoint name (one of [`ENDPOINTS`]) of a matched route.
fn endpoint_name(method: &Method, route: &str) -> Option<&'static str> {
    let shown = match route {
        "/tasks/{code}" => "/tasks/@{code}",
        "/subjects/{code}" => "/subjects/@{code}",
        "/subjects/{code}/users" => "/subjects/@{code}/users",
        "/subjects/{code}/users/{user}" => "/subjects/@{code}/users/@{user}",
        "/consents/{code}" => "/consents/@{code}",
        other => other,
    };
    ENDPOINTS
        .iter()
        .copied()
        .find(|e| e.split_once(' ') == Some((method.as_str(), shown)))
}

fn record(shared: &Shared, endpoint: &'static str, status: u16) {
    *lock(&shared.requests)
        .entry((endpoint, status))
        .or_default() += 1;
}

fn record_fault(shared: &Shared, kind: &'static str) {
    *lock(&shared.faults_injected).entry(kind).or_default() += 1;
}

/// Waits `d`, or until the simulator shuts down.
async fn pause(shared: &Shared, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = super::stopped(shared.shutdown.clone()) => {}
    }
}

/// API key, faults and counting around every portal route.
async fn portal_layer(
    State(shared): AppState,
    route: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let Some(endpoint) = endpoint_name(request.method(), route.as_str()) else {
        return next.run(request).await;
    };
    let authorized = request
        .headers()
        .get(API_KEY_HEADER)
        .is_some_and(|k| shared.key_ok(k.as_bytes()));
    if !authorized {
        record(&shared, endpoint, 401);
        return error(StatusCode::UNAUTHORIZED, "missing or unknown API key");
    }
    let decision = if shared.has_faults.load(Ordering::Relaxed) {
        let mut rng = lock(&shared.rng);
        lock(&shared.faults).decide(endpoint, &mut *rng)
    } else {
        Default::default()
    };
    if !decision.delay.is_zero() {
        record_fault(&shared, "latency");
        pause(&shared, decision.delay).await;
    }
    let Some(fault) = decision.fault else {
        let response = next.run(request).await;
        record(&shared, endpoint, response.status().as_u16());
        return response;
    };
    record_fault(&shared, fault.name());
    match fault {
        FaultKind::Latency { .. } => unreachable_latency(),
        FaultKind::Error {
            status,
            retry_after,
        } => {
            record(&shared, endpoint, status);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = error(status, "injected fault");
            if let Some(secs) = retry_after
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
        FaultKind::Hang { ms } => {
            pause(&shared, Duration::from_millis(ms.unwrap_or(3_600_000))).await;
            record(&shared, endpoint, 503);
            error(StatusCode::SERVICE_UNAVAILABLE, "hung request released")
        }
        FaultKind::AcceptThenFail => {
            let done = next.run(request).await;
            record(&shared, endpoint, 500);
            tracing::debug!(endpoint, status = %done.status(), "accepted, answering 500");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
        FaultKind::Drop => {
            let done = next.run(request).await;
            let status = done.status();
            record(&shared, endpoint, status.as_u16());
            let body = axum::body::to_bytes(done.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let half = body.slice(..body.len() / 2);
            // Part of the body, then an error: hyper aborts the connection
            // with the answer incomplete.
            let chunks: Vec<Result<Bytes, io::Error>> = vec![
                Ok(half),
                Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "injected drop",
                )),
            ];
            let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
            *response.status_mut() = status;
            response
        }
        FaultKind::Truncate => {
            let done = next.run(request).await;
            let (mut parts, body) = done.into_parts();
            record(&shared, endpoint, parts.status.as_u16());
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(body.slice(..body.len() / 2)))
        }
        FaultKind::Malformed => {
            let done = next.run(request).await;
            record(&shared, endpoint, 200);
            drop(done);
            let mut response = Response::new(Body::from(r#"{"tasks": [{"code": "T1", oops}"#));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

/// Latency rules only delay; `decide` never returns one as the fault.
fn unreachable_latency() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "latency is not a breaking fault",
    )
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding: {e}")),
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let body = ErrorBody {
        error: message.to_owned(),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn refusal(r: Refusal) -> Response {
    r.into_response()
}

/// A refusal answers `{"error": …}` with its status (400, 404, 409, 413).
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Refusal::Invalid(m) => (StatusCode::BAD_REQUEST, m),
            Refusal::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Refusal::Conflict(m) => (StatusCode::CONFLICT, m),
            Refusal::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
        };
        error(status, &message)
    }
}

/// What a portal handler answers: a refusal becomes its error response,
/// so handlers use `?`.
type Answer = Result<Response, Refusal>;

/// Decodes a JSON body; a 400 names the path of the first problem.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    // Fast path; only a bad body pays for path tracking.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| Refusal::Invalid(format!("invalid body at `{}`: {}", e.path(), e.inner())))?;
    de.end()
        .map_err(|e| Refusal::Invalid(format!("invalid body: {e}")))?;
    Ok(value)
}

/// `@{code}` in a path; anything else is not a portal code.
fn code(segment: &str) -> Result<&str, Refusal> {
    segment
        .strip_prefix('@')
        .ok_or_else(|| Refusal::NotFound("codes are written @{code}".into()))
}

/// Query of the list endpoints.
struct ListQuery {
    limit: usize,
    offset: usize,
    tasks: TaskQuery,
}

fn list_query(raw: Option<&str>) -> Result<ListQuery, Refusal> {
    let mut q = ListQuery {
        limit: crate::DEFAULT_PAGE_SIZE,
        offset: 0,
        tasks: TaskQuery::default(),
    };
    let flag = |v: &str| matches!(v, "1" | "true" | "yes");
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let number = |what: &str| {
            v.parse::<usize>()
                .map_err(|_| Refusal::Invalid(format!("{what}: {v:?} is not a number")))
        };
        match k.as_ref() {
            "limit" => q.limit = number("limit")?,
            "offset" => q.offset = number("offset")?,
            "unabbreviated" => q.tasks.unabbreviated = flag(&v),
            "unacknowledged" => q.tasks.unacknowledged = flag(&v),
            "host_system_id" => q.tasks.host_system_ids.push(v.into_owned()),
            _ => {}
        }
    }
    if q.limit == 0 || q.limit > MAX_LIMIT {
        return Err(Refusal::Invalid(format!(
            "limit: must be within 1..={MAX_LIMIT}"
        )));
    }
    Ok(q)
}

/// `POST /tasks` as the simulator reads it (documents kept raw).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmittedPackage {
    tasks: Vec<super::validate::SubmittedTask>,
}

#[derive(Serialize)]
struct TaskPageOut<'a> {
    tasks: &'a [super::store::TaskView],
    count: usize,
}

fn page<T: Serialize>(key: &str, items: Vec<T>) -> Response {
    let count = items.len();
    json_response(StatusCode::OK, &json!({ key: items, "count": count }))
}

// ---- tasks ---------------------------------------------------------------

async fn list_tasks(State(shared): AppState, RawQuery(raw): RawQuery) -> Answer {
    let q = list_query(raw.as_deref())?;
    let store = lock(&shared.store);
    let tasks = store.list_tasks(&q.tasks, q.limit, q.offset);
    if shared.count == super::CountMode::Total {
        let total = store.count_tasks(&q.tasks);
        drop(store);
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "tasks": tasks, "count": total }),
        ));
    }
    drop(store);
    Ok(json_response(
        StatusCode::OK,
        &TaskPageOut {
            count: tasks.len(),
            tasks: &tasks,
        },
    ))
}

async fn submit_tasks(State(shared): AppState, body: Bytes) -> Answer {
    let package: SubmittedPackage = decode(&body)?;
    let n = package.tasks.len();
    if n == 0 {
        return Err(Refusal::Invalid("tasks: the package is empty".into()));
    }
    if n > shared.max_package_size {
        return Err(Refusal::TooLarge(format!(
            "package of {n} tasks exceeds the maximum of {}",
            shared.max_package_size
        )));
    }
    for (i, task) in package.tasks.iter().enumerate() {
        if let Err(e) = shared.validator.validate_submitted(task) {
            return Err(Refusal::Invalid(format!(
                "tasks[{i}] ({}): {e}",
                task.host_system_id
            )));
        }
    }
    let views = lock(&shared.store).submit(package.tasks, shared.duplicates)?;
    Ok(json_response(
        StatusCode::CREATED,
        &TaskPageOut {
            count: views.len(),
            tasks: &views,
        },
    ))
}

async fn get_task(State(shared): AppState, Path(segment): Path<String>) -> Answer {
    let code = code(&segment)?;
    let view = lock(&shared.store)
        .get_task(code)
        .ok_or_else(|| Refusal::NotFound(format!("no task {code:?}")))?;
    Ok(json_response(StatusCode::OK, &view))
}

async fn update_task(State(shared): AppState, Path(segment): Path<String>, body: Bytes) -> Answer {
    let code = code(&segment)?;
    let update: TaskUpdate = decode(&body)?;
    let view = lock(&shared.store).update_task(code, update)?;
    Ok(json_response(StatusCode::OK, &view))
}

async fn delete_task(State(shared): AppState, Path(segment): Path<String>) -> Answer {
    let code = code(&segment)?;
    lock(&shared.store).delete_task(code)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- subjects and users --------------------------------------------------

async fn list_subjects(State(shared): AppState, RawQuery(raw): RawQuery) -> Answer {
    let q = list_query(raw.as_deref())?;
    let subjects = lock(&shared.store).list_subjects(q.limit, q.offset);
    Ok(page("subjects", subjects))
}

async fn update_subject(
    State(shared): AppState,
    Path(segment): Path<String>,
    body: Bytes,
) -> Answer {
    let code = code(&segment)?;
    let update: SubjectUpdate = decode(&body)?;
    let subject = lock(&shared.store).update_subject(code, update)?;
    Ok(json_response(StatusCode::OK, &subject))
}

async fn list_users(State(shared): AppState, Path(segment): Path<String>) -> Answer {
    let code = code(&segment)?;
    let users = lock(&shared.store).list_users(code)?;
    Ok(page("users", users))
}

async fn update_user(
    State(shared): AppState,
    Path((subject, user)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let (subject, user) = (code(&subject)?, code(&user)?);
    let update: UserUpdate = decode(&body)?;
    let updated = lock(&shared.store).update_user(subject, user, update)?;
    Ok(json_response(StatusCode::OK, &updated))
}

// ---- consents --------------------------------------------------------------

async fn list_consents(State(shared): AppState, RawQuery(raw): RawQuery) -> Answer {
    let q = list_query(raw.as_deref())?;
    let consents = lock(&shared.store).list_consents(q.tasks.unacknowledged, q.limit, q.offset);
    Ok(page("consents", consents))
}

async fn submit_consents(State(shared): AppState, body: Bytes) -> Answer {
    let package: ConsentPackage = decode(&body)?;
    let n = package.consents.len();
    if n > shared.max_package_size {
        return Err(Refusal::TooLarge(format!(
            "package of {n} consents exceeds the maximum of {}",
            shared.max_package_size
        )));
    }
    let stored = lock(&shared.store).submit_consents(package.consents)?;
    let count = stored.len();
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "consents": stored, "count": count }),
    ))
}

async fn update_consent(
    State(shared): AppState,
    Path(segment): Path<String>,
    body: Bytes,
) -> Answer {
    let code = code(&segment)?;
    let update: Map<String, Value> = decode(&body)?;
    let consent = lock(&shared.store).update_consent(code, update)?;
    Ok(json_response(StatusCode::OK, &consent))
}

async fn delete_consent(State(shared): AppState, Path(segment): Path<String>) -> Answer {
    let code = code(&segment)?;
    lock(&shared.store).delete_consent(code)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- studies and enrollment profiles -------------------------------------

async fn get_study(State(shared): AppState, Path(id): Path<String>) -> Answer {
    let study = lock(&shared.store)
        .get_study(&id)
        .ok_or_else(|| Refusal::NotFound(format!("no study {id:?}")))?;
    Ok(json_response(StatusCode::OK, &study))
}

async fn create_study(State(shared): AppState, body: Bytes) -> Answer {
    let study: Study = decode(&body)?;
    let study = lock(&shared.store).create_study(study)?;
    Ok(json_response(StatusCode::CREATED, &study))
}

async fn publish_profile(State(shared): AppState, body: Bytes) -> Answer {
    let profile: EnrollmentProfile = decode(&body)?;
    let profile = lock(&shared.store).publish_profile(profile)?;
    Ok(json_response(StatusCode::CREATED, &profile))
}

// ---- serving ---------------------------------------------------------------

pub(crate) async fn serve_plain(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "portal simulator stopped with an error");
    }
}

pub(crate) async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let listener = super::tls::TlsListener::spawn(listener, acceptor, stop.clone());
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "portal simulator (TLS) stopped with an error");
    }
}
