//! The way to the Graph host, and the only one: the base URL checked once (no plain http:// but
//! to loopback, no credentials in it), no redirects followed, nothing sent to another origin,
//! the bearer token added here. Our own calls (`send`) are JSON with their answers read whole
//! up to `MAX_BODY`; any other request (`forward`, for the proxy) travels as it came, its body
//! streamed both ways.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use url::Url;

use super::error::{CallKind, ErrorBody, ErrorClass, classify, parse_retry_after};
use crate::session::SessionId;
use crate::text;

pub(crate) const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";

/// The most of an answer's body that is read for our own calls: Graph's answers to them are a
/// few hundred bytes, and an endless or huge body must not grow memory.
pub(crate) const MAX_BODY: usize = 64 * 1024;

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
    /// For refreshSession, closeSession and their `$batch`: an answer that takes longer means
    /// the workbook is in trouble, and the call should not hold a slot as long as a create may.
    pub session_timeout: Duration,
    pub poll: PollPolicy,
    /// Ask for `Prefer: respond-async` on create; both answers are handled either way.
    pub respond_async: bool,
}

impl ClientOptions {
    /// Options for `request_timeout`: session calls get a third of it, between 2 s and 10 s.
    pub fn with_timeout(timeout: Duration) -> Self {
        let session_timeout = (timeout / 3).clamp(Duration::from_secs(2), Duration::from_secs(10)).min(timeout);
        ClientOptions { timeout, session_timeout, poll: PollPolicy::default(), respond_async: true }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions::with_timeout(Duration::from_secs(30))
    }
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

#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub value: T,
    pub meta: CallMeta,
}

/// A failed call: Graph's facts (status, codes, `Retry-After`, request ids, message) and
/// Microsoft's classification of them. What they mean for a session is the engine's to say.
#[derive(Debug, Clone)]
pub struct GraphError {
    pub class: ErrorClass,
    pub meta: CallMeta,
    pub codes: Vec<String>,
    pub message: Option<String>,
    pub retry_after: Option<Duration>,
}

impl GraphError {
    pub(crate) fn local(class: ErrorClass, meta: CallMeta, message: String) -> Self {
        GraphError { class, meta, codes: Vec::new(), message: Some(message), retry_after: None }
    }

    /// The message with the wait Graph asked for, as an outcome keeps it.
    pub(crate) fn message_with_wait(&self) -> Option<String> {
        match (&self.message, self.retry_after) {
            (Some(message), Some(wait)) => Some(format!("{message}; retry after {}", wait_text(wait))),
            (None, Some(wait)) => Some(format!("retry after {}", wait_text(wait))),
            (message, None) => message.clone(),
        }
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

/// Reads a body up to `MAX_BODY`; a longer one is an error of its own.
pub(crate) async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
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

/// rustls is built without a default crypto provider (no C toolchain step); this picks ring, once.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Refuses URLs that would send a token in the clear; loopback is allowed for the simulator.
pub(crate) fn check_base_url(raw: &str) -> Result<Url, ClientBuildError> {
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

/// One of our own requests.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub url: Url,
    pub session: Option<&'a SessionId>,
    pub body: Option<serde_json::Value>,
    pub(crate) prefer_async: bool,
    pub kind: CallKind,
    /// Shorter than the transport's own, for session calls.
    pub timeout: Option<Duration>,
}

impl Call<'_> {
    pub(crate) fn new(method: Method, url: Url, kind: CallKind) -> Self {
        Call { method, url, session: None, body: None, prefer_async: false, kind, timeout: None }
    }
}

/// What a successful call of ours answered.
pub(crate) struct Answered {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub meta: CallMeta,
}

/// A request someone else made, to go to Graph as it came.
pub struct Forward<B> {
    pub method: Method,
    /// Below the base URL, starting with `/`: `/me/drive/items/X/workbook/worksheets?$top=1`.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: B,
    /// The most of the request's body that is sent; a longer one is cut off with an error.
    pub body_limit: u64,
}

/// Why a forwarded request did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The path would leave the Graph base (another host, `..` above it, a full URL).
    #[error("{0}")]
    Refused(String),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    /// No answer: the connection failed or timed out.
    #[error("{0}")]
    Unanswered(String),
}

/// Graph's answer to a forwarded request: its status and headers now, its body as it comes.
pub struct Forwarded {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub request_id: Option<String>,
    response: reqwest::Response,
    /// The longest wait for the next piece of the body.
    idle: Duration,
}

impl Forwarded {
    /// The body as it arrives, cut off with an error past `limit` bytes, or when nothing of it
    /// comes for the request timeout: an answer that stalls must not hold its workbook forever.
    pub fn body(self, limit: u64) -> impl Stream<Item = Result<Bytes, ForwardError>> + Send + 'static {
        let idle = self.idle;
        let chunks = Box::pin(self.response.bytes_stream());
        futures_util::stream::unfold((chunks, 0u64, false), move |(mut chunks, seen, over)| async move {
            if over {
                return None;
            }
            let next = match tokio::time::timeout(idle, chunks.next()).await {
                Err(_) => Err(ForwardError::Unanswered(format!(
                    "the answer stalled: nothing came for {}",
                    crate::time::format_duration(idle)
                ))),
                Ok(None) => return None,
                Ok(Some(Err(e))) => Err(ForwardError::Unanswered(format!("the answer broke off: {}", error_chain(&e)))),
                Ok(Some(Ok(chunk))) => {
                    let seen = seen.saturating_add(chunk.len() as u64);
                    if seen > limit {
                        Err(ForwardError::TooLarge(limit))
                    } else {
                        return Some((Ok(chunk), (chunks, seen, false)));
                    }
                }
            };
            // An error ends the stream: what follows it is not passed on.
            Some((next, (chunks, seen, true)))
        })
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110, 7.6.1), and those that
/// this side sets itself.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// The headers of one side that may reach the other.
pub(crate) fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named_in_connection: Vec<String> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .collect();
    headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name) && !named_in_connection.iter().any(|n| n == name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport").field("base", &self.base.as_str()).finish()
    }
}

impl Transport {
    /// How long a call may take: for a caller's body, and for a caller that stops reading.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, ClientBuildError> {
        install_tls_provider();
        let base = check_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // A redirect could carry the bearer token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wbsessions/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Transport { http, base, timeout })
    }

    pub(crate) fn base_url(&self) -> &Url {
        &self.base
    }

    /// The base URL with these segments added, each percent-encoded.
    pub(crate) fn url_for<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        url
    }

    /// A URL the server handed back (Location, resourceLocation): taken exactly as given, but only
    /// on the Graph host, because the bearer token goes with it.
    pub(crate) fn follow(&self, given: &str) -> Result<Url, String> {
        let url = self.base.join(given).map_err(|_| format!("the server sent an unusable URL {given:?}"))?;
        if url.origin() != self.base.origin() {
            return Err(format!(
                "the server sent a URL on another host ({}); not following it with the token",
                url.origin().ascii_serialization()
            ));
        }
        Ok(url)
    }

    fn bearer(token: &str) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// One of our own calls: the answer read whole (up to `MAX_BODY`), a failure classified.
    pub(crate) async fn send(&self, token: &str, call: Call<'_>) -> Result<Answered, GraphError> {
        let Call { method, url, session, body, prefer_async, kind, timeout } = call;
        let timeout = timeout.unwrap_or(self.timeout);
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut meta = CallMeta { client_request_id: client_request_id.clone(), requests: 1, ..CallMeta::default() };
        let auth = Self::bearer(token).ok_or_else(|| {
            GraphError::local(
                ErrorClass::Auth,
                meta.clone(),
                "the access token holds characters that cannot be sent".into(),
            )
        })?;
        let mut request = self
            .http
            .request(method, url)
            .timeout(timeout)
            .header(AUTHORIZATION, auth)
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
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                meta.latency = started.elapsed();
                return Err(GraphError::local(ErrorClass::Transient, meta, self.why_unanswered(&e, timeout)));
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        meta.http_status = Some(status.as_u16());
        meta.request_id = header_text(&headers, "request-id").map(|id| text::clean(&id, text::MAX_TOKEN));
        let body = match read_capped(response).await {
            Ok(b) => b,
            Err(why) => {
                meta.latency = started.elapsed();
                return Err(GraphError::local(ErrorClass::Transient, meta, why));
            }
        };
        meta.latency = started.elapsed();
        if status.is_success() {
            return Ok(Answered { status, headers, body, meta });
        }
        Err(failure(status.as_u16(), header_text(&headers, RETRY_AFTER.as_str()), &body, kind, meta))
    }

    fn why_unanswered(&self, e: &reqwest::Error, timeout: Duration) -> String {
        if e.is_timeout() {
            format!("no answer within {}", crate::time::format_duration(timeout))
        } else if e.is_connect() {
            format!("could not connect to {}", self.base.host_str().unwrap_or("the Graph host"))
        } else {
            format!("the request failed: {}", error_chain(e))
        }
    }

    /// Where a caller's path goes: under the base URL, or nowhere. `..`, a full URL or a path
    /// that climbs out of the base are refused, so the token only goes where Graph is.
    pub fn target(&self, path_and_query: &str) -> Result<Url, ForwardError> {
        let refuse = |why: &str| ForwardError::Refused(format!("{why}: {}", text::clean(path_and_query, 200)));
        if !path_and_query.starts_with('/') || path_and_query.starts_with("//") {
            return Err(refuse("not a path below the Graph base URL"));
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let decoded = percent_decoded_lower(path);
        if decoded.split('/').any(|segment| segment == ".." || segment == ".") || decoded.contains('\\') {
            return Err(refuse("a path with . or .. segments is refused"));
        }
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path()));
        url.set_query(query);
        let inside = url.path().starts_with(&format!("{}/", self.base.path()));
        if url.origin() != self.base.origin() || !inside {
            return Err(refuse("the path leaves the Graph base URL"));
        }
        Ok(url)
    }

    /// Sends a caller's request to Graph with the token, and returns the answer as it starts to
    /// come: its body is read by whoever forwards it on (`Forwarded::body`). The caller's own
    /// `Authorization` never reaches Graph; hop-by-hop headers stay on their hop.
    pub async fn forward<B, E>(&self, token: &str, request: Forward<B>) -> Result<Forwarded, ForwardError>
    where
        B: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let url = self.target(&request.path_and_query)?;
        let auth = Self::bearer(token)
            .ok_or_else(|| ForwardError::Refused("the access token holds characters that cannot be sent".into()))?;
        let mut headers = end_to_end(&request.headers);
        headers.remove(AUTHORIZATION);
        headers.remove("cookie");
        headers.insert(AUTHORIZATION, auth);
        if !headers.contains_key("client-request-id")
            && let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        {
            headers.insert("client-request-id", id);
        }
        let declared = headers.get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let limit = request.body_limit;
        if declared.is_some_and(|n| n > limit) {
            return Err(ForwardError::TooLarge(limit));
        }
        let mut sent: u64 = 0;
        let cut_off = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = cut_off.clone();
        let body = request.body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).and_then(
            move |chunk: Bytes| {
                sent = sent.saturating_add(chunk.len() as u64);
                let over = sent > limit;
                if over {
                    cut.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                async move {
                    if over {
                        Err(Box::new(ForwardError::TooLarge(limit)) as Box<dyn std::error::Error + Send + Sync>)
                    } else {
                        Ok(chunk)
                    }
                }
            },
        );
        // The request and the answer's headers within the request timeout, as for our own calls:
        // a Graph that never answers, or a caller whose body trickles, holds the workbook no longer.
        let sending =
            self.http.request(request.method, url).headers(headers).body(reqwest::Body::wrap_stream(body)).send();
        let response = match tokio::time::timeout(self.timeout, sending).await {
            Err(_) => {
                let waited = crate::time::format_duration(self.timeout);
                return Err(ForwardError::Unanswered(format!("no answer within {waited}")));
            }
            Ok(sent) => sent.map_err(|e| {
                if cut_off.load(std::sync::atomic::Ordering::Relaxed) {
                    ForwardError::TooLarge(limit)
                } else {
                    ForwardError::Unanswered(self.why_unanswered(&e, self.timeout))
                }
            })?,
        };
        let status = response.status();
        let headers = end_to_end(response.headers());
        let request_id = header_text(&headers, "request-id").map(|id| text::clean(&id, text::MAX_TOKEN));
        Ok(Forwarded { status, headers, request_id, response, idle: self.timeout })
    }
}

/// `%2E%2e` reads as `..` to some servers: a path is judged as they would read it.
fn percent_decoded_lower(path: &str) -> String {
    let mut decoded = path.to_string();
    // Twice: `%252e` decodes to `%2e`, which decodes to `.`.
    for _ in 0..2 {
        decoded = text::percent_decoded(&decoded);
    }
    decoded.to_ascii_lowercase()
}

/// A failed answer, classified: from a plain call, or from one item of a `$batch`.
pub(crate) fn failure(
    status: u16,
    retry_after: Option<String>,
    bytes: &[u8],
    kind: CallKind,
    mut meta: CallMeta,
) -> GraphError {
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

pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_path_stays_below_the_graph_base() {
        let transport = Transport::new("http://127.0.0.1:9/v1.0", Duration::from_secs(1)).unwrap();
        let ok = transport.target("/me/drive/items/X/workbook/worksheets?$top=1").unwrap();
        assert_eq!(ok.as_str(), "http://127.0.0.1:9/v1.0/me/drive/items/X/workbook/worksheets?$top=1");
        for bad in [
            "me/drive",
            "//evil.example/v1.0/me",
            "/../beta/me",
            "/me/drive/../../beta",
            "/me/%2e%2e/%2E%2E/beta",
            "/me/%252e%252e/x",
            "/me\\..\\x",
            "http://evil.example/v1.0/me",
        ] {
            assert!(matches!(transport.target(bad), Err(ForwardError::Refused(_))), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("host", HeaderValue::from_static("127.0.0.1:1"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let passed = end_to_end(&headers);
        assert_eq!(passed.len(), 1);
        assert!(passed.contains_key("content-type"));
    }
}
