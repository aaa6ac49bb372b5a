//! `wbsessions proxy`: a local Graph endpoint for scripts in any language. A caller sends its
//! workbook calls here with the proxy's own secret; the proxy checks who it is and what it asks,
//! takes a turn on the workbook from the engine (so one workbook has one call at a time, holds
//! and the request budget apply to everyone alike), adds the tracked session's id and the real
//! token, and streams the call to Graph and the answer back. The token never reaches a caller.
//! docs/graph.md, "The proxy", has the rules this follows.

mod answer;
mod batch;
mod counts;
pub mod gate;
mod scrub;

pub use counts::Counts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::net::TcpListener;

use self::gate::{CallKind, GRAPH_SESSION_HEADER, SESSION_HEADER};
use crate::auth::Tokens;
use crate::engine::{Choice, Chosen, EngineError, Handle, Passed, Reply, Turn, TurnAsk};
use crate::graph::{
    CallKind as GraphCall, ErrorBody, ErrorClass, Forward, ForwardError, Transport, classify, parse_retry_after,
};
use crate::session::{Mode, SessionId, WorkbookRef};

/// Where the proxy listens unless told otherwise: a port of its own, clear of the usual
/// development servers (8000, 8001, 8080) and of Graph tools (8897).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8733";
/// The most of one call's body (either way) that passes, unless `--max-body` says otherwise.
pub const DEFAULT_MAX_BODY: u64 = 100 * 1024 * 1024;
/// A caller's body up to this size is kept, so that the call can be sent again on a recreated
/// session; a larger one streams through once.
const REPLAY_BODY: usize = 1024 * 1024;
/// Says what became of the session when it had expired under the call.
pub const SESSION_STATE_HEADER: &str = "x-wbsessions-session-state";
/// Error answers are read whole (up to this) to learn what they mean before they are passed on.
const ERROR_BODY_READ: usize = 64 * 1024;

/// What the proxy needs to run.
pub struct Proxy {
    pub handle: Handle,
    pub transport: Transport,
    pub tokens: Tokens,
    /// What a caller must present as `Authorization: Bearer …`.
    pub secret: String,
    /// The most of a caller's request body, and of Graph's answer, that passes.
    pub body_limit: u64,
    pub counts: Arc<Counts>,
    /// A workbook call with no tracked session to use gets a new one, in this mode.
    pub create: Option<Mode>,
    /// Callers' createSession and closeSession are followed: tracked, marked closed.
    pub track: bool,
    /// Resolves a by-path workbook to its item (once per path: `resolved` keeps the answer).
    pub graph: Arc<dyn crate::engine::Graph>,
    pub resolved: std::sync::Mutex<std::collections::HashMap<String, WorkbookRef>>,
}

impl Proxy {
    /// The workbook as the store knows it: a by-path one as its item, asked of Graph once.
    async fn item_of(&self, workbook: WorkbookRef) -> Result<WorkbookRef, Response> {
        if !workbook.is_by_path() {
            return Ok(workbook);
        }
        let key = workbook.to_string();
        let known = self.resolved.lock().ok().and_then(|r| r.get(&key).cloned());
        if let Some(item) = known {
            return Ok(item);
        }
        match self.graph.resolve(&workbook).await {
            Ok(reply) => {
                if let Ok(mut resolved) = self.resolved.lock() {
                    // Bounded: a caller sending endless paths must not grow it without end.
                    if resolved.len() >= 10_000 {
                        resolved.clear();
                    }
                    resolved.insert(key, reply.value.clone());
                }
                Ok(reply.value)
            }
            Err(failure) => {
                let status = failure.http_status().and_then(|s| StatusCode::from_u16(s).ok());
                Err(error(
                    status.unwrap_or(StatusCode::BAD_GATEWAY),
                    "itemNotResolved",
                    &format!("cannot resolve {workbook}: {failure}"),
                ))
            }
        }
    }

    /// A name for a session the proxy creates on `workbook`: `proxy-` and its item id.
    fn name_for(workbook: &WorkbookRef) -> String {
        let id = workbook.to_string();
        let tail = id.rsplit('/').next().unwrap_or_default();
        let clean: String = tail
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        format!("proxy-{clean}").chars().take(64).collect()
    }
}

/// Connections served at once; more wait in the listener's queue. Each costs a task and its
/// buffers, and a caller that opens thousands must not take the process's memory or files.
const MAX_CONNECTIONS: usize = 1024;
/// How long a caller has to send a request's headers once it has started one: a connection that
/// trickles them (or sends none) is closed rather than kept.
const HEADER_TIME: Duration = Duration::from_secs(10);
/// How long calls under way may go on once the proxy is told to stop; then they are cut.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Serves until `stop` resolves: HTTP/1.1 on each connection, at most `MAX_CONNECTIONS` of them;
/// once stopped, calls under way get `STOP_GRACE` and are then cut, so that a stalled call
/// cannot hold up the process's exit.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper_util::service::TowerToHyperService::new(Router::new().fallback(pass).with_state(proxy));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of files, or a connection reset before it was taken: the listener
                    // itself is fine, so wait a moment rather than spin.
                    tracing::warn!(error = %e, "the proxy could not take a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIME);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        connections.spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(STOP_GRACE, graceful.shutdown()).await;
    // Dropping the set cuts what is still under way: its turns end, its callers see the
    // connection close.
    connections.shutdown().await;
    Ok(())
}

/// The listening URL callers use as their Graph base.
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}/v1.0")
}

/// Graph's error shape, so that callers' Graph libraries read the proxy's refusals as they read
/// Graph's own.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": code, "message": message, "innerError": { "source": "wbsessions proxy" } } });
    (status, axum::Json(body)).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn pass(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let shown = gate::loggable(&path_and_query);
    let refuse = |status: StatusCode, code: &str, message: &str| {
        proxy.counts.refused.fetch_add(1, Ordering::Relaxed);
        proxy.counts.record(true);
        tracing::info!(method = %parts.method, path = %shown, status = status.as_u16(), "proxy refused a call: {message}");
        error(status, code, message)
    };
    if !gate::loopback_host(header(&parts.headers, "host")) {
        return refuse(
            StatusCode::FORBIDDEN,
            "hostNotAllowed",
            "the proxy answers only requests addressed to a loopback name (localhost, 127.0.0.1, [::1])",
        );
    }
    if !gate::presents(header(&parts.headers, "authorization"), &proxy.secret) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "present the proxy's secret as Authorization: Bearer $WBSESSIONS_PROXY_TOKEN (`wbsessions proxy --print-env` prints it)",
        );
    }
    let target = match gate::target(parts.uri.path()) {
        Ok(target) => target,
        Err(gate::Refusal::Batch) if parts.method == axum::http::Method::POST => {
            let answer = batch::pass(&proxy, &parts, body, &path_and_query, started).await;
            proxy.counts.record(!answer.status().is_success());
            return answer;
        }
        Err(why) => return refuse(StatusCode::FORBIDDEN, "notForwarded", &why.to_string()),
    };
    let workbook = match proxy.item_of(target.workbook.clone()).await {
        Ok(workbook) => workbook,
        Err(answer) => return answer,
    };
    let own_session = parts.headers.get(GRAPH_SESSION_HEADER);
    let named = header(&parts.headers, SESSION_HEADER).map(str::trim).filter(|n| !n.is_empty());
    let choice = match (&target.kind, own_session, named) {
        // The caller's own id goes as it is; if a tracked session has it, the call is its activity.
        (_, Some(own), _) => {
            own.to_str().ok().and_then(|id| SessionId::new(id).ok()).map_or(Choice::Without, Choice::ById)
        }
        (CallKind::Workbook, None, Some(name)) => Choice::Named(name.to_string()),
        (CallKind::Workbook, None, None) => Choice::OnlyLive,
        _ => Choice::Without,
    };
    let injecting = matches!(choice, Choice::Named(_) | Choice::OnlyLive);
    let tracking = match &target.kind {
        CallKind::SessionCall if proxy.track => {
            let call = parts.uri.path().rsplit('/').next().unwrap_or_default();
            if call.eq_ignore_ascii_case("createSession") {
                Some(Tracking::Create)
            } else if call.eq_ignore_ascii_case("closeSession") {
                Some(Tracking::Close)
            } else {
                None
            }
        }
        _ => None,
    };
    // A call the proxy gives a session may have to go again on a new one: its body is kept
    // when it is small enough to send twice.
    let (kept, streamed) = if injecting && replayable(&parts.headers) {
        // A caller whose body trickles is not waited for without end.
        match tokio::time::timeout(proxy.transport.timeout(), axum::body::to_bytes(body, REPLAY_BODY)).await {
            Ok(Ok(bytes)) => (Some(bytes), None),
            Ok(Err(_)) => {
                return refuse(StatusCode::BAD_REQUEST, "invalidRequest", "the request body could not be read whole");
            }
            Err(_) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "requestTimeout",
                    "the request body did not arrive within the request timeout",
                );
            }
        }
    } else {
        (None, Some(body))
    };
    let first_body = match (&kept, streamed) {
        (Some(bytes), _) => Body::from(bytes.clone()),
        (None, Some(body)) => body,
        (None, None) => Body::empty(),
    };
    let call = Call { proxy: &proxy, parts: &parts, path_and_query: &path_and_query, started, injecting, tracking };
    let ask = TurnAsk { workbook, choice };
    let answer = match call.attempt(ask.clone(), first_body).await {
        Attempt::Answered(answer) => answer,
        Attempt::Expired { chosen, failed } => call.after_expiry(chosen, failed, kept, ask.workbook).await,
    };
    let status = answer.status();
    proxy.counts.record(status.is_client_error() || status.is_server_error());
    answer
}

/// Whether a request's body is small enough to keep for a second sending.
fn replayable(headers: &HeaderMap) -> bool {
    let declared = header(headers, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
    match declared {
        Some(length) => length <= REPLAY_BODY,
        // No length and not chunked: no body at all.
        None => !headers.contains_key(axum::http::header::TRANSFER_ENCODING),
    }
}

/// How one sending of a call ended.
enum Attempt {
    /// The answer to give the caller (Graph's, or the proxy's refusal).
    Answered(Response),
    /// The session the proxy gave the call had expired: Graph's answer, read whole.
    Expired { chosen: Chosen, failed: Failed },
}

/// An error answer: read whole (`body`, the token taken out), or, when it was longer than the
/// proxy reads, its start and the rest streaming behind it (`streamed`).
struct Failed {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
    streamed: Option<Body>,
}

impl Failed {
    fn into_response(self) -> Response {
        let mut response = Response::new(self.streamed.unwrap_or_else(|| Body::from(self.body)));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }

    /// The same error, with a word of what became of the caller's work: Graph's libraries show
    /// the message, so it is said there as well as in a header.
    fn saying(mut self, header_value: &str, note: &str) -> Response {
        if self.streamed.is_none()
            && let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&self.body)
            && let Some(error) = value.get_mut("error").and_then(serde_json::Value::as_object_mut)
        {
            let message = error.get("message").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
            error.insert("message".into(), json!(format!("{message} (wbsessions proxy: {note})")));
            if let Ok(body) = serde_json::to_vec(&value) {
                self.body = body.into();
            }
        }
        if let Ok(value) = HeaderValue::from_str(header_value) {
            self.headers.insert(HeaderName::from_static(SESSION_STATE_HEADER), value);
        }
        self.into_response()
    }
}

/// One caller's call, sent once or (after its session was recreated) twice.
struct Call<'a> {
    proxy: &'a Proxy,
    parts: &'a axum::http::request::Parts,
    path_and_query: &'a str,
    started: Instant,
    /// The proxy adds the session (the caller sent none).
    injecting: bool,
    /// A caller's own createSession or closeSession, followed (`--track`).
    tracking: Option<Tracking>,
}

/// A caller's session call that `--track` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracking {
    Create,
    Close,
}

impl Call<'_> {
    /// Takes a turn on the workbook and sends the call in it.
    async fn attempt(&self, ask: TurnAsk, body: Body) -> Attempt {
        let named = match &ask.choice {
            Choice::Named(name) => Some(name.clone()),
            _ => None,
        };
        let workbook = ask.workbook.clone();
        let mut answer = self.proxy.handle.ask(crate::engine::Request::Turn(ask.clone())).await;
        // No session to use, and the proxy may make one: it does, and the call takes that.
        if let (Err(EngineError::NoSession { names, .. }), Some(mode), Choice::OnlyLive) =
            (&answer, self.proxy.create, &ask.choice)
            && names.is_empty()
        {
            let name = Proxy::name_for(&workbook);
            let new = crate::session::NewSession {
                name: name.clone(),
                workbook: workbook.clone(),
                session_id: None,
                mode,
                interval: None,
                recreate: true,
                warning: None,
            };
            match self.proxy.handle.ask(crate::engine::Request::Create(new)).await {
                Ok(_) => tracing::info!(session = %name, %workbook, "the proxy created a session for a call"),
                // Another caller's call made it first: it is there to use.
                Err(EngineError::Store(crate::store::StoreError::NameTaken(_))) => {}
                Err(why) => {
                    let shown = gate::loggable(self.path_and_query);
                    return Attempt::Answered(refused_by_engine(self.proxy, &self.parts.method, &shown, &why, None));
                }
            }
            let again = TurnAsk { workbook: workbook.clone(), choice: Choice::Named(name) };
            answer = self.proxy.handle.ask(crate::engine::Request::Turn(again)).await;
        }
        let turn = match answer {
            Ok(Reply::Turn(turn)) => turn,
            Ok(_) => {
                let answer =
                    error(StatusCode::INTERNAL_SERVER_ERROR, "internalError", "the engine answered out of turn");
                return Attempt::Answered(answer);
            }
            Err(why) => {
                let shown = gate::loggable(self.path_and_query);
                return Attempt::Answered(refused_by_engine(
                    self.proxy,
                    &self.parts.method,
                    &shown,
                    &why,
                    named.as_deref(),
                ));
            }
        };
        let chosen = turn.session.clone();
        let mut attempt = forward(self, &workbook, body, turn).await;
        if let (Attempt::Answered(answer), Some(chosen)) = (&mut attempt, &chosen)
            && let Ok(name) = HeaderValue::from_str(&chosen.name)
        {
            answer.headers_mut().insert(HeaderName::from_static(SESSION_HEADER), name);
        }
        attempt
    }

    /// The session the call went with had expired. If it may be recreated, it is (once, however
    /// many callers found it so); a persistent session's call is then sent again, once, on the
    /// new session (the workbook kept what was done before). A non-persistent session's changes
    /// went with it: the caller hears the original error, and that they are gone.
    async fn after_expiry(
        &self,
        chosen: Chosen,
        failed: Failed,
        kept: Option<bytes::Bytes>,
        workbook: crate::session::WorkbookRef,
    ) -> Response {
        let name = chosen.name.clone();
        if !chosen.recreate {
            let note =
                format!("{name} expired and may not be recreated (`wbsessions edit {name} --recreate` allows it)");
            return failed.saying("expired", &note);
        }
        let request = crate::engine::Request::RecreateExpired { key: chosen.key, expired: chosen.id.clone() };
        if let Err(why) = self.proxy.handle.ask(request).await {
            tracing::warn!(session = %name, error = %why, "a session that expired under a proxied call could not be recreated");
            return failed.saying("expired", &format!("{name} expired and could not be recreated: {why}"));
        }
        tracing::info!(session = %name, "a session expired under a proxied call and was recreated");
        match (chosen.mode, kept) {
            (Mode::NonPersistent, _) => failed.saying(
                "recreated-changes-lost",
                &format!("{name} had expired and was recreated; the changes made in the expired session are gone"),
            ),
            (Mode::Persistent, None) => failed.saying(
                "recreated-not-replayed",
                &format!("{name} had expired and was recreated; this call was too large to keep, so it was not sent again: send it again"),
            ),
            (Mode::Persistent, Some(bytes)) => {
                let ask = TurnAsk { workbook, choice: Choice::Named(name.clone()) };
                let mut answer = match self.attempt(ask, Body::from(bytes)).await {
                    Attempt::Answered(answer) => answer,
                    // Nothing is sent a third time.
                    Attempt::Expired { failed, .. } => failed.into_response(),
                };
                answer.headers_mut().insert(HeaderName::from_static(SESSION_STATE_HEADER), HeaderValue::from_static("recreated"));
                answer
            }
        }
    }
}
/// A turn the engine would not give, as the caller's Graph library understands it.
fn refused_by_engine(
    proxy: &Proxy,
    method: &axum::http::Method,
    shown: &str,
    why: &EngineError,
    named: Option<&str>,
) -> Response {
    proxy.counts.refused.fetch_add(1, Ordering::Relaxed);
    tracing::info!(method = %method, path = %shown, error = %why, "proxy refused a call");
    match why {
        EngineError::Held { wait, .. } => {
            let mut answer = error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", &why.to_string());
            let secs = wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                answer.headers_mut().insert("retry-after", value);
            }
            answer
        }
        EngineError::NotFound => error(
            StatusCode::NOT_FOUND,
            "sessionNotTracked",
            &format!(
                "no session named {} is tracked (`wbsessions list` shows them)",
                crate::text::clean(named.unwrap_or("?"), 64)
            ),
        ),
        EngineError::NoSession { names, .. } => {
            let hint = if names.is_empty() {
                "; track one (`wbsessions create NAME --workbook REF`) or send your own workbook-session-id"
            } else {
                "; name one in the X-Wbsessions-Session header"
            };
            error(StatusCode::CONFLICT, "noTrackedSession", &format!("{why}{hint}"))
        }
        EngineError::Closed { .. } | EngineError::Damaged { .. } => {
            error(StatusCode::CONFLICT, "sessionNotUsable", &why.to_string())
        }
        EngineError::Refused(_) => error(StatusCode::BAD_REQUEST, "invalidRequest", &why.to_string()),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "serviceNotAvailable", &why.to_string()),
    }
}

/// Holds a turn until the answer's body has gone to the caller (or the caller hung up), then
/// says how the call went.
pub(super) struct TurnGuard {
    turn: Option<Turn>,
    passed: Passed,
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        if let Some(turn) = self.turn.take() {
            turn.end(std::mem::take(&mut self.passed));
        }
    }
}

/// Sends the call in its turn: the session's id and the token added, the answer streamed back
/// (an error answer read whole first, to learn what it means).
async fn forward(call: &Call<'_>, workbook: &WorkbookRef, body: Body, turn: Turn) -> Attempt {
    let Call { proxy, parts, path_and_query, started, injecting, tracking } = *call;
    let shown = gate::loggable(path_and_query);
    let method = parts.method.clone();
    let chosen = turn.session.clone();
    let session_name = chosen.as_ref().map(|c| c.name.clone()).unwrap_or_default();
    let mut guard = TurnGuard { turn: Some(turn), passed: Passed::default() };
    let token = match proxy.tokens.get().await {
        Ok(token) => token,
        Err(why) => {
            tracing::warn!(method = %method, path = %shown, error = %why, "proxy has no token for a call");
            let answer =
                error(StatusCode::SERVICE_UNAVAILABLE, "noToken", &format!("the proxy cannot call Graph: {why}"));
            return Attempt::Answered(answer);
        }
    };
    let mut headers = parts.headers.clone();
    headers.remove(SESSION_HEADER);
    if let Some(chosen) = chosen.as_ref().filter(|_| injecting)
        && let Ok(value) = HeaderValue::from_str(chosen.id.as_str())
    {
        headers.insert(GRAPH_SESSION_HEADER, value);
    }
    let sessionful = headers.contains_key(GRAPH_SESSION_HEADER);
    guard.passed.client_request_id = header(&headers, "client-request-id").map(str::to_string);
    let below = path_and_query.strip_prefix("/v1.0").unwrap_or(path_and_query).to_string();
    guard.passed.sent = true;
    let request = Forward {
        method: method.clone(),
        path_and_query: below,
        headers,
        body: body.into_data_stream(),
        body_limit: proxy.body_limit,
    };
    let forwarded = match proxy.transport.forward(token.secret.expose(), request).await {
        Ok(forwarded) => forwarded,
        Err(why) => {
            guard.passed.latency = started.elapsed();
            // Refused or cut off on this side: Graph did not fail to answer.
            guard.passed.sent = matches!(why, ForwardError::Unanswered(_));
            tracing::warn!(method = %method, path = %shown, session = %session_name, error = %why, "proxied call failed");
            let answer = match why {
                ForwardError::TooLarge(_) => error(StatusCode::PAYLOAD_TOO_LARGE, "requestTooLarge", &why.to_string()),
                ForwardError::Refused(_) => error(StatusCode::FORBIDDEN, "notForwarded", &why.to_string()),
                ForwardError::Unanswered(_) => error(StatusCode::BAD_GATEWAY, "graphUnanswered", &why.to_string()),
            };
            return Attempt::Answered(answer);
        }
    };
    let status = forwarded.status;
    let latency = started.elapsed();
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    guard.passed.http_status = Some(status.as_u16());
    guard.passed.latency = latency;
    guard.passed.request_id = forwarded.request_id.clone();
    guard.passed.retry_after =
        header(&forwarded.headers, "retry-after").and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    let mut headers = forwarded.headers.clone();
    headers.remove(axum::http::header::CONTENT_LENGTH);
    if status.is_client_error() || status.is_server_error() {
        // Worth reading: what the failure means decides holds and the session's fate. Its first
        // 64 KiB are read; the rest, if any, follows them to the caller.
        let (bytes, rest) = answer::read_prefix(forwarded.body(proxy.body_limit), ERROR_BODY_READ).await;
        scrub::scrub_headers(&mut headers, token.secret.expose());
        // The token was refused: a renewed one for the next call, as the keeper does.
        if status == StatusCode::UNAUTHORIZED {
            let (tokens, refused) = (proxy.tokens.clone(), token.clone());
            tokio::spawn(async move {
                if let Err(why) = tokens.renew_after_rejection(&refused).await {
                    tracing::warn!(error = %why, "the token Graph refused could not be renewed");
                }
            });
        }
        let parsed = ErrorBody::parse(&bytes);
        let kind = if sessionful { GraphCall::Sessionful } else { GraphCall::Other };
        let class = classify(status.as_u16(), &parsed, kind, guard.passed.retry_after.is_some());
        guard.passed.class = Some(class);
        guard.passed.codes = parsed.all_codes();
        tracing::warn!(method = %method, path = %shown, session = %session_name, http_status = status.as_u16(),
            latency_ms, request_id = ?guard.passed.request_id, codes = ?guard.passed.codes,
            "proxied call answered with an error");
        // The turn ends here: what it found (an expiry) is recorded before anyone acts on it.
        drop(guard);
        if let Some(name) = chosen.as_ref().and_then(|c| HeaderValue::from_str(&c.name).ok()) {
            headers.insert(HeaderName::from_static(SESSION_HEADER), name);
        }
        let secret = token.secret.expose();
        let failed = match rest {
            None => Failed { status, headers, body: scrub::scrubbed(&bytes, secret).into(), streamed: None },
            Some(rest) => {
                let first = futures_util::stream::once(std::future::ready(Ok(bytes::Bytes::from(bytes))));
                let streamed = Body::from_stream(scrub::scrub_stream(first.chain(rest), secret));
                Failed { status, headers, body: bytes::Bytes::new(), streamed: Some(streamed) }
            }
        };
        return match chosen {
            Some(chosen) if class == ErrorClass::Expired && injecting => Attempt::Expired { chosen, failed },
            _ => Attempt::Answered(failed.into_response()),
        };
    }
    match tracking {
        Some(Tracking::Close) => guard.passed.closed = true,
        Some(Tracking::Create) => {
            // Small: the new session's id. Read whole, tracked, then passed on.
            let (bytes, _) = answer::read_prefix(forwarded.body(proxy.body_limit), ERROR_BODY_READ).await;
            drop(guard);
            track_created(proxy, workbook, &bytes).await;
            scrub::scrub_headers(&mut headers, token.secret.expose());
            let mut response = Response::new(Body::from(scrub::scrubbed(&bytes, token.secret.expose())));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            return Attempt::Answered(response);
        }
        None => {}
    }
    tracing::info!(method = %method, path = %shown, session = %session_name, http_status = status.as_u16(), latency_ms,
        "proxied call");
    scrub::scrub_headers(&mut headers, token.secret.expose());
    // The turn is held while the answer streams to the caller, and no longer than the caller
    // keeps taking it: one that stops reading (or reads a byte now and then for ever) lets go of
    // the workbook after the request timeout, or after `MAX_TURN` in all.
    let turn = answer::HeldTurn::new(guard, proxy.transport.timeout());
    let stream = scrub::scrub_stream(forwarded.body(proxy.body_limit), token.secret.expose()).map(move |chunk| {
        turn.progressed();
        chunk
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Attempt::Answered(response)
}

/// Tracks a session a caller created (`--track`), as `proxy-ITEM` (or `proxy-ITEM-2`, … when
/// that name is taken). A failure is logged: the caller's call worked, and it has its answer.
async fn track_created(proxy: &Proxy, workbook: &WorkbookRef, body: &[u8]) {
    let created: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(id) = created.get("id").and_then(serde_json::Value::as_str).and_then(|id| SessionId::new(id).ok()) else {
        tracing::warn!(%workbook, "a caller's createSession answer carried no session id to track (an asynchronous create is not followed)");
        return;
    };
    let persistent = created.get("persistChanges").and_then(serde_json::Value::as_bool).unwrap_or(true);
    let base = Proxy::name_for(workbook);
    for n in 1..=9 {
        let name = if n == 1 { base.clone() } else { format!("{}-{n}", base.chars().take(61).collect::<String>()) };
        let new = crate::session::NewSession {
            name: name.clone(),
            workbook: workbook.clone(),
            session_id: Some(id.clone()),
            mode: if persistent { Mode::Persistent } else { Mode::NonPersistent },
            interval: None,
            recreate: false,
            warning: None,
        };
        match proxy.handle.ask(crate::engine::Request::Track(new)).await {
            Ok(_) => {
                tracing::info!(session = %name, %workbook, "tracking a session a caller created");
                return;
            }
            Err(EngineError::Store(crate::store::StoreError::NameTaken(_))) => continue,
            Err(why) => {
                tracing::warn!(%workbook, error = %why, "a session a caller created could not be tracked");
                return;
            }
        }
    }
    tracing::warn!(%workbook, "a session a caller created was not tracked: proxy- names for it are all taken");
}
