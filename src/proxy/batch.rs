//! `$batch` through the proxy: every request in it must be a drive-item or workbook call, each
//! workbook call gets its session as a single call would, and the batch goes out holding a turn
//! on each workbook it touches (taken in one order, so two batches never wait on each other).
//! Its answer is read whole: what each item found is what its workbook's turn reports.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::gate::{self, CallKind, GRAPH_SESSION_HEADER, SESSION_HEADER};
use super::{Proxy, error, header, refused_by_engine};
use crate::engine::{Choice, Passed, Reply, Request, Turn, TurnAsk};
use crate::graph::{CallKind as GraphCall, ErrorBody, Forward, classify, parse_retry_after};
use crate::session::WorkbookRef;

/// Graph's own limit on the requests in one batch.
const MAX_ITEMS: usize = 20;
/// A batch's JSON is read whole; this is more than twenty calls need.
const MAX_BATCH_BODY: usize = 4 * 1024 * 1024;

/// The calls of one workbook in the batch.
struct Lane {
    workbook: WorkbookRef,
    choice: Choice,
    /// Indexes of its items that get the session the turn brings.
    injected: Vec<usize>,
    /// Ids of all its items, to read their answers.
    ids: Vec<String>,
}

fn item_header<'a>(item: &'a Value, name: &str) -> Option<&'a str> {
    item.get("headers")?.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?.1.as_str()
}

/// Why a batch is not sent: the answer the caller gets.
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// Reads the batch and groups its items by workbook, or says what is wrong with it.
fn plan(body: &[u8], outer_named: Option<&str>) -> Result<(Value, BTreeMap<String, Lane>), Refused> {
    let bad = |message: String| Refused { status: StatusCode::BAD_REQUEST, code: "BadRequest", message };
    let batch: Value = serde_json::from_slice(body).map_err(|e| bad(format!("the batch is not JSON: {e}")))?;
    let items =
        batch.get("requests").and_then(Value::as_array).ok_or_else(|| bad("the batch has no requests array".into()))?;
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(bad(format!("a batch holds 1 to {MAX_ITEMS} requests; this one has {}", items.len())));
    }
    let mut lanes: BTreeMap<String, Lane> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let shown = crate::text::clean(&id, 40);
        let url = item.get("url").and_then(Value::as_str).ok_or_else(|| bad(format!("request {shown} has no url")))?;
        let path = url.split('?').next().unwrap_or_default().trim_start_matches('/');
        if path.eq_ignore_ascii_case("$batch") {
            return Err(Refused {
                status: StatusCode::FORBIDDEN,
                code: "notForwarded",
                message: format!("request {shown}: a $batch inside a $batch is not forwarded"),
            });
        }
        let target = gate::target(&format!("/v1.0/{path}")).map_err(|why| Refused {
            status: StatusCode::FORBIDDEN,
            code: "notForwarded",
            message: format!("request {shown}: {why}"),
        })?;
        let own = item_header(item, GRAPH_SESSION_HEADER).is_some();
        let named = item_header(item, SESSION_HEADER).or(outer_named).map(str::trim).filter(|n| !n.is_empty());
        let choice = match (&target.kind, own, named) {
            (CallKind::Workbook, false, Some(name)) => Choice::Named(name.to_string()),
            (CallKind::Workbook, false, None) => Choice::OnlyLive,
            _ => Choice::Without,
        };
        let lane = lanes.entry(target.workbook.to_string()).or_insert_with(|| Lane {
            workbook: target.workbook.clone(),
            choice: Choice::Without,
            injected: Vec::new(),
            ids: Vec::new(),
        });
        lane.ids.push(id);
        if choice == Choice::Without {
            continue;
        }
        if lane.choice != Choice::Without && lane.choice != choice {
            return Err(bad(format!(
                "the requests on {} ask for different sessions; send them in separate batches",
                lane.workbook
            )));
        }
        lane.choice = choice;
        lane.injected.push(i);
    }
    Ok((batch, lanes))
}

pub(super) async fn pass(
    proxy: &Proxy,
    parts: &axum::http::request::Parts,
    body: Body,
    path_and_query: &str,
    started: Instant,
) -> Response {
    let bytes = match tokio::time::timeout(proxy.transport.timeout(), axum::body::to_bytes(body, MAX_BATCH_BODY)).await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "requestTooLarge", "a batch is read whole, up to 4 MiB");
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "requestTimeout",
                "the batch did not arrive within the request timeout",
            );
        }
    };
    let outer_named = header(&parts.headers, SESSION_HEADER);
    let (mut batch, planned) = match plan(&bytes, outer_named) {
        Ok(planned) => planned,
        Err(refused) => {
            tracing::info!(status = refused.status.as_u16(), "proxy refused a $batch: {}", refused.message);
            return error(refused.status, refused.code, &refused.message);
        }
    };
    // A by-path workbook is its item: its calls share the item's lane and session.
    let mut lanes: BTreeMap<String, Lane> = BTreeMap::new();
    for mut lane in planned.into_values() {
        lane.workbook = match proxy.item_of(lane.workbook).await {
            Ok(item) => item,
            Err(answer) => return answer,
        };
        match lanes.entry(lane.workbook.to_string()) {
            std::collections::btree_map::Entry::Vacant(place) => {
                place.insert(lane);
            }
            std::collections::btree_map::Entry::Occupied(mut place) => {
                let merged = place.get_mut();
                if lane.choice != Choice::Without && merged.choice != Choice::Without && lane.choice != merged.choice {
                    let message = format!("the requests on {} ask for different sessions", lane.workbook);
                    return error(StatusCode::BAD_REQUEST, "BadRequest", &message);
                }
                if merged.choice == Choice::Without {
                    merged.choice = lane.choice;
                }
                merged.injected.extend(lane.injected);
                merged.ids.extend(lane.ids);
            }
        }
    }
    // Turns in the lanes' order: two batches on the same workbooks queue, never deadlock.
    let mut turns: Vec<(Turn, Vec<String>)> = Vec::new();
    for lane in lanes.into_values() {
        let named = match &lane.choice {
            Choice::Named(name) => Some(name.clone()),
            _ => None,
        };
        let ask = TurnAsk { workbook: lane.workbook, choice: lane.choice };
        let turn = match proxy.handle.ask(Request::Turn(ask)).await {
            Ok(Reply::Turn(turn)) => turn,
            Ok(_) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internalError", "the engine answered out of turn");
            }
            // The turns taken so far go back unused as they drop.
            Err(why) => return refused_by_engine(proxy, &parts.method, "$batch", &why, named.as_deref()),
        };
        if let Some(chosen) = &turn.session
            && let Some(items) = batch.get_mut("requests").and_then(Value::as_array_mut)
        {
            for &i in &lane.injected {
                if let Some(item) = items.get_mut(i).and_then(Value::as_object_mut) {
                    let headers = item.entry("headers").or_insert_with(|| json!({}));
                    if let Some(headers) = headers.as_object_mut() {
                        headers.retain(|k, _| !k.eq_ignore_ascii_case(SESSION_HEADER));
                        headers.insert(GRAPH_SESSION_HEADER.into(), json!(chosen.id.as_str()));
                    }
                }
            }
        }
        turns.push((turn, lane.ids));
    }
    let token = match proxy.tokens.get().await {
        Ok(token) => token,
        Err(why) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "noToken", &format!("the proxy cannot call Graph: {why}"));
        }
    };
    let Ok(body) = serde_json::to_vec(&batch) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internalError", "the batch could not be written again");
    };
    let mut headers = parts.headers.clone();
    headers.remove(SESSION_HEADER);
    headers.remove(axum::http::header::CONTENT_LENGTH);
    let below = path_and_query.strip_prefix("/v1.0").unwrap_or(path_and_query).to_string();
    let chunk: Result<bytes::Bytes, std::io::Error> = Ok(body.into());
    let request = Forward {
        method: parts.method.clone(),
        path_and_query: below,
        headers,
        body: futures_util::stream::iter([chunk]),
        body_limit: proxy.body_limit,
    };
    let forwarded = match proxy.transport.forward(token.secret.expose(), request).await {
        Ok(forwarded) => forwarded,
        Err(why) => {
            let sent = matches!(why, crate::graph::ForwardError::Unanswered(_));
            for (turn, _) in turns {
                turn.end(Passed { sent, latency: started.elapsed(), ..Passed::default() });
            }
            tracing::warn!(error = %why, "proxied $batch failed");
            return match why {
                crate::graph::ForwardError::TooLarge(_) => {
                    error(StatusCode::PAYLOAD_TOO_LARGE, "requestTooLarge", &why.to_string())
                }
                _ => error(StatusCode::BAD_GATEWAY, "graphUnanswered", &why.to_string()),
            };
        }
    };
    let status = forwarded.status;
    let mut answer_headers = forwarded.headers.clone();
    answer_headers.remove(axum::http::header::CONTENT_LENGTH);
    let request_id = forwarded.request_id.clone();
    let outer_wait = header(&forwarded.headers, "retry-after").and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    let answer = match super::answer::read_whole(forwarded.body(proxy.body_limit)).await {
        Ok(answer) => answer,
        Err(why) => {
            // Graph answered, so its items may have run; what they found is not known.
            for (turn, _) in turns {
                turn.end(Passed { sent: true, latency: started.elapsed(), ..Passed::default() });
            }
            tracing::warn!(error = %why, http_status = status.as_u16(), request_id = request_id.as_deref().unwrap_or("-"),
                "a proxied $batch's answer was not passed on");
            let (code, what) = match why {
                crate::graph::ForwardError::TooLarge(limit) => {
                    ("answerTooLarge", format!("it is larger than {limit} bytes (the proxy's --max-body)"))
                }
                other => ("answerCutOff", other.to_string()),
            };
            return error(
                StatusCode::BAD_GATEWAY,
                code,
                &format!(
                    "Graph's answer to the $batch was not passed on: {what}; its items may have run, so check before sending them again"
                ),
            );
        }
    };
    let latency = started.elapsed();
    let answered: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    for (turn, ids) in turns {
        let passed = if status.is_success() {
            lane_outcome(&answered, &ids)
        } else {
            let class = classify(status.as_u16(), &ErrorBody::parse(&answer), GraphCall::Other, outer_wait.is_some());
            Passed {
                http_status: Some(status.as_u16()),
                class: Some(class),
                retry_after: outer_wait,
                ..Passed::default()
            }
        };
        turn.end(Passed {
            sent: true,
            latency,
            request_id: passed.request_id.or_else(|| request_id.clone()),
            ..passed
        });
    }
    tracing::info!(
        http_status = status.as_u16(),
        latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        "proxied $batch"
    );
    super::scrub::scrub_headers(&mut answer_headers, token.secret.expose());
    let mut response = Response::new(Body::from(super::scrub::scrubbed(&answer, token.secret.expose())));
    *response.status_mut() = status;
    *response.headers_mut() = answer_headers;
    response
}

/// What a workbook's items found, as one call's outcome: the first failure among them, else
/// the first success.
fn lane_outcome(answered: &Value, ids: &[String]) -> Passed {
    let responses = answered.get("responses").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut outcome: Option<Passed> = None;
    for response in
        responses.iter().filter(|r| r.get("id").and_then(Value::as_str).is_some_and(|id| ids.iter().any(|i| i == id)))
    {
        let status = response.get("status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok()).unwrap_or(0);
        let mut item_headers = HeaderMap::new();
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, value) in headers {
                if let (Ok(name), Some(Ok(value))) = (
                    axum::http::HeaderName::from_bytes(name.as_bytes()),
                    value.as_str().map(axum::http::HeaderValue::from_str),
                ) {
                    item_headers.insert(name, value);
                }
            }
        }
        let retry_after = header(&item_headers, "retry-after").and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        if status >= 400 {
            let body = response.get("body").map(|b| b.to_string()).unwrap_or_default();
            let parsed = ErrorBody::parse(body.as_bytes());
            let class = classify(status, &parsed, GraphCall::Sessionful, retry_after.is_some());
            return Passed {
                http_status: Some(status),
                class: Some(class),
                retry_after,
                codes: parsed.all_codes(),
                request_id: parsed.request_id.clone(),
                ..Passed::default()
            };
        }
        outcome.get_or_insert(Passed { http_status: Some(status), ..Passed::default() });
    }
    // No answer for its items: nothing is known of them.
    outcome.unwrap_or_default()
}
