//! The Graph side of the simulator: workbook sessions, operations, `$batch`, `/me`, faults.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Operation, Sim, SimSession};
use crate::session::WorkbookRef;

/// An answer before it becomes HTTP, so `$batch` can embed it.
pub(super) struct SimResponse {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl SimResponse {
    fn json(status: StatusCode, body: Value) -> Self {
        SimResponse { status, headers: Vec::new(), body: Some(body) }
    }

    fn empty(status: StatusCode) -> Self {
        SimResponse { status, headers: Vec::new(), body: None }
    }

    fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, axum::Json(body)).into_response(),
            None => self.status.into_response(),
        };
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

/// Identifies one request in every answer, as Graph does.
struct Ids {
    request_id: String,
    client_request_id: String,
    date: DateTime<Utc>,
}

impl Ids {
    fn error(&self, status: StatusCode, code: &str, inner_code: Option<&str>, message: &str) -> SimResponse {
        let mut inner = json!({
            "date": self.date.format("%Y-%m-%dT%H:%M:%S").to_string(),
            "request-id": self.request_id,
            "client-request-id": self.client_request_id,
        });
        if let Some(c) = inner_code {
            inner["code"] = json!(c);
        }
        SimResponse::json(status, json!({ "error": { "code": code, "message": message, "innerError": inner } }))
    }

    fn session_gone(&self) -> SimResponse {
        self.error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            Some("invalidSessionReCreatable"),
            "The target session is invalid or has expired. Create a new session.",
        )
    }

    /// The body of Microsoft's own throttling sample.
    fn throttled(&self, wait: Duration) -> SimResponse {
        let body = json!({ "error": {
            "code": "TooManyRequests",
            "innerError": {
                "code": "429",
                "date": self.date.format("%Y-%m-%dT%H:%M:%S").to_string(),
                "message": "Please retry after",
                "request-id": self.request_id,
                "client-request-id": self.client_request_id,
                "status": "429"
            },
            "message": "Please retry again later."
        }});
        SimResponse::json(StatusCode::TOO_MANY_REQUESTS, body)
            .with_header("retry-after", format!("{:.3}", wait.as_secs_f64()))
    }
}

pub(super) fn handle(sim: &Sim, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> SimResponse {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let ids = Ids {
        request_id: uuid::Uuid::new_v4().to_string(),
        client_request_id: header("client-request-id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        date: sim.clock.now(),
    };
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    let mut response = match bearer {
        None => ids.error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", None, "Access token is empty."),
        Some(token) if !sim.accepts_token(&token) => ids.error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            None,
            "Access token has expired or is not yet valid.",
        ),
        Some(_) => {
            let path = uri.path().strip_prefix("/v1.0").unwrap_or("");
            if path == "/$batch" && method == Method::POST {
                batch(sim, headers, body, &ids)
            } else {
                route(sim, method, path, uri.query(), &header_pairs(headers), body, &ids)
            }
        }
    };
    response.headers.push(("request-id", ids.request_id.clone()));
    response.headers.push(("client-request-id", ids.client_request_id));
    response
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_string()))).collect()
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The faults a single request may meet, in the order Graph would apply them.
fn faults(sim: &Sim, ids: &Ids) -> Option<SimResponse> {
    let now = sim.clock.now();
    if let Some(limit) = sim.config.rate_limit {
        let mut state = sim.state();
        let window = chrono::Duration::seconds(10);
        while state.window.front().is_some_and(|t| now - *t >= window) {
            state.window.pop_front();
        }
        if state.window.len() >= limit as usize {
            let oldest = state.window.front().copied().unwrap_or(now);
            let wait = (oldest + window - now).to_std().unwrap_or(Duration::ZERO).max(Duration::from_millis(1));
            state.stats.throttled += 1;
            return Some(ids.throttled(wait));
        }
        state.window.push_back(now);
    }
    let (throttle_rate, error_rate) = sim.rates();
    if sim.chance(throttle_rate) {
        sim.state().stats.throttled += 1;
        let wait = sim.random_between(Duration::from_millis(500), Duration::from_millis(3000));
        return Some(ids.throttled(wait));
    }
    if sim.chance(error_rate) {
        return Some(ids.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internalServerError",
            Some("generalException"),
            "An internal server error occurred (injected).",
        ));
    }
    None
}

fn route(
    sim: &Sim,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &[(String, String)],
    body: &[u8],
    ids: &Ids,
) -> SimResponse {
    sim.state().stats.requests += 1;
    if path == "/me" {
        return match *method {
            Method::GET => SimResponse::json(
                StatusCode::OK,
                json!({ "displayName": "Simulated User", "userPrincipalName": "user@sim.example" }),
            ),
            _ => ids.error(StatusCode::METHOD_NOT_ALLOWED, "methodNotAllowed", None, "Only GET is allowed here."),
        };
    }
    if let Some(fault) = faults(sim, ids) {
        return fault;
    }
    let (prefix, call) = match path.find("/workbook") {
        Some(i) => (&path[..i], path[i + "/workbook".len()..].trim_start_matches('/')),
        None => (path, ""),
    };
    let decoded = percent_decode(prefix);
    let Ok(reference) = WorkbookRef::parse(&decoded) else {
        return ids.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            None,
            &format!("Resource not found for the segment '{prefix}'."),
        );
    };
    let Some(item) = sim.lookup(&reference) else {
        return ids.error(StatusCode::NOT_FOUND, "itemNotFound", None, "The resource could not be found.");
    };
    if call.is_empty() {
        return match *method {
            Method::GET => {
                let path = sim.state().workbooks.get(&item).cloned().flatten();
                let name = path.as_deref().and_then(|p| p.rsplit('/').next()).unwrap_or(&item).to_string();
                SimResponse::json(StatusCode::OK, json!({ "id": item, "name": name, "file": {} }))
            }
            _ => ids.error(StatusCode::METHOD_NOT_ALLOWED, "methodNotAllowed", None, "Only GET is allowed here."),
        };
    }
    let session_header = find(headers, "workbook-session-id");
    if sim.config.failing_workbooks.contains(&item) && session_header.is_some() {
        return ids.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internalServerError",
            Some("generalException"),
            "This workbook fails every call (simulated).",
        );
    }
    if sim.config.unsupported_workbooks.contains(&item) && session_header.is_some() {
        return ids.error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            Some("invalidSessionUnsupportedWorkbook"),
            "This workbook does not support sessions (simulated).",
        );
    }
    // Any sessionful request counts as activity, whatever the call.
    let touched = session_header.map(|id| sim.touch(id, &item));
    match (method.clone(), call) {
        (Method::POST, "createSession") => {
            let persistent = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("persistChanges").and_then(Value::as_bool))
                .unwrap_or(true);
            let respond_async =
                find(headers, "prefer").is_some_and(|p| p.to_ascii_lowercase().contains("respond-async"));
            match sim.config.async_create {
                Some(delay) if respond_async => {
                    let op = uuid::Uuid::new_v4().simple().to_string();
                    let ready_at = ids.date + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
                    sim.state().operations.insert(
                        op.clone(),
                        Operation {
                            workbook_prefix: prefix.to_string(),
                            workbook: item,
                            persistent,
                            ready_at,
                            session: None,
                        },
                    );
                    let location = format!("{}/v1.0{prefix}/workbook/operations/{op}", sim.base_url());
                    SimResponse::empty(StatusCode::ACCEPTED).with_header("location", location)
                }
                _ => {
                    let id = sim.create(&item, persistent);
                    SimResponse::json(StatusCode::CREATED, json!({ "id": id, "persistChanges": persistent }))
                }
            }
        }
        (Method::POST, "refreshSession") => match touched {
            None => {
                ids.error(StatusCode::BAD_REQUEST, "badRequest", None, "The workbook-session-id header is missing.")
            }
            Some(false) => ids.session_gone(),
            Some(true) => {
                sim.state().stats.refreshed += 1;
                SimResponse::empty(StatusCode::NO_CONTENT)
            }
        },
        (Method::POST, "closeSession") => match (touched, session_header) {
            (None, _) | (_, None) => {
                ids.error(StatusCode::BAD_REQUEST, "badRequest", None, "The workbook-session-id header is missing.")
            }
            (Some(false), _) => ids.session_gone(),
            (Some(true), Some(id)) => {
                let mut state = sim.state();
                state.sessions.remove(id);
                state.stats.closed += 1;
                SimResponse::empty(StatusCode::NO_CONTENT)
            }
        },
        (Method::GET, call) if call.starts_with("operations/") => operation(sim, &call["operations/".len()..], ids),
        (Method::GET, "sessionInfoResource") => {
            let key =
                query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("key="))).unwrap_or_default().to_string();
            let state = sim.state();
            match state.operations.get(&key).and_then(|op| op.session.clone().map(|s| (s, op.persistent))) {
                Some((id, persistent)) => {
                    SimResponse::json(StatusCode::OK, json!({ "id": id, "persistChanges": persistent }))
                }
                None => ids.error(StatusCode::NOT_FOUND, "itemNotFound", None, "No such session resource."),
            }
        }
        (Method::GET | Method::PATCH, call) if call.starts_with("worksheets") => {
            match range_address(&percent_decode(call)) {
                None => ids.error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    None,
                    &format!("Resource not found for the segment '{call}'."),
                ),
                Some(_) if touched == Some(false) => ids.session_gone(),
                Some(cell) => range(sim, method.clone(), &item, session_header, cell, body, ids),
            }
        }
        (_, "createSession" | "refreshSession" | "closeSession") => {
            ids.error(StatusCode::METHOD_NOT_ALLOWED, "methodNotAllowed", None, "Use POST.")
        }
        _ => ids.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            None,
            &format!("Resource not found for the segment '{call}'."),
        ),
    }
}

/// A worksheet range: its sheet and address, as `worksheets/{name}/range(address='A1')` or
/// `worksheets('{name}')/range(address='A1:B2')` name them.
fn range_address(call: &str) -> Option<(String, String)> {
    let rest = call.strip_prefix("worksheets")?;
    let (sheet, rest) = if let Some(quoted) = rest.strip_prefix("('") {
        quoted.split_once("')")?
    } else {
        rest.strip_prefix('/')?.split_once('/')?
    };
    let address = rest.trim_start_matches('/').strip_prefix("range(address='")?.strip_suffix("')")?;
    let valid = |s: &str| !s.is_empty() && s.len() <= 64;
    (valid(sheet) && valid(address)).then(|| (sheet.to_string(), address.to_ascii_uppercase()))
}

/// Reads or writes a range's values. With a persistent session (or none) writes reach the
/// workbook; with a non-persistent one they stay in the session and go with it.
fn range(
    sim: &Sim,
    method: Method,
    item: &str,
    session: Option<&str>,
    (sheet, address): (String, String),
    body: &[u8],
    ids: &Ids,
) -> SimResponse {
    let mut state = sim.state();
    let state = &mut *state;
    let overlay = session.and_then(|id| state.sessions.get_mut(id)).filter(|s| !s.persistent);
    // Sheet names are not case-sensitive in Excel; the answer names it as the caller did.
    let key = (item.to_string(), sheet.to_ascii_lowercase(), address.clone());
    let shown = format!("{sheet}!{address}");
    if method == Method::PATCH {
        let values = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("values").cloned());
        let Some(values) = values.filter(Value::is_array) else {
            return ids.error(StatusCode::BAD_REQUEST, "InvalidArgument", None, "The body needs a values array.");
        };
        match overlay {
            Some(s) => s.changes.insert(key, values.clone()),
            None => state.cells.insert(key, values.clone()),
        };
        state.stats.range_writes += 1;
        return SimResponse::json(StatusCode::OK, json!({ "address": shown, "values": values }));
    }
    let values = overlay
        .and_then(|s| s.changes.get(&key).cloned())
        .or_else(|| state.cells.get(&key).cloned())
        .unwrap_or_else(|| json!([[""]]));
    SimResponse::json(StatusCode::OK, json!({ "address": shown, "values": values }))
}

fn operation(sim: &Sim, op_id: &str, ids: &Ids) -> SimResponse {
    let now = sim.clock.now();
    let pending = {
        let state = sim.state();
        match state.operations.get(op_id) {
            None => return ids.error(StatusCode::NOT_FOUND, "itemNotFound", None, "No such operation."),
            Some(op) => (op.ready_at <= now && op.session.is_none()).then(|| (op.workbook.clone(), op.persistent)),
        }
    };
    if let Some((workbook, persistent)) = pending {
        let id = sim.create(&workbook, persistent);
        if let Some(op) = sim.state().operations.get_mut(op_id) {
            op.session = Some(id);
        }
    }
    let state = sim.state();
    let Some(op) = state.operations.get(op_id) else {
        return ids.error(StatusCode::NOT_FOUND, "itemNotFound", None, "No such operation.");
    };
    let body = if op.session.is_some() {
        json!({
            "id": op_id,
            "status": "succeeded",
            "resourceLocation": format!("{}/v1.0{}/workbook/sessionInfoResource?key={op_id}", sim.base_url(), op.workbook_prefix),
        })
    } else {
        json!({ "id": op_id, "status": "running" })
    };
    SimResponse::json(StatusCode::OK, body)
}

fn batch(sim: &Sim, outer: &HeaderMap, body: &[u8], ids: &Ids) -> SimResponse {
    if sim.config.batch == super::SimBatch::Missing {
        return ids.error(StatusCode::BAD_REQUEST, "BadRequest", None, "Resource not found for the segment '$batch'.");
    }
    sim.state().stats.batches += 1;
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return ids.error(StatusCode::BAD_REQUEST, "BadRequest", None, "The batch body is not JSON.");
    };
    let Some(items) = request.get("requests").and_then(Value::as_array) else {
        return ids.error(StatusCode::BAD_REQUEST, "BadRequest", None, "The batch body has no requests array.");
    };
    if items.is_empty() || items.len() > 20 {
        return ids.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            None,
            &format!("A batch holds 1 to 20 requests; this one has {}.", items.len()),
        );
    }
    let mut statuses: Vec<(String, u16)> = Vec::new();
    let mut responses = Vec::new();
    for item in items {
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let item_ids = Ids {
            request_id: uuid::Uuid::new_v4().to_string(),
            client_request_id: ids.client_request_id.clone(),
            date: ids.date,
        };
        let depends: Vec<&str> = item
            .get("dependsOn")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let answer = if depends.iter().any(|d| !statuses.iter().any(|(i, s)| i == d && *s < 400)) {
            item_ids.error(
                StatusCode::FAILED_DEPENDENCY,
                "failedDependency",
                None,
                "A request this one depends on failed.",
            )
        } else {
            let method = item.get("method").and_then(Value::as_str).and_then(|m| Method::from_bytes(m.as_bytes()).ok());
            let url = item.get("url").and_then(Value::as_str).unwrap_or_default();
            let (path, query) = url.split_once('?').map_or((url, None), |(p, q)| (p, Some(q)));
            let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
            let mut headers: Vec<(String, String)> = item
                .get("headers")
                .and_then(Value::as_object)
                .map(|h| {
                    h.iter().filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_string()))).collect()
                })
                .unwrap_or_default();
            headers.extend(header_pairs(outer).into_iter().filter(|(k, _)| k == "authorization"));
            let body = item.get("body").map(|b| b.to_string()).unwrap_or_default();
            match method {
                Some(_) if sim.config.batch == super::SimBatch::Ignored && path.ends_with("/refreshSession") => {
                    sim.state().stats.requests += 1;
                    SimResponse::empty(StatusCode::NO_CONTENT)
                }
                Some(method) if !id.is_empty() => {
                    route(sim, &method, &path, query, &headers, body.as_bytes(), &item_ids)
                }
                _ => item_ids.error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    None,
                    "Each request needs an id and a method.",
                ),
            }
        };
        statuses.push((id.clone(), answer.status.as_u16()));
        let headers: serde_json::Map<String, Value> =
            answer.headers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        responses.push(json!({ "id": id, "status": answer.status.as_u16(), "headers": headers, "body": answer.body }));
    }
    // Graph answers in any order; so does the simulator, to keep clients honest.
    responses.reverse();
    SimResponse::json(StatusCode::OK, json!({ "responses": responses }))
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Sim {
    fn lookup(&self, reference: &WorkbookRef) -> Option<String> {
        let state = self.state();
        match reference {
            WorkbookRef::MyPath { path } => state
                .workbooks
                .iter()
                .find(|(_, p)| p.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(path)))
                .map(|(id, _)| id.clone()),
            WorkbookRef::MyItem { item }
            | WorkbookRef::DriveItem { item, .. }
            | WorkbookRef::OwnedItem { item, .. } => state.workbooks.contains_key(item).then(|| item.clone()),
        }
    }

    pub(super) fn create(&self, workbook: &str, persistent: bool) -> String {
        let id = format!("cluster=SIM&session={}", self.random_text(280));
        let now = self.clock.now();
        let mut state = self.state();
        state.stats.created += 1;
        if state.sessions.len() >= 1024 && state.sessions.len().is_power_of_two() {
            // Forget long-dead sessions now and then so a long run does not grow without bound.
            let expiry =
                chrono::Duration::from_std(self.config.persistent_expiry.max(self.config.non_persistent_expiry) * 4)
                    .unwrap_or(chrono::Duration::MAX);
            state.sessions.retain(|_, s| now - s.last_activity < expiry);
        }
        state.sessions.insert(id.clone(), SimSession::new(workbook.to_string(), persistent, now));
        id
    }

    /// Marks activity on a live session of this workbook; false when it is unknown, closed or expired.
    fn touch(&self, id: &str, workbook: &str) -> bool {
        let now = self.clock.now();
        let mut state = self.state();
        let alive = match state.sessions.get(id) {
            Some(s) => s.workbook == workbook && !self.is_expired(s, now),
            None => false,
        };
        if alive {
            if let Some(s) = state.sessions.get_mut(id) {
                s.last_activity = now;
            }
        } else if state.sessions.get(id).is_some_and(|s| s.workbook == workbook) {
            state.sessions.remove(id);
        }
        alive
    }
}
