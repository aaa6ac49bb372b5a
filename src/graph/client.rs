//! The HTTP client for the three session calls and the few lookups around them.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::error::{CallKind, ErrorBody, ErrorClass, classify, parse_retry_after};
use crate::session::{Action, Mode, Outcome, OutcomeKind, SessionId, WorkbookRef};
use crate::text;

pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";

/// How a long-running createSession is polled (docs/graph.md, "Long-running create").
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    pub first: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            give_up_after: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub timeout: Duration,
    pub poll: PollPolicy,
    /// Ask for `Prefer: respond-async` on create; both answers are handled either way.
    pub respond_async: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { timeout: Duration::from_secs(30), poll: PollPolicy::default(), respond_async: true }
    }
}

/// The most of an answer's body that is read: Graph's answers here are a few hundred bytes, and an
/// endless or huge body must not grow memory.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads a body up to `MAX_BODY`; a longer one is an error of its own.
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(format!("the answer is larger than {} KiB; refusing to read it", MAX_BODY / 1024));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("the answer broke off: {}", error_chain(&e)))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the answer is larger than {} KiB; stopped reading it", MAX_BODY / 1024));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("the Graph URL {0:?} is not a valid URL; use something like {DEFAULT_GRAPH_URL}")]
    BadUrl(String),
    #[error(
        "the Graph URL {0:?} uses plain http:// to a host that is not loopback; tokens would travel unencrypted, so use https://"
    )]
    Insecure(String),
    #[error(
        "the Graph URL {0:?} carries a user name or password; tokens are the only credentials sent, so remove them"
    )]
    Credentials(String),
    #[error("the HTTP client could not be built: {0}")]
    Http(#[from] reqwest::Error),
}

/// What every call reports, success or failure: what Microsoft support asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallMeta {
    pub http_status: Option<u16>,
    pub request_id: Option<String>,
    pub client_request_id: String,
    pub latency: Duration,
    /// HTTP requests the call made (a long-running create polls): what it costs of the budget.
    pub requests: u32,
}

impl CallMeta {
    fn outcome(&self, action: Action, kind: OutcomeKind, at: chrono::DateTime<chrono::Utc>) -> Outcome {
        Outcome {
            at,
            action,
            kind,
            latency_ms: self.latency.as_millis().try_into().unwrap_or(u64::MAX),
            http_status: self.http_status,
            codes: Vec::new(),
            request_id: self.request_id.clone(),
            client_request_id: Some(self.client_request_id.clone()),
            message: None,
        }
    }

    pub fn ok_outcome(&self, action: Action, at: chrono::DateTime<chrono::Utc>) -> Outcome {
        self.outcome(action, OutcomeKind::Ok, at)
    }
}

#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub value: T,
    pub meta: CallMeta,
}

/// A failed call, classified.
#[derive(Debug, Clone)]
pub struct GraphError {
    pub class: ErrorClass,
    pub meta: CallMeta,
    pub codes: Vec<String>,
    pub message: Option<String>,
    pub retry_after: Option<Duration>,
}

impl GraphError {
    fn local(class: ErrorClass, meta: CallMeta, message: String) -> Self {
        GraphError { class, meta, codes: Vec::new(), message: Some(message), retry_after: None }
    }

    pub fn outcome(&self, action: Action, at: chrono::DateTime<chrono::Utc>) -> Outcome {
        let mut outcome = self.meta.outcome(action, self.class.outcome_kind(), at);
        outcome.codes = self.codes.clone();
        outcome.message = match (&self.message, self.retry_after) {
            (Some(message), Some(wait)) => Some(format!("{message}; retry after {}", wait_text(wait))),
            (None, Some(wait)) => Some(format!("retry after {}", wait_text(wait))),
            (message, None) => message.clone(),
        };
        outcome
    }
}

/// A `Retry-After` as read: waits are read up to a day (docs/graph.md), so a day means "a day or
/// more", whatever the server wrote.
fn wait_text(wait: Duration) -> String {
    if wait >= super::error::LONGEST_RETRY_AFTER { "a day or more".into() } else { crate::time::format_duration(wait) }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.class {
            ErrorClass::Expired => "session expired",
            ErrorClass::Dead => "session is dead",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Auth => "not authorized",
            ErrorClass::Transient => "temporary failure",
            ErrorClass::Failed => "request failed",
        };
        f.write_str(what)?;
        if let Some(status) = self.meta.http_status {
            write!(f, " (HTTP {status}")?;
            if !self.codes.is_empty() {
                write!(f, " {}", self.codes.join("/"))?;
            }
            f.write_str(")")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        if let Some(wait) = self.retry_after {
            write!(f, "; retry after {}", wait_text(wait))?;
        }
        if let Some(id) = &self.meta.request_id {
            write!(f, " [request-id {id}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for GraphError {}

#[derive(Debug, Clone, Deserialize)]
pub struct Me {
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    #[serde(rename = "userPrincipalName", default)]
    pub user_principal_name: Option<String>,
}

/// One request as `send` takes it.
struct Call<'a> {
    method: Method,
    url: Url,
    session: Option<&'a SessionId>,
    body: Option<serde_json::Value>,
    prefer_async: bool,
    kind: CallKind,
}

impl Call<'_> {
    fn new(method: Method, url: Url, kind: CallKind) -> Self {
        Call { method, url, session: None, body: None, prefer_async: false, kind }
    }
}

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: Url,
    options: ClientOptions,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient").field("base", &self.base.as_str()).finish()
    }
}

/// rustls is built without a default crypto provider (no C toolchain step); this picks ring, once.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Refuses URLs that would send a token in the clear; loopback is allowed for the simulator.
pub fn check_base_url(raw: &str) -> Result<Url, ClientBuildError> {
    let mut url = Url::parse(raw.trim()).map_err(|_| ClientBuildError::BadUrl(raw.to_string()))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => return Err(ClientBuildError::BadUrl(raw.to_string())),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(ClientBuildError::Insecure(raw.to_string())),
        _ => return Err(ClientBuildError::BadUrl(raw.to_string())),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientBuildError::BadUrl(raw.to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(ClientBuildError::Credentials(url.to_string()));
    }
    // Joining segments later needs a path without a trailing slash.
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

impl GraphClient {
    pub fn new(base_url: &str, options: ClientOptions) -> Result<Self, ClientBuildError> {
        install_tls_provider();
        let base = check_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            // A redirect could carry the bearer token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wbsessions/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(GraphClient { http, base, options })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn is_loopback(&self) -> bool {
        self.base.scheme() == "http"
    }

    fn url_for(&self, workbook: &WorkbookRef, tail: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(workbook.segments().iter().map(String::as_str));
            segments.extend(tail);
        }
        url
    }

    /// A URL the server handed back (Location, resourceLocation): taken exactly as given, but only
    /// on the Graph host, because the bearer token goes with it.
    fn follow(&self, given: &str) -> Result<Url, String> {
        let url = self.base.join(given).map_err(|_| format!("the server sent an unusable URL {given:?}"))?;
        if url.origin() != self.base.origin() {
            return Err(format!(
                "the server sent a URL on another host ({}); not following it with the token",
                url.origin().ascii_serialization()
            ));
        }
        Ok(url)
    }

    async fn send(
        &self,
        token: &str,
        call: Call<'_>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>, CallMeta), GraphError> {
        let Call { method, url, session, body, prefer_async, kind } = call;
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut meta = CallMeta { client_request_id: client_request_id.clone(), requests: 1, ..CallMeta::default() };
        let auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            GraphError::local(
                ErrorClass::Auth,
                meta.clone(),
                "the access token holds characters that cannot be sent".into(),
            )
        })?;
        let mut request = self
            .http
            .request(method, url)
            .timeout(self.options.timeout)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header("client-request-id", &client_request_id)
            .header("return-client-request-id", "true");
        if prefer_async {
            request = request.header("Prefer", "respond-async");
        }
        if let Some(id) = session {
            // SessionId guarantees visible ASCII, so this cannot fail; stay defensive anyway.
            let value = HeaderValue::from_str(id.as_str()).map_err(|_| {
                GraphError::local(ErrorClass::Dead, meta.clone(), "the session id cannot travel in a header".into())
            })?;
            request = request.header("workbook-session-id", value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Instant::now();
        let result = request.send().await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                meta.latency = started.elapsed();
                let why = if e.is_timeout() {
                    format!("no answer within {}", crate::time::format_duration(self.options.timeout))
                } else if e.is_connect() {
                    format!("could not connect to {}", self.base.host_str().unwrap_or("the Graph host"))
                } else {
                    format!("the request failed: {}", error_chain(&e))
                };
                return Err(GraphError::local(ErrorClass::Transient, meta, why));
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        meta.http_status = Some(status.as_u16());
        meta.request_id = header_text(&headers, "request-id").map(|id| text::clean(&id, text::MAX_TOKEN));
        let bytes = match read_capped(response).await {
            Ok(b) => b,
            Err(why) => {
                meta.latency = started.elapsed();
                return Err(GraphError::local(ErrorClass::Transient, meta, why));
            }
        };
        meta.latency = started.elapsed();
        if status.is_success() {
            return Ok((status, headers, bytes, meta));
        }
        Err(failure(status.as_u16(), header_text(&headers, RETRY_AFTER.as_str()), &bytes, kind, meta))
    }

    /// createSession: `201` at once, or `202` + operation polling; a `504` is sent again (bounded).
    pub async fn create_session(
        &self,
        token: &str,
        workbook: &WorkbookRef,
        mode: Mode,
    ) -> Result<Reply<SessionId>, GraphError> {
        let url = self.url_for(workbook, &["workbook", "createSession"]);
        let started = Instant::now();
        // A 504 here is sent again by the caller's dispatcher (docs/graph.md, "Errors"), which sees
        // every request.
        let call = Call {
            body: Some(json!({ "persistChanges": mode.persist_changes() })),
            prefer_async: self.options.respond_async,
            ..Call::new(Method::POST, url, CallKind::Create)
        };
        let (status, headers, bytes, mut meta) = self.send(token, call).await?;
        let id = if status == StatusCode::ACCEPTED {
            let location = header_text(&headers, LOCATION.as_str()).ok_or_else(|| {
                GraphError::local(ErrorClass::Transient, meta.clone(), "202 Accepted without a Location header".into())
            })?;
            let first = meta.requests;
            let (id, last) = self.poll_operation(token, &location, meta.clone()).await.map_err(|mut e| {
                e.meta.requests += first;
                e
            })?;
            meta = CallMeta { requests: first + last.requests, ..last };
            id
        } else {
            parse_session_id(&bytes).map_err(|why| GraphError::local(ErrorClass::Transient, meta.clone(), why))?
        };
        meta.latency = started.elapsed();
        Ok(Reply { value: id, meta })
    }

    /// Polls a long-running create; the returned meta (or the error's) counts every poll.
    async fn poll_operation(
        &self,
        token: &str,
        location: &str,
        meta: CallMeta,
    ) -> Result<(SessionId, CallMeta), GraphError> {
        let sent = std::sync::atomic::AtomicU32::new(0);
        match self.poll_operation_counted(token, location, meta, &sent).await {
            Ok((id, mut meta)) => {
                meta.requests = sent.load(std::sync::atomic::Ordering::Relaxed);
                Ok((id, meta))
            }
            Err(mut e) => {
                e.meta.requests = sent.load(std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
        }
    }

    async fn send_counted(
        &self,
        sent: &std::sync::atomic::AtomicU32,
        token: &str,
        call: Call<'_>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>, CallMeta), GraphError> {
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.send(token, call).await
    }

    async fn poll_operation_counted(
        &self,
        token: &str,
        location: &str,
        mut meta: CallMeta,
        sent: &std::sync::atomic::AtomicU32,
    ) -> Result<(SessionId, CallMeta), GraphError> {
        #[derive(Deserialize)]
        struct Operation {
            #[serde(default)]
            status: Option<String>,
            #[serde(rename = "resourceLocation", default)]
            resource_location: Option<String>,
            #[serde(default)]
            error: Option<serde_json::Value>,
        }
        let url = self.follow(location).map_err(|why| GraphError::local(ErrorClass::Failed, meta.clone(), why))?;
        let policy = self.options.poll;
        let started = Instant::now();
        let mut wait = policy.first;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(policy.max);
            // The session may exist already: a throttled or failed poll is polled again, never
            // answered with a second createSession that would leave the first one open.
            let (_, _, bytes, m) = match self
                .send_counted(sent, token, Call::new(Method::GET, url.clone(), CallKind::Other))
                .await
            {
                Err(e)
                    if matches!(e.class, ErrorClass::Throttled | ErrorClass::Transient)
                        && started.elapsed() < policy.give_up_after =>
                {
                    tracing::info!(request_id = ?e.meta.request_id, "polling the create operation failed; polling again");
                    if let Some(after) = e.retry_after {
                        wait = after.clamp(policy.first, policy.max);
                    }
                    continue;
                }
                other => other?,
            };
            meta = m;
            let op: Operation = serde_json::from_slice(&bytes).map_err(|e| {
                GraphError::local(ErrorClass::Transient, meta.clone(), format!("unreadable operation status: {e}"))
            })?;
            match op.status.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("succeeded") => {
                    let resource = op.resource_location.ok_or_else(|| {
                        GraphError::local(
                            ErrorClass::Transient,
                            meta.clone(),
                            "the operation succeeded without a resourceLocation".into(),
                        )
                    })?;
                    let url = self
                        .follow(&resource)
                        .map_err(|why| GraphError::local(ErrorClass::Failed, meta.clone(), why))?;
                    let mut pause = policy.first;
                    let (_, _, bytes, m) = loop {
                        match self.send_counted(sent, token, Call::new(Method::GET, url.clone(), CallKind::Other)).await
                        {
                            Err(e)
                                if matches!(e.class, ErrorClass::Throttled | ErrorClass::Transient)
                                    && started.elapsed() < policy.give_up_after =>
                            {
                                tokio::time::sleep(e.retry_after.map_or(pause, |a| a.clamp(policy.first, policy.max)))
                                    .await;
                                pause = (pause * 2).min(policy.max);
                            }
                            other => break other?,
                        }
                    };
                    let id = parse_session_id(&bytes)
                        .map_err(|why| GraphError::local(ErrorClass::Transient, m.clone(), why))?;
                    return Ok((id, m));
                }
                Some("failed") => {
                    let wrapped = json!({ "error": op.error.clone().unwrap_or(serde_json::Value::Null) });
                    let body = ErrorBody::parse(wrapped.to_string().as_bytes());
                    let class = classify(meta.http_status.unwrap_or(200), &body, CallKind::Create, false);
                    // A failed operation arrives with HTTP 200, so the status says nothing; never call it success.
                    let class = if class == ErrorClass::Failed || class == ErrorClass::Expired {
                        ErrorClass::Failed
                    } else {
                        class
                    };
                    meta.request_id =
                        meta.request_id.or_else(|| text::clean_opt(body.request_id.as_deref(), text::MAX_TOKEN));
                    return Err(GraphError {
                        class,
                        meta,
                        codes: body.all_codes().iter().take(8).map(|c| text::clean(c, text::MAX_TOKEN)).collect(),
                        message: Some(
                            text::clean_opt(body.message.as_deref(), text::MAX_MESSAGE)
                                .unwrap_or_else(|| "the createSession operation failed".into()),
                        ),
                        retry_after: None,
                    });
                }
                // notStarted, running, and anything unknown: still running.
                _ => {}
            }
            if started.elapsed() >= policy.give_up_after {
                return Err(GraphError::local(
                    ErrorClass::Transient,
                    meta,
                    format!(
                        "the createSession operation did not finish within {}",
                        crate::time::format_duration(policy.give_up_after)
                    ),
                ));
            }
        }
    }

    pub async fn refresh_session(
        &self,
        token: &str,
        workbook: &WorkbookRef,
        id: &SessionId,
    ) -> Result<Reply<()>, GraphError> {
        self.sessionful(token, workbook, id, "refreshSession").await
    }

    pub async fn close_session(
        &self,
        token: &str,
        workbook: &WorkbookRef,
        id: &SessionId,
    ) -> Result<Reply<()>, GraphError> {
        self.sessionful(token, workbook, id, "closeSession").await
    }

    async fn sessionful(
        &self,
        token: &str,
        workbook: &WorkbookRef,
        id: &SessionId,
        call: &str,
    ) -> Result<Reply<()>, GraphError> {
        let url = self.url_for(workbook, &["workbook", call]);
        let (_, _, _, meta) = self
            .send(
                token,
                Call { session: Some(id), body: Some(json!({})), ..Call::new(Method::POST, url, CallKind::Sessionful) },
            )
            .await?;
        Ok(Reply { value: (), meta })
    }

    /// refreshSession for several sessions in one `$batch` request (docs/graph.md, "Batching"),
    /// each on its own workbook: Graph may run a batch's items at once, and a workbook takes one
    /// call at a time. The outer error is the batch's own (nothing is known of the items then);
    /// an answer that came but cannot be read, or does not answer each request, is `Failed`: the
    /// batch did not work. Otherwise each item's answer, in the order given, classified as a
    /// plain call's would be. Each item counts as one request: Graph throttles them one by one.
    pub async fn refresh_batch(
        &self,
        token: &str,
        items: &[(&WorkbookRef, &SessionId)],
    ) -> Result<Reply<Vec<Result<Reply<()>, GraphError>>>, GraphError> {
        let requests: Vec<serde_json::Value> = items
            .iter()
            .enumerate()
            .map(|(i, (workbook, id))| {
                let url = self.url_for(workbook, &["workbook", "refreshSession"]);
                let relative = url.path().strip_prefix(self.base.path()).unwrap_or(url.path());
                json!({
                    "id": i.to_string(),
                    "method": "POST",
                    "url": relative,
                    "headers": { "workbook-session-id": id.as_str(), "Content-Type": "application/json" },
                    "body": {},
                })
            })
            .collect();
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push("$batch");
        }
        let call =
            Call { body: Some(json!({ "requests": requests })), ..Call::new(Method::POST, url, CallKind::Other) };
        let (_, _, bytes, outer) = self.send(token, call).await.map_err(|mut e| {
            // An answer came (too long, broken off): the batch itself did not work.
            if e.meta.http_status.is_some_and(|s| (200..300).contains(&s)) {
                e.class = ErrorClass::Failed;
            }
            e
        })?;
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            responses: Vec<ItemAnswer>,
        }
        #[derive(Deserialize)]
        struct ItemAnswer {
            #[serde(default)]
            id: Option<serde_json::Value>,
            #[serde(default)]
            status: Option<u16>,
            #[serde(default)]
            headers: serde_json::Map<String, serde_json::Value>,
            #[serde(default)]
            body: Option<serde_json::Value>,
        }
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| {
            GraphError::local(ErrorClass::Failed, outer.clone(), format!("unreadable $batch answer: {e}"))
        })?;
        let mut results: Vec<Option<Result<Reply<()>, GraphError>>> = items.iter().map(|_| None).collect();
        for item in answer.responses {
            // Ids are sent as "0", "1", ...; a server may echo them as numbers.
            let index = match &item.id {
                Some(serde_json::Value::String(s)) => s.parse::<usize>().ok(),
                Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
                _ => None,
            };
            let Some(slot) = index.and_then(|i| results.get_mut(i)).filter(|slot| slot.is_none()) else { continue };
            let header = |name: &str| {
                item.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            let meta = CallMeta {
                http_status: item.status,
                request_id: header("request-id")
                    .map(|id| text::clean(&id, text::MAX_TOKEN))
                    .or_else(|| outer.request_id.clone()),
                requests: 1,
                ..outer.clone()
            };
            let Some(status) = item.status else { continue };
            *slot = Some(if (200..300).contains(&status) {
                Ok(Reply { value: (), meta })
            } else {
                let body = item.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
                Err(failure(status, header("retry-after"), body.as_bytes(), CallKind::Sessionful, meta))
            });
        }
        let mut value = Vec::with_capacity(results.len());
        for (i, slot) in results.into_iter().enumerate() {
            let Some(answer) = slot else {
                return Err(GraphError::local(
                    ErrorClass::Failed,
                    outer,
                    format!("the $batch answer did not answer request {i} with a status"),
                ));
            };
            value.push(answer);
        }
        Ok(Reply { value, meta: outer })
    }

    /// Turns `/me/drive/root:/a.xlsx:` into `me/drive/items/{id}`; other forms come back as they are.
    pub async fn resolve(&self, token: &str, workbook: &WorkbookRef) -> Result<Reply<WorkbookRef>, GraphError> {
        if !workbook.is_by_path() {
            return Ok(Reply { value: workbook.clone(), meta: CallMeta::default() });
        }
        #[derive(Deserialize)]
        struct Item {
            id: String,
        }
        let url = self.url_for(workbook, &[]);
        let (_, _, bytes, meta) = self.send(token, Call::new(Method::GET, url, CallKind::Other)).await?;
        let item: Item = serde_json::from_slice(&bytes).map_err(|e| {
            GraphError::local(ErrorClass::Transient, meta.clone(), format!("unreadable drive item: {e}"))
        })?;
        // The id goes into URLs from now on: it must read as an item id of its own.
        WorkbookRef::parse(&format!("me/drive/items/{}", item.id)).map_err(|e| {
            GraphError::local(ErrorClass::Failed, meta.clone(), format!("the server returned an unusable item id: {e}"))
        })?;
        Ok(Reply { value: workbook.with_item(&item.id), meta })
    }

    /// `GET /me`: who the token belongs to.
    pub async fn me(&self, token: &str) -> Result<Reply<Me>, GraphError> {
        let mut url = self.base.clone();
        if let Ok(mut s) = url.path_segments_mut() {
            s.push("me");
        }
        let (_, _, bytes, meta) = self.send(token, Call::new(Method::GET, url, CallKind::Other)).await?;
        let me = serde_json::from_slice(&bytes).map_err(|e| {
            GraphError::local(ErrorClass::Transient, meta.clone(), format!("unreadable /me answer: {e}"))
        })?;
        Ok(Reply { value: me, meta })
    }
}

/// A failed answer, classified: from a plain call, or from one item of a `$batch`.
fn failure(status: u16, retry_after: Option<String>, bytes: &[u8], kind: CallKind, mut meta: CallMeta) -> GraphError {
    let body = ErrorBody::parse(bytes);
    let retry_after = retry_after.and_then(|v| parse_retry_after(&v, chrono::Utc::now()));
    let class = classify(status, &body, kind, retry_after.is_some());
    meta.request_id = meta.request_id.or_else(|| text::clean_opt(body.request_id.as_deref(), text::MAX_TOKEN));
    if let Some(echoed) = body.client_request_id.as_ref().filter(|c| **c != meta.client_request_id) {
        tracing::debug!(sent = %meta.client_request_id, echoed = %text::clean(echoed, text::MAX_TOKEN), "client-request-id differs in the error body");
    }
    let message = match body.message.as_deref() {
        Some(m) => text::clean_opt(Some(m), text::MAX_MESSAGE),
        None => text::clean_opt(Some(&String::from_utf8_lossy(bytes)), 200),
    };
    let codes = body.all_codes().iter().take(8).map(|c| text::clean(c, text::MAX_TOKEN)).collect();
    GraphError { class, meta, codes, message, retry_after }
}

fn parse_session_id(bytes: &[u8]) -> Result<SessionId, String> {
    #[derive(Deserialize)]
    struct Created {
        id: Option<String>,
    }
    let created: Created =
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable createSession answer: {e}"))?;
    let raw = created.id.ok_or("the createSession answer has no session id")?;
    SessionId::new(&raw).map_err(|e| format!("the server returned an unusable session id: {e}"))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
