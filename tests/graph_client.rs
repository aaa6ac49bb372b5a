//! The Graph client against the simulator (and, for answers the simulator never gives, a scripted
//! server), over real loopback HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::time::Duration;

use common::*;
use wbsessions::graph::{ClientOptions, ErrorClass, GraphClient};
use wbsessions::session::{Mode, SessionId, WorkbookRef};
use wbsessions::sim::SimConfig;
use wbsessions::time::Clock;

fn wb(text: &str) -> WorkbookRef {
    WorkbookRef::parse(text).unwrap()
}

#[tokio::test]
async fn create_refresh_close_round_trip() {
    let sim = start_sim(sim_config(&[("W1", None)])).await;
    let graph = client(&sim.graph_url());
    let created = graph.create_session(TOKEN, &wb("me/drive/items/W1"), Mode::Persistent).await.unwrap();
    assert!(created.value.as_str().len() > 200, "session ids are long and opaque");
    assert_eq!(created.meta.http_status, Some(201));
    assert!(created.meta.request_id.is_some());

    let refreshed = graph.refresh_session(TOKEN, &wb("me/drive/items/W1"), &created.value).await.unwrap();
    assert_eq!(refreshed.meta.http_status, Some(204));

    // The same item reached through another drive prefix is the same workbook.
    graph.refresh_session(TOKEN, &wb("drives/D/items/W1"), &created.value).await.unwrap();

    graph.close_session(TOKEN, &wb("me/drive/items/W1"), &created.value).await.unwrap();
    let err = graph.refresh_session(TOKEN, &wb("me/drive/items/W1"), &created.value).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Expired);
    assert_eq!(err.meta.http_status, Some(404));
    assert_eq!(err.codes, ["itemNotFound", "invalidSessionReCreatable"]);
    assert!(err.meta.request_id.is_some(), "the failure keeps its request id");
    let stats = sim.sim.stats();
    assert_eq!((stats.created, stats.refreshed, stats.closed), (1, 2, 1));
}

#[tokio::test]
async fn idle_sessions_expire_on_the_simulators_clock() {
    let clock = Clock::manual(chrono::Utc::now());
    let config = SimConfig {
        persistent_expiry: Duration::from_secs(2),
        non_persistent_expiry: Duration::from_secs(4),
        ..sim_config(&[("W1", None)])
    };
    let sim = start_sim_with_clock(config, clock.clone()).await;
    let graph = client(&sim.graph_url());
    let book = wb("me/drive/items/W1");
    let persistent = graph.create_session(TOKEN, &book, Mode::Persistent).await.unwrap().value;
    let scratch = graph.create_session(TOKEN, &book, Mode::NonPersistent).await.unwrap().value;

    clock.advance(Duration::from_millis(1500));
    graph.refresh_session(TOKEN, &book, &persistent).await.expect("activity resets the idle timer");
    clock.advance(Duration::from_millis(1500));
    graph.refresh_session(TOKEN, &book, &persistent).await.expect("1.5 s idle is within 2 s");
    clock.advance(Duration::from_secs(2));
    let err = graph.refresh_session(TOKEN, &book, &persistent).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Expired);
    // The non-persistent session has its own, longer expiry: 5 s idle is past its 4 s.
    let err = graph.refresh_session(TOKEN, &book, &scratch).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Expired);
}

#[tokio::test]
async fn unknown_workbooks_and_bad_tokens_are_told_apart() {
    let sim = start_sim(sim_config(&[("W1", None)])).await;
    let graph = client(&sim.graph_url());
    let err = graph.create_session(TOKEN, &wb("me/drive/items/NOPE"), Mode::Persistent).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Failed);
    assert_eq!(err.codes, ["itemNotFound"]);

    let err = graph.create_session("wrong", &wb("me/drive/items/W1"), Mode::Persistent).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Auth);
    assert_eq!(err.meta.http_status, Some(401));

    let id = SessionId::new("cluster=SIM&session=never-issued").unwrap();
    let err = graph.refresh_session(TOKEN, &wb("me/drive/items/W1"), &id).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Expired);
}

#[tokio::test]
async fn async_create_polls_the_operation_to_the_session() {
    let config = SimConfig { async_create: Some(Duration::from_millis(150)), ..sim_config(&[("W1", None)]) };
    let sim = start_sim(config).await;
    let graph = client(&sim.graph_url());
    let before = sim.sim.stats().requests;
    let created = graph.create_session(TOKEN, &wb("me/drive/items/W1"), Mode::Persistent).await.unwrap();
    let made = sim.sim.stats().requests - before;
    assert!(made >= 3, "create, at least one poll, the resource: {made}");
    assert_eq!(u64::from(created.meta.requests), made, "every request is counted for the budget");
    graph.refresh_session(TOKEN, &wb("me/drive/items/W1"), &created.value).await.expect("the polled id is live");

    // Without Prefer: respond-async the same simulator answers 201 at once.
    let sync = GraphClient::new(&sim.graph_url(), ClientOptions { respond_async: false, ..fast_options() }).unwrap();
    let created = sync.create_session(TOKEN, &wb("me/drive/items/W1"), Mode::NonPersistent).await.unwrap();
    assert_eq!(created.meta.http_status, Some(201));
}

#[tokio::test]
async fn by_path_workbooks_resolve_to_item_ids() {
    let sim = start_sim(sim_config(&[("W1", None), ("W2", Some("Reports/Q1 2026.xlsx"))])).await;
    let graph = client(&sim.graph_url());
    let resolved = graph.resolve(TOKEN, &wb("/me/drive/root:/Reports/Q1 2026.xlsx:")).await.unwrap();
    assert_eq!(resolved.value, wb("me/drive/items/W2"));
    let err = graph.resolve(TOKEN, &wb("/me/drive/root:/missing.xlsx:")).await.unwrap_err();
    assert_eq!(err.meta.http_status, Some(404));
    let by_id = graph.resolve(TOKEN, &wb("me/drive/items/W1")).await.unwrap();
    assert_eq!(by_id.value, wb("me/drive/items/W1"), "an item reference needs no lookup");
}

#[tokio::test]
async fn throttling_carries_a_fractional_retry_after() {
    let config = SimConfig { throttle_rate: 1.0, seed: Some(7), ..sim_config(&[("W1", None)]) };
    let sim = start_sim(config).await;
    let graph = client(&sim.graph_url());
    let err = graph.create_session(TOKEN, &wb("me/drive/items/W1"), Mode::Persistent).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.meta.http_status, Some(429));
    let wait = err.retry_after.expect("a Retry-After came with the 429");
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(3), "{wait:?}");
    assert!(wait.subsec_nanos() != 0, "the simulator sends fractional seconds: {wait:?}");
    assert_eq!(err.codes[0], "TooManyRequests");
}

#[tokio::test]
async fn the_rate_limit_throttles_past_n_requests_per_ten_seconds() {
    let clock = Clock::manual(chrono::Utc::now());
    let config = SimConfig { rate_limit: Some(3), ..sim_config(&[("W1", None)]) };
    let sim = start_sim_with_clock(config, clock.clone()).await;
    let graph = client(&sim.graph_url());
    let book = wb("me/drive/items/W1");
    let id = graph.create_session(TOKEN, &book, Mode::Persistent).await.unwrap().value;
    clock.advance(Duration::from_secs(4));
    graph.refresh_session(TOKEN, &book, &id).await.unwrap();
    graph.refresh_session(TOKEN, &book, &id).await.unwrap();
    let err = graph.refresh_session(TOKEN, &book, &id).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.retry_after, Some(Duration::from_secs(6)), "the oldest request leaves the window 6 s from now");
    clock.advance(Duration::from_secs(6));
    graph.refresh_session(TOKEN, &book, &id).await.expect("the window moved on");
}

#[tokio::test]
async fn injected_errors_and_latency() {
    let config = SimConfig {
        error_rate: 1.0,
        latency: Some((Duration::from_millis(40), Duration::from_millis(60))),
        ..sim_config(&[("W1", None)])
    };
    let sim = start_sim(config).await;
    let graph = client(&sim.graph_url());
    let err = graph.create_session(TOKEN, &wb("me/drive/items/W1"), Mode::Persistent).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.meta.http_status, Some(500));
    assert!(err.meta.latency >= Duration::from_millis(40), "{:?}", err.meta.latency);
}

#[tokio::test]
async fn failing_workbooks_fail_every_session_call() {
    let config = SimConfig { failing_workbooks: vec!["W2".into()], ..sim_config(&[("W1", None), ("W2", None)]) };
    let sim = start_sim(config).await;
    let graph = client(&sim.graph_url());
    let id = graph.create_session(TOKEN, &wb("me/drive/items/W2"), Mode::Persistent).await.unwrap().value;
    let err = graph.refresh_session(TOKEN, &wb("me/drive/items/W2"), &id).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
}

#[tokio::test]
async fn batch_answers_each_item_on_its_own() {
    let sim = start_sim(sim_config(&[("W1", None)])).await;
    let graph = client(&sim.graph_url());
    let id = graph.create_session(TOKEN, &wb("me/drive/items/W1"), Mode::Persistent).await.unwrap().value;
    let http = http();
    let item = |n: usize, session: &str| {
        serde_json::json!({
            "id": n.to_string(), "method": "POST", "url": "/me/drive/items/W1/workbook/refreshSession",
            "headers": { "Content-Type": "application/json", "workbook-session-id": session }, "body": {}
        })
    };
    let body = serde_json::json!({ "requests": [item(1, id.as_str()), item(2, "cluster=SIM&session=unknown")] });
    let answer: serde_json::Value = http
        .post(format!("{}/$batch", sim.graph_url()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let responses = answer["responses"].as_array().unwrap();
    let status_of = |id: &str| responses.iter().find(|r| r["id"] == id).unwrap()["status"].as_u64().unwrap();
    assert_eq!(status_of("1"), 204);
    assert_eq!(status_of("2"), 404);
    let gone = responses.iter().find(|r| r["id"] == "2").unwrap();
    assert_eq!(gone["body"]["error"]["innerError"]["code"], "invalidSessionReCreatable");

    let too_many = serde_json::json!({ "requests": (0..21).map(|n| item(n, id.as_str())).collect::<Vec<_>>() });
    let answer =
        http.post(format!("{}/$batch", sim.graph_url())).bearer_auth(TOKEN).json(&too_many).send().await.unwrap();
    assert_eq!(answer.status(), 400);
    let unauthorized = http.post(format!("{}/$batch", sim.graph_url())).json(&body).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
}

#[tokio::test]
async fn every_error_body_identifies_the_request() {
    let sim = start_sim(sim_config(&[("W1", None)])).await;
    let answer = http()
        .post(format!("{}/me/drive/items/W1/workbook/refreshSession", sim.graph_url()))
        .bearer_auth(TOKEN)
        .header("client-request-id", "my-id-42")
        .header("workbook-session-id", "nope")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    let body: serde_json::Value = answer.json().await.unwrap();
    let inner = &body["error"]["innerError"];
    assert_eq!(inner["client-request-id"], "my-id-42");
    assert!(inner["request-id"].is_string() && inner["date"].is_string(), "{body}");
}

// --- answers the simulator never gives, from a scripted server ---

#[tokio::test]
async fn a_504_on_create_is_one_request_and_the_dispatcher_decides_to_send_it_again() {
    let server = script_server().await;
    server.push(Scripted::new(504, "<html>gateway timeout</html>"));
    let graph = client(&server.url());
    let err = graph.create_session(TOKEN, &wb("me/drive/items/X"), Mode::Persistent).await.unwrap_err();
    assert_eq!(err.meta.http_status, Some(504));
    assert_eq!((err.meta.requests, server.seen().len()), (1, 1), "no hidden resends: the engine sees every request");
    assert_eq!(err.message.as_deref(), Some("<html>gateway timeout</html>"), "a non-JSON body is kept as the message");
}

#[tokio::test]
async fn operation_statuses_are_read_case_insensitively_and_unknown_ones_wait() {
    let server = script_server().await;
    let op = format!("http://{}/v1.0/me/drive/items/X/workbook/operations/op1", server.addr);
    server.push(Scripted::new(202, "").header("location", op));
    server.push(Scripted::new(200, r#"{"id":"op1","status":"NotStarted"}"#));
    server.push(Scripted::new(200, r#"{"id":"op1","status":"RUNNING"}"#));
    server.push(Scripted::new(200, r#"{"id":"op1","status":"somethingNew"}"#));
    server.push(Scripted::new(200, r#"{"id":"op1","status":"Succeeded","resourceLocation":"/v1.0/me/drive/items/X/workbook/sessionInfoResource(key='k')?a=1&b=%2F"}"#));
    server.push(Scripted::new(200, r#"{"id":"S-async","persistChanges":false}"#));
    let graph = client(&server.url());
    let created = graph.create_session(TOKEN, &wb("me/drive/items/X"), Mode::NonPersistent).await.unwrap();
    assert_eq!(created.value.as_str(), "S-async");
    let seen = server.seen();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[0].headers["prefer"], "respond-async");
    assert_eq!(&seen[0].body[..], br#"{"persistChanges":false}"#);
    assert_eq!(
        seen[5].path_and_query, "/v1.0/me/drive/items/X/workbook/sessionInfoResource(key='k')?a=1&b=%2F",
        "resourceLocation is fetched exactly as given"
    );
}

#[tokio::test]
async fn a_failed_operation_is_an_error_with_its_codes() {
    let server = script_server().await;
    server.push(Scripted::new(202, "").header("location", "/v1.0/ops/1"));
    server.push(Scripted::new(200, r#"{"id":"1","status":"failed","error":{"code":"internalServerError","message":"boom","innerError":{"code":"invalidSessionUnsupportedWorkbook","request-id":"rq"}}}"#));
    let graph = client(&server.url());
    let err = graph.create_session(TOKEN, &wb("me/drive/items/X"), Mode::Persistent).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Dead);
    assert_eq!(err.codes, ["internalServerError", "invalidSessionUnsupportedWorkbook"]);
    assert_eq!(err.message.as_deref(), Some("boom"));
    assert_eq!(err.meta.request_id.as_deref(), Some("rq"));
}

#[tokio::test]
async fn locations_on_another_host_are_not_followed_with_the_token() {
    let server = script_server().await;
    server.push(Scripted::new(202, "").header("location", "https://evil.example/v1.0/ops/1"));
    let graph = client(&server.url());
    let err = graph.create_session(TOKEN, &wb("me/drive/items/X"), Mode::Persistent).await.unwrap_err();
    assert!(err.to_string().contains("another host"), "{err}");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn malformed_answers_become_errors_not_panics() {
    let server = script_server().await;
    let graph = client(&server.url());
    server.push(Scripted::new(201, "not json"));
    assert_eq!(
        graph.create_session(TOKEN, &wb("me/drive/items/X"), Mode::Persistent).await.unwrap_err().class,
        ErrorClass::Transient
    );
    server.push(Scripted::new(201, r#"{"id":"bad\nid"}"#));
    assert!(graph.create_session(TOKEN, &wb("me/drive/items/X"), Mode::Persistent).await.is_err());
    server.push(Scripted::new(202, ""));
    let err = graph.create_session(TOKEN, &wb("me/drive/items/X"), Mode::Persistent).await.unwrap_err();
    assert!(err.to_string().contains("Location"), "{err}");
    // A sessionful 502 with an HTML body: the documented "recreate the session".
    server.push(Scripted::new(502, "<html>bad gateway</html>"));
    let id = SessionId::new("S").unwrap();
    let err = graph.refresh_session(TOKEN, &wb("me/drive/items/X"), &id).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Expired);
    // A 503 with an HTTP-date Retry-After is throttling, with the wait read from the date.
    let when = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822().replace("+0000", "GMT");
    server.push(Scripted::new(503, "").header("retry-after", when));
    let err = graph.refresh_session(TOKEN, &wb("me/drive/items/X"), &id).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled);
    let wait = err.retry_after.unwrap();
    assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
}

#[tokio::test]
async fn requests_time_out_and_carry_fresh_client_request_ids() {
    let server = script_server().await;
    server.push(Scripted::new(204, ""));
    server.push(Scripted::new(204, "").delayed(Duration::from_secs(3)));
    let short = Duration::from_millis(300);
    let graph =
        GraphClient::new(&server.url(), ClientOptions { timeout: short, session_timeout: short, ..fast_options() })
            .unwrap();
    let id = SessionId::new("S-1").unwrap();
    let ok = graph.refresh_session(TOKEN, &wb("me/drive/items/X"), &id).await.unwrap();
    let err = graph.refresh_session(TOKEN, &wb("me/drive/items/X"), &id).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(err.to_string().contains("no answer within"), "{err}");
    let seen = server.seen();
    let ids: Vec<&str> = seen.iter().map(|s| s.headers["client-request-id"].to_str().unwrap()).collect();
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        uuid::Uuid::parse_str(id).expect("a UUID");
    }
    assert_eq!(ok.meta.client_request_id, ids[0]);
    assert_eq!(seen[0].headers["workbook-session-id"], "S-1");
    assert_eq!(seen[0].headers["authorization"], "Bearer T");
    assert_eq!(seen[0].path_and_query, "/v1.0/me/drive/items/X/workbook/refreshSession");
}

#[test]
fn plain_http_is_refused_unless_loopback() {
    for ok in [
        "https://graph.microsoft.com/v1.0",
        "http://127.0.0.1:8080/v1.0",
        "http://localhost/v1.0",
        "http://[::1]:9/v1.0",
    ] {
        assert!(GraphClient::new(ok, ClientOptions::default()).is_ok(), "{ok}");
    }
    for bad in [
        "http://graph.microsoft.com/v1.0",
        "http://10.0.0.1/v1.0",
        "ftp://x/v1.0",
        "not a url",
        // Basic credentials would travel beside the bearer token.
        "http://user:pass@127.0.0.1:9/v1.0",
        "https://user@graph.microsoft.com/v1.0",
    ] {
        assert!(GraphClient::new(bad, ClientOptions::default()).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_batch_refreshes_each_session_and_answers_for_each_in_the_order_given() {
    let sim = start_sim(sim_config(&[("W1", None), ("W2", None), ("W3", None)])).await;
    let graph = client(&sim.graph_url());
    let (w1, w2, w3) = (wb("me/drive/items/W1"), wb("me/drive/items/W2"), wb("me/drive/items/W3"));
    let s1 = graph.create_session(TOKEN, &w1, Mode::Persistent).await.unwrap().value;
    let s2 = graph.create_session(TOKEN, &w2, Mode::Persistent).await.unwrap().value;
    let unknown = SessionId::new("no-such-session").unwrap();
    let answer = graph.refresh_batch(TOKEN, &[(&w1, &s1), (&w3, &unknown), (&w2, &s2)]).await.unwrap();
    assert_eq!(answer.meta.http_status, Some(200));
    let [first, second, third] = &answer.value[..] else { panic!("{:?}", answer.value) };
    assert_eq!(first.as_ref().unwrap().meta.http_status, Some(204));
    assert_eq!(third.as_ref().unwrap().meta.http_status, Some(204));
    let gone = second.as_ref().unwrap_err();
    assert_eq!(gone.class, ErrorClass::Expired);
    assert_eq!(gone.codes, ["itemNotFound", "invalidSessionReCreatable"]);
    assert!(gone.meta.request_id.is_some(), "each item keeps its own request id");
    let stats = sim.sim.stats();
    assert_eq!((stats.batches, stats.refreshed), (1, 2));
}

#[tokio::test]
async fn a_batch_answer_is_read_leniently_and_each_item_classified_on_its_own() {
    let server = script_server().await;
    let graph = client(&server.url());
    let (w1, w2, w3) = (wb("me/drive/items/W1"), wb("drives/D/items/W2"), wb("me/drive/items/W3"));
    let id = SessionId::new("s").unwrap();
    // Numbers for ids, a 429 item with its own Retry-After, a 503 without a code, a repeated id
    // and one nobody sent.
    server.push(Scripted::new(
        200,
        r#"{"responses":[
            {"id":1,"status":429,"headers":{"Retry-After":"2.5"},"body":{"error":{"code":"TooManyRequests","message":"slow down"}}},
            {"id":"0","status":503,"headers":{}},
            {"id":"0","status":204},
            {"id":"2","status":204},
            {"id":"7","status":204}
        ]}"#,
    ));
    let answer = graph.refresh_batch(TOKEN, &[(&w1, &id), (&w2, &id), (&w3, &id)]).await.unwrap().value;
    let throttled = answer[1].as_ref().unwrap_err();
    assert_eq!(throttled.class, ErrorClass::Throttled);
    assert_eq!(throttled.retry_after, Some(Duration::from_millis(2500)));
    let unavailable = answer[0].as_ref().unwrap_err();
    assert_eq!(unavailable.meta.http_status, Some(503), "the first answer for an id counts");
    assert_eq!(unavailable.class, ErrorClass::Expired, "a 503 on a sessionful call means recreate");
    assert!(answer[2].is_ok());

    let seen = server.seen();
    assert_eq!(seen[0].path_and_query, "/v1.0/$batch");
    let sent: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    let requests = sent["requests"].as_array().unwrap();
    assert_eq!(requests[1]["url"], "/drives/D/items/W2/workbook/refreshSession", "relative to the version");
    assert_eq!(requests[1]["headers"]["workbook-session-id"], "s");
    assert_eq!(requests[1]["headers"]["Content-Type"], "application/json", "Graph wants it beside a body");

    // An answer that is not JSON, leaves a request unanswered or gives it no status: the batch
    // did not work, as a refused one.
    for body in [
        "<html>",
        r#"{"responses":[{"id":"0","status":204}]}"#,
        r#"{"responses":[{"id":"0"},{"id":"1","status":204}]}"#,
    ] {
        server.push(Scripted::new(200, body));
        let broken = graph.refresh_batch(TOKEN, &[(&w1, &id), (&w2, &id)]).await.unwrap_err();
        assert_eq!(broken.class, ErrorClass::Failed, "{body}: {broken}");
    }
    server.push(Scripted::new(
        400,
        r#"{"error":{"code":"BadRequest","message":"Resource not found for the segment '$batch'."}}"#,
    ));
    assert_eq!(graph.refresh_batch(TOKEN, &[(&w1, &id)]).await.unwrap_err().class, ErrorClass::Failed);
}

// ---- any request, forwarded ----------------------------------------------------------------------

fn forward(
    method: reqwest::Method,
    path: &str,
    headers: &[(&'static str, &str)],
    chunks: Vec<&'static [u8]>,
    body_limit: u64,
) -> wbsessions::graph::Forward<impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Sync> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, value.parse().unwrap());
    }
    let body = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(bytes::Bytes::from_static(c))));
    wbsessions::graph::Forward { method, path_and_query: path.into(), headers: map, body, body_limit }
}

#[tokio::test]
async fn a_forwarded_request_reaches_graph_with_our_token_and_its_body_streams_both_ways() {
    use futures_util::StreamExt;
    let server = script_server().await;
    server.push(Scripted::new(201, "{\"value\":[1,2,3]}").header("request-id", "R-1").header("x-graph", "kept"));
    let graph = client(&server.url());
    let request = forward(
        reqwest::Method::PATCH,
        "/me/drive/items/W1/workbook/worksheets('A')/range(address='A1')?$select=values",
        &[
            ("authorization", "Bearer the-callers-secret"),
            ("content-type", "application/json"),
            ("workbook-session-id", "S-1"),
            ("connection", "x-private"),
            ("x-private", "hop"),
        ],
        vec![b"{\"values\":", b"[[1]]}"],
        1024,
    );
    let answer = graph.transport().forward(TOKEN, request).await.unwrap();
    assert_eq!(answer.status.as_u16(), 201);
    assert_eq!(answer.request_id.as_deref(), Some("R-1"));
    assert_eq!(answer.headers.get("x-graph").unwrap(), "kept");
    let body: Vec<u8> = answer.body(1024).map(|c| c.unwrap().to_vec()).concat().await;
    assert_eq!(body, b"{\"value\":[1,2,3]}");
    let seen = &server.seen()[0];
    assert_eq!(seen.method, reqwest::Method::PATCH);
    assert_eq!(
        seen.path_and_query,
        "/v1.0/me/drive/items/W1/workbook/worksheets('A')/range(address='A1')?$select=values"
    );
    assert_eq!(seen.headers.get("authorization").unwrap(), &format!("Bearer {TOKEN}"), "ours, never the caller's");
    assert_eq!(seen.headers.get("workbook-session-id").unwrap(), "S-1", "the caller's headers pass");
    assert!(seen.headers.get("x-private").is_none(), "a header named in Connection stays on its hop");
    assert!(seen.headers.get("client-request-id").is_some());
    assert_eq!(&seen.body[..], b"{\"values\":[[1]]}");
}

#[tokio::test]
async fn a_forwarded_request_leaves_neither_the_base_nor_its_caps() {
    use futures_util::StreamExt;
    let server = script_server().await;
    let graph = client(&server.url());
    for path in ["/../beta/me", "//elsewhere/x", "/me/%2e%2e/%2e%2e/x", "https://evil.example/v1.0/me"] {
        let refused = graph.transport().forward(TOKEN, forward(reqwest::Method::GET, path, &[], vec![], 10)).await;
        assert!(matches!(refused, Err(wbsessions::graph::ForwardError::Refused(_))), "{path}");
    }
    let declared = forward(reqwest::Method::POST, "/me", &[("content-length", "11")], vec![b"01234567890"], 10);
    assert!(matches!(
        graph.transport().forward(TOKEN, declared).await,
        Err(wbsessions::graph::ForwardError::TooLarge(10))
    ));
    let streamed = forward(reqwest::Method::POST, "/me", &[], vec![b"012345", b"67890"], 10);
    assert!(matches!(
        graph.transport().forward(TOKEN, streamed).await,
        Err(wbsessions::graph::ForwardError::TooLarge(10))
    ));
    assert!(server.seen().iter().all(|s| s.body.len() <= 10), "nothing past the cap was sent whole");
    // An answer past the caller's cap is cut off with an error, not read whole.
    server.push(Scripted::new(200, &"x".repeat(5000)));
    let answer = graph.transport().forward(TOKEN, forward(reqwest::Method::GET, "/me", &[], vec![], 10)).await.unwrap();
    let chunks: Vec<_> = answer.body(1000).collect().await;
    assert!(chunks.iter().any(|c| matches!(c, Err(wbsessions::graph::ForwardError::TooLarge(1000)))));
}
