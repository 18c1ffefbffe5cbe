//! The typed Patient Portal client, [`Client`]: one per process (it pools
//! and keeps connections alive), cheap to clone.
//!
//! Status handling follows the original client: `200/201/202` carry JSON,
//! `204` none, `404` means *absent*, `400` carries `{"error": "…"}`, anything
//! else is an error. Every failure is a [`PortalError`] naming the call.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use task_model::{HostTask, PortalTask, TaskId};
use url::Url;

use crate::config::{ClientConfig, redacted_url};
use crate::error::{
    Call, PortalError, body_excerpt, duplicate_task_id, is_duplicate_task_message,
    parse_retry_after,
};
use crate::wire::{
    ConsentPackage, ConsentPage, EnrollmentProfile, ErrorBody, NewConsent, PortalConsent,
    PortalSubject, PortalUser, Study, SubjectPage, SubjectUpdate, TaskPage, TaskQuery, TaskUpdate,
    UserList, UserUpdate,
};

/// The header that carries the API key.
pub const API_KEY_HEADER: &str = "X-Portal-API-Key";

/// A Patient Portal client. Build it once with [`Client::new`] and share it.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: HeaderValue,
    /// For scrubbing: a portal or proxy that echoes headers must not make
    /// the key part of an error.
    secret: SecretString,
    timeout: Duration,
    page_size: usize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &Call::new(Method::GET, &self.base).endpoint)
            .field("api_key", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("page_size", &self.page_size)
            .finish()
    }
}

/// What a successful exchange produced.
enum Answer {
    Body(Vec<u8>),
    NoContent,
    Absent,
}

impl Client {
    /// Builds the client: checks the URL (`http(s)://`, trailing `/`
    /// dropped), reads the TLS material, sets up pooling and the timeout.
    pub fn new(config: ClientConfig) -> Result<Client, PortalError> {
        let trimmed = config.base_url.trim().trim_end_matches('/');
        let base = Url::parse(trimmed)
            .map_err(|e| PortalError::config(format!("url {:?}", redacted_url(trimmed)), e))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(PortalError::config(
                format!("url {:?}", redacted_url(trimmed)),
                "expected an http:// or https:// URL",
            ));
        }
        if config.page_size == 0 {
            return Err(PortalError::config(
                "task_package_size",
                "must be at least 1",
            ));
        }
        let mut api_key =
            HeaderValue::from_str(config.api_key.expose_secret().trim()).map_err(|_| {
                PortalError::config(
                    "api_key",
                    "not a valid HTTP header value (control characters?)",
                )
            })?;
        api_key.set_sensitive(true);

        let tls = crate::tls::rustls_config(&config, base.scheme() == "https")?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            // The key is in a custom header that redirects would carry to
            // wherever they point; the portal API has no reason to redirect.
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .user_agent(concat!("portal-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PortalError::config("http client", e.without_url()))?;
        Ok(Client {
            http,
            base,
            api_key,
            secret: SecretString::from(config.api_key.expose_secret().trim().to_owned()),
            timeout: config.timeout,
            page_size: config.page_size,
        })
    }

    /// The portal's base URL (without trailing `/`).
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// List page size and package size.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    // ---- tasks ---------------------------------------------------------

    /// One page of `GET /tasks`.
    pub async fn list_tasks_page(
        &self,
        query: &TaskQuery,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<PortalTask>, PortalError> {
        let mut pairs = query.to_pairs();
        pairs.push(("limit", limit.to_string()));
        pairs.push(("offset", offset.to_string()));
        let url = self.url(&["tasks"], &pairs);
        let page: TaskPage = self.get_json(url).await?;
        Ok(page.tasks)
    }

    /// Every task matching `query`, page by page (see [`Client::collect_pages`]
    /// for when paging stops).
    pub async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<PortalTask>, PortalError> {
        let limit = self.page_size;
        let call = Call::new(Method::GET, &self.url(&["tasks"], &[]));
        collect_pages(
            call,
            limit,
            |t: &PortalTask| t.code.clone(),
            |offset| self.list_tasks_page(query, limit, offset),
        )
        .await
    }

    /// The portal's tasks for these host ids (whole), asked in chunks of
    /// the page size.
    pub async fn tasks_by_host_ids(&self, ids: &[TaskId]) -> Result<Vec<PortalTask>, PortalError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(self.page_size) {
            found.extend(
                self.list_tasks(&TaskQuery::by_host_ids(chunk.iter().cloned()))
                    .await?,
            );
        }
        Ok(found)
    }

    /// `GET /tasks/@{code}`; `None` if the portal has no such task.
    pub async fn get_task(&self, code: &str) -> Result<Option<PortalTask>, PortalError> {
        let url = self.url(&["tasks", &at(code)], &[]);
        self.get_optional_json(url).await
    }

    /// `POST /tasks` with one package (the caller sizes it). The package is
    /// accepted or rejected whole. The real portal's duplicate answer
    /// becomes [`PortalError::TaskAlreadySubmitted`].
    pub async fn submit_tasks(&self, tasks: &[HostTask]) -> Result<Vec<PortalTask>, PortalError> {
        #[derive(Serialize)]
        struct Package<'a> {
            tasks: &'a [HostTask],
        }
        let url = self.url(&["tasks"], &[]);
        let call = Call::new(Method::POST, &url);
        match self
            .exchange(Method::POST, url, Some(&Package { tasks }))
            .await
        {
            Ok(answer) => {
                let page: TaskPage = self.expect_json(&call, answer)?;
                Ok(page.tasks)
            }
            Err(PortalError::Rejected { call, message }) if is_duplicate_task_message(&message) => {
                let ids: Vec<&str> = tasks.iter().map(|t| t.host_system_id.as_str()).collect();
                Err(PortalError::TaskAlreadySubmitted {
                    call,
                    host_system_id: duplicate_task_id(&message, &ids),
                    message,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `PUT /tasks/@{code}` with host-side changes. `None` if the portal
    /// answered without a body.
    pub async fn update_task(
        &self,
        code: &str,
        update: &TaskUpdate,
    ) -> Result<Option<PortalTask>, PortalError> {
        let url = self.url(&["tasks", &at(code)], &[]);
        self.put_json(url, update).await
    }

    /// Acknowledges a task at the revision we read. If the task changed since,
    /// the portal answers 409: [`PortalError::Conflict`] (read it again).
    pub async fn acknowledge_task(&self, code: &str, revision: u64) -> Result<(), PortalError> {
        self.update_task(code, &TaskUpdate::acknowledge(revision))
            .await
            .map(|_| ())
    }

    /// `DELETE /tasks/@{code}`; `false` if the portal had no such task.
    pub async fn delete_task(&self, code: &str) -> Result<bool, PortalError> {
        let url = self.url(&["tasks", &at(code)], &[]);
        self.delete(url).await
    }

    // ---- subjects and users --------------------------------------------

    pub async fn list_subjects_page(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<PortalSubject>, PortalError> {
        let pairs = [("limit", limit.to_string()), ("offset", offset.to_string())];
        let page: SubjectPage = self.get_json(self.url(&["subjects"], &pairs)).await?;
        Ok(page.subjects)
    }

    pub async fn list_subjects(&self) -> Result<Vec<PortalSubject>, PortalError> {
        let limit = self.page_size;
        let call = Call::new(Method::GET, &self.url(&["subjects"], &[]));
        collect_pages(
            call,
            limit,
            |s: &PortalSubject| s.code.clone(),
            |offset| self.list_subjects_page(limit, offset),
        )
        .await
    }

    pub async fn update_subject(
        &self,
        code: &str,
        update: &SubjectUpdate,
    ) -> Result<Option<PortalSubject>, PortalError> {
        self.put_json(self.url(&["subjects", &at(code)], &[]), update)
            .await
    }

    /// `GET /subjects/@{code}/users`.
    pub async fn list_subject_users(
        &self,
        subject_code: &str,
    ) -> Result<Vec<PortalUser>, PortalError> {
        let url = self.url(&["subjects", &at(subject_code), "users"], &[]);
        let list: UserList = self.get_json(url).await?;
        Ok(list.users)
    }

    pub async fn update_subject_user(
        &self,
        subject_code: &str,
        user_code: &str,
        update: &UserUpdate,
    ) -> Result<Option<PortalUser>, PortalError> {
        let url = self.url(
            &["subjects", &at(subject_code), "users", &at(user_code)],
            &[],
        );
        self.put_json(url, update).await
    }

    // ---- consents --------------------------------------------------------

    /// Consents the host has not acknowledged, page by page.
    pub async fn list_unacknowledged_consents(&self) -> Result<Vec<PortalConsent>, PortalError> {
        let limit = self.page_size;
        let call = Call::new(Method::GET, &self.url(&["consents"], &[]));
        collect_pages(
            call,
            limit,
            |c: &PortalConsent| c.code.clone(),
            |offset| async move {
                let pairs = [
                    ("unacknowledged", "1".to_owned()),
                    ("limit", limit.to_string()),
                    ("offset", offset.to_string()),
                ];
                let page: ConsentPage = self.get_json(self.url(&["consents"], &pairs)).await?;
                Ok(page.consents)
            },
        )
        .await
    }

    /// Submits consents in packages of the page size, in order. On an error,
    /// the packages before the failing one have been stored.
    pub async fn submit_consents(
        &self,
        consents: &[NewConsent],
    ) -> Result<Vec<PortalConsent>, PortalError> {
        let mut stored = Vec::with_capacity(consents.len());
        for chunk in consents.chunks(self.page_size) {
            let url = self.url(&["consents"], &[]);
            let call = Call::new(Method::POST, &url);
            let body = ConsentPackage {
                consents: chunk.to_vec(),
            };
            let answer = self.exchange(Method::POST, url, Some(&body)).await?;
            let page: ConsentPage = self.expect_json(&call, answer)?;
            stored.extend(page.consents);
        }
        Ok(stored)
    }

    /// `PUT /consents/@{code}` (e.g. `{"acknowledged": true, "revision": r}`).
    pub async fn update_consent(
        &self,
        code: &str,
        update: &Value,
    ) -> Result<Option<PortalConsent>, PortalError> {
        self.put_json(self.url(&["consents", &at(code)], &[]), update)
            .await
    }

    /// `DELETE /consents/@{code}`; `false` if absent.
    pub async fn delete_consent(&self, code: &str) -> Result<bool, PortalError> {
        self.delete(self.url(&["consents", &at(code)], &[])).await
    }

    // ---- studies and enrollment profiles --------------------------------

    /// `GET /studies/{id}`; `None` if the portal has no such study.
    pub async fn get_study(&self, id: &str) -> Result<Option<Study>, PortalError> {
        self.get_optional_json(self.url(&["studies", id], &[]))
            .await
    }

    /// `POST /studies`.
    pub async fn create_study(&self, study: &Study) -> Result<Study, PortalError> {
        let url = self.url(&["studies"], &[]);
        let call = Call::new(Method::POST, &url);
        let answer = self.exchange(Method::POST, url, Some(study)).await?;
        self.expect_json(&call, answer)
    }

    /// `POST /enrollmentprofiles`; the portal's answer, if it sent one.
    pub async fn publish_enrollment_profile(
        &self,
        profile: &EnrollmentProfile,
    ) -> Result<Option<Value>, PortalError> {
        let url = self.url(&["enrollmentprofiles"], &[]);
        let call = Call::new(Method::POST, &url);
        match self.exchange(Method::POST, url, Some(profile)).await? {
            Answer::Body(bytes) => self.decode(&call, &bytes).map(Some),
            Answer::NoContent => Ok(None),
            Answer::Absent => Err(PortalError::NotFound { call }),
        }
    }

    // ---- plumbing --------------------------------------------------------

    /// Base URL + path segments (each percent-encoded) + query.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, PortalError> {
        let call = Call::new(Method::GET, &url);
        let answer = self.exchange::<()>(Method::GET, url, None).await?;
        self.expect_json(&call, answer)
    }

    async fn get_optional_json<T: DeserializeOwned>(
        &self,
        url: Url,
    ) -> Result<Option<T>, PortalError> {
        let call = Call::new(Method::GET, &url);
        match self.exchange::<()>(Method::GET, url, None).await? {
            Answer::Absent => Ok(None),
            answer => self.expect_json(&call, answer).map(Some),
        }
    }

    async fn put_json<B: Serialize, T: DeserializeOwned>(
        &self,
        url: Url,
        body: &B,
    ) -> Result<Option<T>, PortalError> {
        let call = Call::new(Method::PUT, &url);
        match self.exchange(Method::PUT, url, Some(body)).await? {
            Answer::Body(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Answer::Body(bytes) => self.decode(&call, &bytes).map(Some),
            Answer::NoContent => Ok(None),
            Answer::Absent => Err(PortalError::NotFound { call }),
        }
    }

    async fn delete(&self, url: Url) -> Result<bool, PortalError> {
        match self.exchange::<()>(Method::DELETE, url, None).await? {
            Answer::Absent => Ok(false),
            Answer::Body(_) | Answer::NoContent => Ok(true),
        }
    }

    /// One request and its status classification. The only place that maps
    /// an HTTP answer to success or a [`PortalError`].
    async fn exchange<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<Answer, PortalError> {
        let call = Call::new(method.clone(), &url);
        let started = Instant::now();
        let mut request = self
            .http
            .request(method, url)
            .header(API_KEY_HEADER, self.api_key.clone());
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| PortalError::Decode {
                call: call.clone(),
                path: ".".into(),
                message: format!("could not encode the request body: {e}"),
                truncated: false,
            })?;
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(bytes);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PortalError::from_transport(call.clone(), e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PortalError::from_transport(call.clone(), e))?;
        tracing::debug!(
            method = %call.method,
            endpoint = %call.endpoint,
            status,
            bytes = bytes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "portal call"
        );
        let text_of = |bytes: &[u8]| {
            let text = match serde_json::from_slice::<ErrorBody>(bytes) {
                Ok(body) => body.error,
                Err(_) => body_excerpt(bytes),
            };
            self.scrub(text)
        };
        match status {
            200..=202 => Ok(Answer::Body(bytes.to_vec())),
            204 => Ok(Answer::NoContent),
            404 => Ok(Answer::Absent),
            401 | 403 => Err(PortalError::Unauthorized { call, status }),
            400 => Err(PortalError::Rejected {
                call,
                message: text_of(&bytes),
            }),
            409 => Err(PortalError::Conflict {
                call,
                message: text_of(&bytes),
            }),
            _ => Err(PortalError::Status {
                call,
                status,
                body_excerpt: self.scrub(body_excerpt(&bytes)),
                retry_after,
            }),
        }
    }

    fn expect_json<T: DeserializeOwned>(
        &self,
        call: &Call,
        answer: Answer,
    ) -> Result<T, PortalError> {
        match answer {
            Answer::Body(bytes) => self.decode(call, &bytes),
            Answer::NoContent => Err(PortalError::Decode {
                call: call.clone(),
                path: ".".into(),
                message: "expected a JSON body, the portal answered 204 No Content".into(),
                truncated: false,
            }),
            Answer::Absent => Err(PortalError::NotFound { call: call.clone() }),
        }
    }

    /// Decodes JSON, naming the path of the first mismatch (`tasks[3].status`).
    fn decode<T: DeserializeOwned>(&self, call: &Call, bytes: &[u8]) -> Result<T, PortalError> {
        // Fast path; only a bad answer pays for path tracking.
        if let Ok(value) = serde_json::from_slice(bytes) {
            return Ok(value);
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| PortalError::Decode {
            call: call.clone(),
            path: e.path().to_string(),
            truncated: e.inner().is_eof(),
            message: self.scrub(e.into_inner().to_string()),
        })?;
        de.end().map_err(|e| PortalError::Decode {
            call: call.clone(),
            path: ".".into(),
            message: self.scrub(e.to_string()),
            truncated: false,
        })?;
        Ok(value)
    }

    /// Removes the API key from text the portal sent back.
    fn scrub(&self, text: String) -> String {
        let key = self.secret.expose_secret();
        if key.len() >= 4 && text.contains(key) {
            text.replace(key, "[redacted]")
        } else {
            text
        }
    }
}

/// `@{code}`, the portal's path form of a code.
fn at(code: &str) -> String {
    format!("@{code}")
}

/// Pages through a list: asks `fetch(offset)` until a page is shorter than
/// `limit` (the original rule) or empty. The portal's `count` is never used
/// to decide, so a portal reporting totals cannot make us loop; a portal
/// that ignores `offset` (a page of nothing new) is a [`PortalError::Protocol`].
pub async fn collect_pages<T, K, F, Fut>(
    call: Call,
    limit: usize,
    key: K,
    mut fetch: F,
) -> Result<Vec<T>, PortalError>
where
    K: Fn(&T) -> String,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<Vec<T>, PortalError>>,
{
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    let mut offset = 0;
    loop {
        let page = fetch(offset).await?;
        let n = page.len();
        if n == 0 {
            break;
        }
        let mut fresh = 0;
        for item in &page {
            if seen.insert(key(item)) {
                fresh += 1;
            }
        }
        if fresh == 0 {
            return Err(PortalError::Protocol {
                call,
                message: format!(
                    "the page at offset {offset} repeats items already listed (offset ignored?)"
                ),
            });
        }
        all.extend(page);
        if n < limit {
            break;
        }
        offset += n;
    }
    Ok(all)
}
