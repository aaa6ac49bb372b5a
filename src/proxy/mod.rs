//! `wbsessions proxy`: a local Graph endpoint for scripts in any language. A caller sends its
//! workbook calls here with the proxy's own secret; the proxy checks who it is and what it asks,
//! takes a turn on the workbook from the engine (so one workbook has one call at a time, holds
//! and the request budget apply to everyone alike), adds the tracked session's id and the real
//! token, and streams the call to Graph and the answer back. The token never reaches a caller.
//! docs/graph.md, "The proxy", has the rules this follows.

pub mod gate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::engine::{Choice, EngineError, Handle, Passed, Reply, Turn, TurnAsk};
use crate::graph::{CallKind as GraphCall, ErrorBody, Forward, ForwardError, Transport, classify, parse_retry_after};

/// Where the proxy listens unless told otherwise: a port of its own, clear of the usual
/// development servers (8000, 8001, 8080) and of Graph tools (8897).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8733";
/// The most of one call's body (either way) that passes, unless `--max-body` says otherwise.
pub const DEFAULT_MAX_BODY: u64 = 100 * 1024 * 1024;
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
    pub counts: Counts,
}

/// What the proxy has done, for a front end to show.
#[derive(Debug, Default)]
pub struct Counts {
    pub calls: AtomicU64,
    /// Calls answered with an error status, whoever's the error.
    pub errors: AtomicU64,
    /// Calls refused before they reached Graph (no secret, wrong host, not a workbook call).
    pub refused: AtomicU64,
}

/// Serves until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new().fallback(pass).with_state(proxy);
    axum::serve(listener, router).with_graceful_shutdown(stop).await
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
        Err(why) => return refuse(StatusCode::FORBIDDEN, "notForwarded", &why.to_string()),
    };
    let own_session = parts.headers.contains_key(GRAPH_SESSION_HEADER);
    let named = header(&parts.headers, SESSION_HEADER).map(str::trim).filter(|n| !n.is_empty());
    let choice = match (&target.kind, own_session, named) {
        (CallKind::Workbook, false, Some(name)) => Choice::Named(name.to_string()),
        (CallKind::Workbook, false, None) => Choice::OnlyLive,
        _ => Choice::Without,
    };
    let ask = TurnAsk { workbook: target.workbook.clone(), choice };
    let turn = match proxy.handle.ask(crate::engine::Request::Turn(ask)).await {
        Ok(Reply::Turn(turn)) => turn,
        Ok(_) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internalError", "the engine answered out of turn"),
        Err(why) => return refused_by_engine(&proxy, &parts.method, &shown, &why, named),
    };
    let session_name = turn.session.as_ref().map(|(name, _)| name.clone());
    let answer = forward(&proxy, parts, body, path_and_query, turn, started).await;
    let status = answer.status();
    proxy.counts.calls.fetch_add(1, Ordering::Relaxed);
    if status.is_client_error() || status.is_server_error() {
        proxy.counts.errors.fetch_add(1, Ordering::Relaxed);
    }
    let mut answer = answer;
    if let Some(name) = session_name.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
        answer.headers_mut().insert(HeaderName::from_static(SESSION_HEADER), name);
    }
    answer
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
struct TurnGuard {
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

async fn forward(
    proxy: &Proxy,
    parts: axum::http::request::Parts,
    body: Body,
    path_and_query: String,
    turn: Turn,
    started: Instant,
) -> Response {
    let shown = gate::loggable(&path_and_query);
    let method = parts.method.clone();
    let session_name = turn.session.as_ref().map(|(name, _)| name.clone()).unwrap_or_default();
    let mut guard = TurnGuard { turn: Some(turn), passed: Passed::default() };
    let token = match proxy.tokens.get().await {
        Ok(token) => token,
        Err(why) => {
            tracing::warn!(method = %method, path = %shown, error = %why, "proxy has no token for a call");
            return error(StatusCode::SERVICE_UNAVAILABLE, "noToken", &format!("the proxy cannot call Graph: {why}"));
        }
    };
    let mut headers = parts.headers;
    headers.remove(SESSION_HEADER);
    let injected = guard.turn.as_ref().and_then(|t| t.session.as_ref()).map(|(_, id)| id.clone());
    if let Some(id) = &injected
        && let Ok(value) = HeaderValue::from_str(id.as_str())
    {
        headers.insert(GRAPH_SESSION_HEADER, value);
    }
    let sessionful = injected.is_some() || headers.contains_key(GRAPH_SESSION_HEADER);
    guard.passed.client_request_id = header(&headers, "client-request-id").map(str::to_string);
    let below = path_and_query.strip_prefix("/v1.0").unwrap_or(&path_and_query).to_string();
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
            tracing::warn!(method = %method, path = %shown, session = %session_name, error = %why, "proxied call failed");
            return match why {
                ForwardError::TooLarge(_) => error(StatusCode::PAYLOAD_TOO_LARGE, "requestTooLarge", &why.to_string()),
                ForwardError::Refused(_) => error(StatusCode::FORBIDDEN, "notForwarded", &why.to_string()),
                ForwardError::Unanswered(_) => error(StatusCode::BAD_GATEWAY, "graphUnanswered", &why.to_string()),
            };
        }
    };
    let status = forwarded.status;
    let latency = started.elapsed();
    guard.passed.http_status = Some(status.as_u16());
    guard.passed.latency = latency;
    guard.passed.request_id = forwarded.request_id.clone();
    guard.passed.retry_after =
        header(&forwarded.headers, "retry-after").and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    let mut response_headers = forwarded.headers.clone();
    response_headers.remove(axum::http::header::CONTENT_LENGTH);
    if status.is_client_error() || status.is_server_error() {
        // Small, and worth reading: what the failure means decides holds and the session's fate.
        let bytes = read_error_body(forwarded.body(proxy.body_limit)).await;
        let body = ErrorBody::parse(&bytes);
        let kind = if sessionful { GraphCall::Sessionful } else { GraphCall::Other };
        guard.passed.class = Some(classify(status.as_u16(), &body, kind, guard.passed.retry_after.is_some()));
        guard.passed.codes = body.all_codes();
        tracing::warn!(method = %method, path = %shown, session = %session_name, http_status = status.as_u16(),
            latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX), request_id = ?guard.passed.request_id,
            codes = ?guard.passed.codes, "proxied call answered with an error");
        drop(guard);
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        *response.headers_mut() = response_headers;
        return response;
    }
    tracing::info!(method = %method, path = %shown, session = %session_name, http_status = status.as_u16(),
        latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX), "proxied call");
    let stream = forwarded.body(proxy.body_limit).map(move |chunk| {
        let _held = &guard;
        chunk
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    response
}

async fn read_error_body(
    stream: impl futures_util::Stream<Item = Result<bytes::Bytes, ForwardError>> + Send,
) -> Vec<u8> {
    let mut stream = std::pin::pin!(stream);
    let mut bytes = Vec::new();
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            let room = ERROR_BODY_READ.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() >= ERROR_BODY_READ {
                break;
            }
        }
    };
    // An error answer that trickles is not waited for without end.
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    bytes
}
