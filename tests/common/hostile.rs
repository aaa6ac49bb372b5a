//! A hostile stand-in for Graph and the sign-in service: what a broken proxy, a misbehaving
//! server or an attacker on the wire could send. Each workbook item id picks a behaviour;
//! any other id behaves well.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Every request seen: (when, method, path).
#[derive(Default)]
pub struct Seen {
    pub requests: Mutex<Vec<(std::time::Instant, String, String)>>,
    pub created: Mutex<u64>,
}

impl Seen {
    pub fn paths(&self) -> Vec<String> {
        self.requests.lock().unwrap().iter().map(|(_, _, p)| p.clone()).collect()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.paths().iter().filter(|p| p.contains(needle)).count()
    }
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message, "innerError": { "request-id": "hostile-req" } } });
    (status, axum::Json(body)).into_response()
}

/// The message a server could use to retitle a terminal, write its clipboard and forge a line.
pub const ESCAPING_MESSAGE: &str =
    "first\nFORGED 2026-01-01 a refresh ok 204\u{1b}]2;pwned\u{7}\u{1b}]52;c;aGVsbG8=\u{7}\u{1b}[31mred\u{1b}[0m\r";

async fn handle(
    State(seen): State<Arc<Seen>>,
    method: Method,
    uri: Uri,
    _headers: HeaderMap,
    _body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    seen.requests.lock().unwrap().push((std::time::Instant::now(), method.to_string(), path.clone()));
    if path.ends_with("/oauth2/v2.0/devicecode") {
        let body = r#"{"device_code":"d","user_code":"HOSTILE","verification_uri":"https://example.invalid/device","expires_in":18446744073709551615,"interval":1}"#;
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    if path.ends_with("/oauth2/v2.0/token") {
        return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": "authorization_declined" })))
            .into_response();
    }
    let item = path.split('/').skip_while(|s| *s != "items").nth(1).unwrap_or("").to_string();
    let call = path.rsplit('/').next().unwrap_or("").to_string();
    match item.as_str() {
        "THROTTLED" => {
            let mut r = graph_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Please retry again later.");
            r.headers_mut().insert("retry-after", "1000000000".parse().unwrap());
            r
        }
        "BRIEFHOLD" => {
            let mut r = graph_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Please retry again later.");
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            r
        }
        "DATEHOLD" => {
            let mut r = graph_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Please retry again later.");
            r.headers_mut().insert("retry-after", "Fri, 31 Dec 2100 23:59:59 GMT".parse().unwrap());
            r
        }
        "ENDLESS" => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            (StatusCode::INTERNAL_SERVER_ERROR, Body::from_stream(stream)).into_response()
        }
        "ESCAPES" => graph_error(StatusCode::INTERNAL_SERVER_ERROR, "bad\u{1b}[2Jcode", ESCAPING_MESSAGE),
        "HUGE" => graph_error(StatusCode::INTERNAL_SERVER_ERROR, "internalServerError", &"m".repeat(2 * 1024 * 1024)),
        "LONGMESSAGE" => graph_error(StatusCode::INTERNAL_SERVER_ERROR, "internalServerError", &"m".repeat(40 * 1024)),
        "REDIRECT" => (StatusCode::FOUND, [("location", "http://127.0.0.1:9/stolen")], "").into_response(),
        "SLOW" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => match call.as_str() {
            "createSession" => {
                let n = {
                    let mut created = seen.created.lock().unwrap();
                    *created += 1;
                    *created
                };
                (
                    StatusCode::CREATED,
                    axum::Json(serde_json::json!({ "id": format!("HOSTILE-{n}"), "persistChanges": true })),
                )
                    .into_response()
            }
            _ => StatusCode::NO_CONTENT.into_response(),
        },
    }
}

/// The hostile server on a thread of its own, for tests that drive the real binary.
pub struct HostileThread {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostileThread {
    pub fn start() -> HostileThread {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let seen = Arc::new(Seen::default());
        let state = seen.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(super::loopback()).await.unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let router = axum::Router::new().fallback(handle).with_state(state);
                let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                let _ = serve.await;
            });
        });
        let addr = ready_rx.recv().unwrap();
        HostileThread { addr, seen, stop: Some(stop), thread: Some(thread) }
    }

    pub fn graph_url(&self) -> String {
        format!("http://{}/v1.0", self.addr)
    }

    pub fn login_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HostileThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The slow and endless answers would keep a graceful shutdown waiting: do not join.
        drop(self.thread.take());
    }
}
