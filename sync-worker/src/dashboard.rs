//! The queue dashboard: apalis-board's API (`/api/v1/…`: overview, queues,
//! tasks, workers, one task, push, events) and its web UI (every other path
//! not taken by `/healthz`, `/readyz`, `/metrics`), served by the worker's
//! HTTP server when `sync-worker --dashboard` is given. It reads the same
//! Redis through the job-queue's [`job_queue::Dashboard`] view.
//!
//! # Access
//!
//! With `worker.dashboard_token` set, every dashboard request must carry the
//! token ([`require_token`]), in one of two ways:
//!
//! - **Scripts**: `Authorization: Bearer <token>` on every request.
//! - **Browsers**: open the dashboard once as `/?token=<token>` (the token
//!   percent-encoded if it holds characters outside letters, digits and
//!   `-._~+/=`; `+` is taken literally). The worker answers `303 See Other`
//!   to the same URL without the token and sets the cookie
//!   [`SESSION_COOKIE`] (`HttpOnly`, `SameSite=Strict`, `Path=/`, a session
//!   cookie; `Secure` too when the request came through a proxy that says
//!   `X-Forwarded-Proto: https`). The UI's page, assets and API calls then
//!   carry the cookie. The path is `/` because that is where the dashboard
//!   lives: the UI's page sets `<base href="/">`, loads its assets from `/`
//!   and calls `/api/v1`.
//!
//! A `token` query parameter is only ever this login step: a wrong one, or
//! one on a request other than `GET`/`HEAD`, is refused (401) and a URL
//! carrying it never reaches the dashboard's handlers. Tokens are compared
//! in constant time; they are never logged (log lines name the request path,
//! never its query). Anything else gets 401 with `WWW-Authenticate: Bearer`.
//! The health and metrics endpoints are never behind the token. Without a
//! token the dashboard is open to whoever reaches the listener: keep the
//! default loopback bind, or set a token.
//!
//! Job payloads are ids only, so the dashboard shows no personal data.

use std::sync::Arc;

use apalis_board_api::framework::{ApiBuilder, RegisterRoute};
use apalis_board_api::ui::ServeUI;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use job_queue::JobQueue;
use secrecy::{ExposeSecret, SecretString};
use task_model::SyncJob;

/// The cookie that carries the dashboard token after the `?token=` login.
pub const SESSION_COOKIE: &str = "portal_sync_dashboard";

/// The query parameter of the browser login.
const TOKEN_PARAM: &str = "token";

/// The dashboard's routes, to merge into the worker's HTTP server; behind
/// [`require_token`] when `token` is set.
pub fn dashboard_routes(queue: &JobQueue, token: Option<SecretString>) -> Router {
    let api = ApiBuilder::new(Router::new())
        .register(queue.config().queue(), queue.dashboard::<SyncJob>())
        .build();
    let routes = Router::new()
        .nest("/api/v1", api)
        .fallback_service(ServeUI::new());
    match token {
        None => routes,
        Some(token) => require_token(routes, token),
    }
}

/// Puts every route of `routes` (and its fallback) behind `token`: a bearer
/// header, the session cookie, or the one-time `?token=` login (module doc).
pub fn require_token(routes: Router, token: SecretString) -> Router {
    let token = Arc::new(token);
    routes.layer(middleware::from_fn(move |req: Request, next: Next| {
        let token = Arc::clone(&token);
        async move { guard(&token, req, next).await }
    }))
}

async fn guard(token: &SecretString, req: Request, next: Next) -> Response {
    let secret = token.expose_secret().as_bytes();
    if let Some((given, rest)) = split_token_param(req.uri()) {
        let login = matches!(*req.method(), Method::GET | Method::HEAD);
        if login && constant_time_eq(&given, secret) {
            return start_session(token, req.uri(), rest.as_deref(), req.headers());
        }
        tracing::info!(path = %req.uri().path(), "dashboard login refused: wrong token in the URL");
        return unauthorized();
    }
    let headers = req.headers();
    let by_bearer = bearer(headers).is_some_and(|g| constant_time_eq(g.as_bytes(), secret));
    let by_cookie = || session_cookies(headers).any(|g| constant_time_eq(&g, secret));
    if by_bearer || by_cookie() {
        next.run(req).await
    } else {
        tracing::debug!(path = %req.uri().path(), "dashboard request without a valid token");
        unauthorized()
    }
}

/// `303` to the URL without the token, setting the session cookie.
fn start_session(
    token: &SecretString,
    uri: &Uri,
    rest_of_query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    // One leading slash: `//host` would be a redirect to another site.
    let path = format!("/{}", uri.path().trim_start_matches('/'));
    let location = match rest_of_query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{}",
        percent_encode(token.expose_secret().as_bytes()),
        if secure { "; Secure" } else { "" }
    );
    let (Ok(mut cookie), Ok(location)) = (
        HeaderValue::from_str(&cookie),
        HeaderValue::from_str(&location),
    ) else {
        // Not reached: both are printable ASCII by construction.
        return unauthorized();
    };
    cookie.set_sensitive(true);
    tracing::info!(path = %path, "dashboard login: token accepted, session cookie set");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the dashboard needs worker.dashboard_token: open /?token=<token> once in a browser, \
         or send Authorization: Bearer <token>\n",
    )
        .into_response()
}

/// The (percent-decoded) `token` parameter of the query and the query
/// without it (`None` when nothing else is left); `None` without one.
fn split_token_param(uri: &Uri) -> Option<(Vec<u8>, Option<String>)> {
    let query = uri.query()?;
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((TOKEN_PARAM, value)) => token = Some(percent_decode(value)),
            _ if pair == TOKEN_PARAM => token = Some(Vec::new()),
            _ => rest.push(pair),
        }
    }
    let rest = rest
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>();
    token.map(|t| (t, (!rest.is_empty()).then(|| rest.join("&"))))
}

/// The credentials of `Authorization: Bearer …` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// The (decoded) values of every [`SESSION_COOKIE`] the request carries.
fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = Vec<u8>> + '_ {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| match pair.trim().split_once('=') {
            Some((SESSION_COOKIE, value)) => Some(percent_decode(value.trim())),
            _ => None,
        })
}

/// Bytes outside `A-Za-z0-9-._~+/=` as `%XX`: a valid cookie value and URL
/// component for any token.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` escapes decoded; anything else (a malformed escape, `+`) as is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Equality whose time depends only on the secret's length, not on where
/// (or whether) `given` differs from it.
fn constant_time_eq(given: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != secret.len());
    for (i, s) in secret.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ s;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::routing::get;
    use tower::Service;

    use super::*;

    const TOKEN: &str = "s3cret+/token=42";

    fn app() -> Router {
        let routes = Router::new()
            .route("/api/v1/queues", get(|| async { "queues" }))
            .fallback(|| async { "<html>ui</html>" });
        require_token(routes, SecretString::from(TOKEN.to_owned()))
    }

    async fn send(method: Method, uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut svc = app();
        let req = req.body(Body::empty()).expect("request");
        futures::future::poll_fn(|cx| Service::<Request>::poll_ready(&mut svc, cx))
            .await
            .expect("ready");
        svc.call(req).await.expect("infallible")
    }

    async fn get_(uri: &str, headers: &[(&str, &str)]) -> Response {
        send(Method::GET, uri, headers).await
    }

    fn header_of(r: &Response, name: header::HeaderName) -> &str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Every log line of the test's thread, at every level.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn no_token_or_a_wrong_one_is_refused() {
        for (uri, headers) in [
            ("/", vec![]),
            ("/api/v1/queues", vec![]),
            ("/api/v1/queues", vec![("authorization", "Bearer wrong")]),
            ("/api/v1/queues", vec![("authorization", "Basic czNjcmV0")]),
            (
                "/api/v1/queues",
                vec![("cookie", "portal_sync_dashboard=wrong")],
            ),
            ("/api/v1/queues", vec![("cookie", "other=s3cret+/token=42")]),
            ("/?token=wrong", vec![]),
            ("/?token=", vec![]),
            ("/?token", vec![]),
        ] {
            let r = get_(uri, &headers).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{uri} {headers:?}");
            assert_eq!(header_of(&r, header::WWW_AUTHENTICATE), "Bearer");
            assert!(r.headers().get(header::SET_COOKIE).is_none());
        }
    }

    #[tokio::test]
    async fn the_bearer_header_opens_every_route() {
        for scheme in ["Bearer", "bearer"] {
            let auth = format!("{scheme} {TOKEN}");
            let r = get_("/api/v1/queues", &[("authorization", &auth)]).await;
            assert_eq!(r.status(), StatusCode::OK);
            let r = get_("/", &[("authorization", &auth)]).await;
            assert_eq!(r.status(), StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn the_token_in_the_url_sets_the_cookie_and_redirects_without_it() {
        let r = get_("/?token=s3cret%2B%2Ftoken%3D42", &[]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(header_of(&r, header::LOCATION), "/");
        let cookie = header_of(&r, header::SET_COOKIE).to_owned();
        assert_eq!(
            cookie,
            "portal_sync_dashboard=s3cret+/token=42; Path=/; HttpOnly; SameSite=Strict"
        );
        assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-store");

        // Typed raw (`+` literal), deeper in the UI, other parameters kept.
        let r = get_(
            "/queues/sync-jobs?tab=done&token=s3cret+/token=42&page=2",
            &[],
        )
        .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            header_of(&r, header::LOCATION),
            "/queues/sync-jobs?tab=done&page=2"
        );
        // Never a redirect to another host.
        let r = get_("//evil.example/?token=s3cret%2B%2Ftoken%3D42", &[]).await;
        assert_eq!(header_of(&r, header::LOCATION), "/evil.example/");
        // Behind a TLS proxy the cookie is Secure.
        let r = get_(
            "/?token=s3cret%2B%2Ftoken%3D42",
            &[("x-forwarded-proto", "https")],
        )
        .await;
        assert!(header_of(&r, header::SET_COOKIE).ends_with("; Secure"));
    }

    #[tokio::test]
    async fn the_cookie_alone_opens_the_ui_and_the_api() {
        let login = get_("/?token=s3cret%2B%2Ftoken%3D42", &[]).await;
        let set = header_of(&login, header::SET_COOKIE);
        let pair = set.split(';').next().expect("name=value").to_owned();
        let jar = format!("theme=dark; {pair}");
        for uri in ["/", "/queues/sync-jobs", "/api/v1/queues"] {
            let r = get_(uri, &[("cookie", &jar)]).await;
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
        }
    }

    #[tokio::test]
    async fn a_token_in_the_url_is_only_a_login() {
        // Not on a write: refused, and the handler never sees it.
        let r = send(
            Method::POST,
            "/api/v1/queues?token=s3cret%2B%2Ftoken%3D42",
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // A wrong token in the URL is refused even with a good cookie.
        let r = get_(
            "/?token=wrong",
            &[("cookie", "portal_sync_dashboard=s3cret+/token=42")],
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_token_is_never_logged() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        get_("/?token=s3cret%2B%2Ftoken%3D42", &[]).await;
        get_("/?token=s3cret+/token=43", &[]).await;
        get_(
            "/api/v1/queues",
            &[("cookie", "portal_sync_dashboard=nope")],
        )
        .await;
        get_("/", &[("authorization", &format!("Bearer {TOKEN}"))]).await;
        let logs = String::from_utf8(captured.0.lock().expect("logs").clone()).expect("utf-8");
        assert!(logs.contains("token accepted"), "{logs}");
        assert!(logs.contains("wrong token"), "{logs}");
        for secret in ["s3cret", "token=4", "nope"] {
            assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
        }
    }

    #[test]
    fn comparison_and_codecs() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        let odd = "a b;c\"d,é%";
        assert_eq!(
            percent_decode(&percent_encode(odd.as_bytes())),
            odd.as_bytes()
        );
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
    }
}
