//! `wbsessions proxy` as a script uses it: the real binary between a plain HTTP client and the
//! simulator, over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use wbsessions::sim::SimConfig;
use wbsessions::time::Clock;

/// The token the proxy holds: distinct enough to find in any answer that leaked it.
const REAL_TOKEN: &str = "real-token-7f3c9a";

struct Running {
    child: Child,
    url: String,
    secret: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_proxy(cli: &Cli) -> Running {
    start_proxy_with(cli, &[])
}

fn start_proxy_with(cli: &Cli, extra: &[&str]) -> Running {
    start_proxy_holding(cli, extra, REAL_TOKEN)
}

/// The proxy, holding `token` as its sign-in.
fn start_proxy_holding(cli: &Cli, extra: &[&str], token: &str) -> Running {
    let mut args = vec!["proxy", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut child = cli
        .command(&args)
        .env("WBSESSIONS_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let url = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {first:?}")).to_string();
    // What a script's shell gets from `eval "$(wbsessions proxy --print-env)"`.
    let env = cli.ok(&["proxy", "--print-env"]);
    let value = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}='"))?.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{name} in {env}"))
            .to_string()
    };
    assert_eq!(value("WBSESSIONS_GRAPH_URL"), url);
    Running { child, url, secret: value("WBSESSIONS_PROXY_TOKEN") }
}

/// A command that calls Graph itself, with the token the simulator takes.
fn with_token(cli: &Cli, args: &[&str]) {
    let out = cli.command(args).env("WBSESSIONS_TOKEN", REAL_TOKEN).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn config(latency: Duration) -> SimConfig {
    SimConfig {
        token: Some(REAL_TOKEN.into()),
        latency: Some((latency, latency)),
        ..sim_config(&[("W1", None), ("W2", None)])
    }
}

fn range(base: &str, workbook: &str) -> String {
    format!("{base}/me/drive/items/{workbook}/workbook/worksheets/Sheet1/range(address='A1')")
}

#[test]
fn a_script_writes_and_reads_a_range_with_the_tracked_session_and_never_sees_the_token() {
    let sim = SimThread::start(config(Duration::ZERO), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    // Non-persistent: what it writes stays in the session, so reading the workbook without it
    // shows whether the proxy really sent the session's id.
    with_token(&cli, &["create", "a", "--workbook", "me/drive/items/W1", "--non-persistent"]);
    let id = cli.ok(&["id", "a", "--any"]).trim().to_string();
    let proxy = start_proxy(&cli);
    let http = http();
    let mut answers = Vec::new();
    block_on(async {
        let patched = http
            .patch(range(&proxy.url, "W1"))
            .bearer_auth(&proxy.secret)
            .body(r#"{"values":[[42]]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 200);
        assert_eq!(patched.headers()["x-wbsessions-session"], "a");
        answers.push(format!("{:?}", patched.headers()));
        answers.push(patched.text().await.unwrap());
        let read = http.get(range(&proxy.url, "W1")).bearer_auth(&proxy.secret).send().await.unwrap();
        assert_eq!(read.status(), 200);
        let body: serde_json::Value = read.json().await.unwrap();
        assert_eq!(body["values"], serde_json::json!([[42]]));
        // At the simulator: the value is in session `a` and nowhere else.
        let direct = |session: Option<&str>| {
            let mut request = http.get(range(&sim.url, "W1")).bearer_auth(REAL_TOKEN);
            if let Some(id) = session {
                request = request.header("workbook-session-id", id);
            }
            request
        };
        let without: serde_json::Value = direct(None).send().await.unwrap().json().await.unwrap();
        assert_eq!(without["values"], serde_json::json!([[""]]));
        let with: serde_json::Value = direct(Some(&id)).send().await.unwrap().json().await.unwrap();
        assert_eq!(with["values"], serde_json::json!([[42]]));

        // Who may not get in, and what does not go through.
        let url = range(&proxy.url, "W1");
        let no_secret = http.get(&url).send().await.unwrap();
        assert_eq!(no_secret.status(), 401);
        let wrong = http.get(&url).bearer_auth("guess").send().await.unwrap();
        assert_eq!(wrong.status(), 401);
        let body: serde_json::Value = wrong.json().await.unwrap();
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken", "Graph's error shape");
        let rebound = http.get(&url).bearer_auth(&proxy.secret).header("host", "evil.example").send().await.unwrap();
        assert_eq!(rebound.status(), 403);
        let elsewhere = http.get(format!("{}/me/messages", proxy.url)).bearer_auth(&proxy.secret).send().await.unwrap();
        assert_eq!(elsewhere.status(), 403);
        let unknown = http.get(&url).bearer_auth(&proxy.secret).header("x-wbsessions-session", "nobody").send();
        assert_eq!(unknown.await.unwrap().status(), 404);
        let untracked = http.get(range(&proxy.url, "W2")).bearer_auth(&proxy.secret).send().await.unwrap();
        assert_eq!(untracked.status(), 409, "no session is tracked on W2");
        for answer in [no_secret, rebound, elsewhere, untracked] {
            answers.push(format!("{:?}", answer.headers()));
            answers.push(answer.text().await.unwrap());
        }
    });
    for answer in &answers {
        assert!(!answer.contains(REAL_TOKEN), "the token reached a caller: {answer}");
    }
    assert!(!log_text(&cli.home).contains(REAL_TOKEN), "the token is in the log");
}

#[test]
fn writes_to_one_workbook_reach_graph_one_after_the_other() {
    let sim = SimThread::start(config(Duration::from_millis(300)), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    with_token(&cli, &["create", "a", "--workbook", "me/drive/items/W1"]);
    let id = cli.ok(&["id", "a"]).trim().to_string();
    let http = http();
    let patch = |base: &str, bearer: &str, session: Option<&str>| {
        let mut request = http.patch(range(base, "W1")).bearer_auth(bearer).body(r#"{"values":[[1]]}"#);
        if let Some(id) = session {
            request = request.header("workbook-session-id", id);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Straight at the simulator, two at once overlap: the check can see it.
    block_on(async {
        let (a, b) = tokio::join!(patch(&sim.url, REAL_TOKEN, Some(&id)), patch(&sim.url, REAL_TOKEN, Some(&id)));
        assert_eq!((a, b), (200, 200));
    });
    assert_eq!(sim.sim.stats().overlapping_writes, 1);
    let proxy = start_proxy(&cli);
    block_on(async {
        let (a, b, c) = tokio::join!(
            patch(&proxy.url, &proxy.secret, None),
            patch(&proxy.url, &proxy.secret, None),
            patch(&proxy.url, &proxy.secret, Some(&id)),
        );
        assert_eq!((a, b, c), (200, 200, 200));
    });
    assert_eq!(sim.sim.stats().overlapping_writes, 1, "the proxy let two writes on W1 overlap");
}

#[test]
fn calls_through_the_proxy_keep_the_session_alive_without_refreshes() {
    // Idle expiry 6 s, refreshed every 3 s when idle; a script calls every second for 8 s.
    let sim = SimThread::start(
        SimConfig { persistent_expiry: Duration::from_secs(6), ..config(Duration::ZERO) },
        Clock::system(),
    );
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    with_token(&cli, &["create", "a", "--workbook", "me/drive/items/W1", "--interval", "3s"]);
    let proxy = start_proxy(&cli);
    let http = http();
    let before = sim.sim.stats().refreshed;
    block_on(async {
        for _ in 0..8 {
            let read = http.get(range(&proxy.url, "W1")).bearer_auth(&proxy.secret).send().await.unwrap();
            assert_eq!(read.status(), 200);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    assert_eq!(sim.sim.stats().refreshed, before, "the keeper refreshed a session its caller kept busy");
    assert_eq!(sim.sim.live_sessions().len(), 1);
    // The calls are the session's activity, in its history (one line a second at most).
    let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "a", "--json"])).unwrap();
    let calls = shown["outcomes"].as_array().unwrap().iter().filter(|o| o["action"] == "call").count();
    assert!((6..=8).contains(&calls), "{calls} calls in {shown}");
    // Left alone, the keeper takes over again.
    wait_for("the keeper's refresh", Duration::from_secs(10), || sim.sim.stats().refreshed > before);
}

#[test]
fn a_session_that_expired_under_a_call_is_recreated_and_the_call_sent_again_once() {
    let sim = SimThread::start(
        SimConfig {
            workbooks: vec![("W1".into(), None), ("W2".into(), None), ("W3".into(), None)],
            ..config(Duration::ZERO)
        },
        Clock::system(),
    );
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    with_token(&cli, &["create", "kept", "--workbook", "me/drive/items/W1", "--recreate"]);
    with_token(&cli, &["create", "scratch", "--workbook", "me/drive/items/W2", "--recreate", "--non-persistent"]);
    with_token(&cli, &["create", "plain", "--workbook", "me/drive/items/W3"]);
    let ids: Vec<String> = ["kept", "scratch", "plain"].iter().map(|n| cli.ok(&["id", n]).trim().to_string()).collect();
    let proxy = start_proxy(&cli);
    let http = http();
    let patch = |workbook: &str, value: i64| {
        http.patch(range(&proxy.url, workbook))
            .bearer_auth(&proxy.secret)
            .body(format!(r#"{{"values":[[{value}]]}}"#))
            .send()
    };
    block_on(async {
        assert_eq!(patch("W2", 7).await.unwrap().status(), 200);
        for id in &ids {
            assert!(sim.sim.drop_session(id), "Graph drops the session");
        }
        let writes = sim.sim.stats().range_writes;
        // Persistent and recreatable: a new session, and the call goes again on it, once.
        let kept = patch("W1", 42).await.unwrap();
        assert_eq!(kept.status(), 200);
        assert_eq!(kept.headers()["x-wbsessions-session-state"], "recreated");
        assert_eq!(sim.sim.stats().range_writes, writes + 1);
        let read: serde_json::Value =
            http.get(range(&proxy.url, "W1")).bearer_auth(&proxy.secret).send().await.unwrap().json().await.unwrap();
        assert_eq!(read["values"], serde_json::json!([[42]]));
        // Non-persistent: recreated, but what was done in the lost session is gone, and the
        // caller is told so rather than have the call sent where its earlier work is missing.
        let scratch = patch("W2", 8).await.unwrap();
        assert_eq!(scratch.status(), 404);
        assert_eq!(scratch.headers()["x-wbsessions-session-state"], "recreated-changes-lost");
        let body: serde_json::Value = scratch.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("changes made in the expired session are gone"));
        assert_eq!(sim.sim.stats().range_writes, writes + 1, "nothing was sent again for the non-persistent session");
        // Not allowed to be recreated: the error, and the session stays expired.
        let plain = patch("W3", 9).await.unwrap();
        assert_eq!(plain.status(), 404);
        assert_eq!(plain.headers()["x-wbsessions-session-state"], "expired");
    });
    assert_ne!(cli.ok(&["id", "kept"]).trim(), ids[0]);
    assert_ne!(cli.ok(&["id", "scratch"]).trim(), ids[1]);
    let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "kept", "--json"])).unwrap();
    let history: Vec<(String, String)> = shown["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["action"].as_str().unwrap().to_string(), o["status"].as_str().unwrap().to_string()))
        .collect();
    assert!(history.contains(&("call".into(), "expired".into())), "{history:?}");
    assert_eq!(history.iter().filter(|(a, s)| a == "create" && s == "ok").count(), 2, "{history:?}");
    // Written as the answer goes back: there within moments.
    wait_for("plain shown expired", Duration::from_secs(5), || {
        let plain: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "plain", "--json"])).unwrap();
        plain["status"] == "expired"
    });
}

#[test]
fn a_batch_goes_through_with_each_workbook_call_given_its_session() {
    let sim = SimThread::start(config(Duration::ZERO), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    with_token(&cli, &["create", "a", "--workbook", "me/drive/items/W1", "--non-persistent"]);
    with_token(&cli, &["create", "b", "--workbook", "me/drive/items/W2", "--non-persistent"]);
    let id_a = cli.ok(&["id", "a"]).trim().to_string();
    let proxy = start_proxy(&cli);
    let http = http();
    let batch = |body: serde_json::Value| {
        http.post(format!("{}/$batch", proxy.url)).bearer_auth(&proxy.secret).json(&body).send()
    };
    block_on(async {
        let answer = batch(serde_json::json!({ "requests": [
            { "id": "1", "method": "PATCH", "url": "/me/drive/items/W1/workbook/worksheets/Sheet1/range(address='A1')",
              "headers": { "content-type": "application/json" }, "body": { "values": [[5]] } },
            { "id": "2", "method": "GET", "url": "me/drive/items/W2/workbook/worksheets/Sheet1/range(address='A1')" },
        ]}))
        .await
        .unwrap();
        assert_eq!(answer.status(), 200);
        let body: serde_json::Value = answer.json().await.unwrap();
        let statuses: Vec<u64> =
            body["responses"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
        assert_eq!(statuses, [200, 200], "{body}");
        // The write went to session `a`: the workbook itself has nothing.
        let read = |session: Option<&str>| {
            let mut request = http.get(range(&sim.url, "W1")).bearer_auth(REAL_TOKEN);
            if let Some(id) = session {
                request = request.header("workbook-session-id", id);
            }
            async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap()["values"].clone() }
        };
        assert_eq!(read(Some(&id_a)).await, serde_json::json!([[5]]));
        assert_eq!(read(None).await, serde_json::json!([[""]]));
        // One request that is not a workbook call refuses the whole batch.
        let refused = batch(serde_json::json!({ "requests": [
            { "id": "1", "method": "GET", "url": "/me/drive/items/W1/workbook/worksheets" },
            { "id": "2", "method": "GET", "url": "/me/messages" },
        ]}))
        .await
        .unwrap();
        assert_eq!(refused.status(), 403);
        assert!(refused.text().await.unwrap().contains("request 2"));
    });
    assert_eq!(sim.sim.stats().batches, 1, "the refused batch never reached Graph");
}

#[test]
fn run_serves_the_proxy_on_its_own_engine() {
    let sim = SimThread::start(config(Duration::ZERO), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    with_token(&cli, &["create", "a", "--workbook", "me/drive/items/W1"]);
    let mut run = cli
        .command(&["run", "--proxy", "--listen", "127.0.0.1:0"])
        .env("WBSESSIONS_TOKEN", REAL_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(run.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("wbsessions: proxy listening on ").map(str::to_string))
        .expect("run says where its proxy listens");
    let env = cli.ok(&["proxy", "--print-env"]);
    assert!(env.contains(&url), "{env}");
    let secret =
        env.lines().find_map(|l| l.strip_prefix("export WBSESSIONS_PROXY_TOKEN='")?.strip_suffix('\'')).unwrap();
    let status = block_on(async { http().get(range(&url, "W1")).bearer_auth(secret).send().await.unwrap().status() });
    assert_eq!(status, 200);
    sigterm(&run);
    assert!(run.wait().unwrap().success());
    // Stopped, it no longer says where it was.
    assert!(cli.output(&["proxy", "--print-env"]).status.code() == Some(1));
}

#[test]
fn a_by_path_call_finds_its_session_and_create_makes_one_where_none_is_tracked() {
    let sim = SimThread::start(
        SimConfig {
            workbooks: vec![("W1".into(), Some("Reports/Q1.xlsx".into())), ("W2".into(), None)],
            ..config(Duration::ZERO)
        },
        Clock::system(),
    );
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    // Tracked by path: stored as its item, as create resolves it.
    with_token(&cli, &["create", "q1", "--workbook", "/me/drive/root:/Reports/Q1.xlsx:"]);
    let proxy = start_proxy_with(&cli, &["--create"]);
    let http = http();
    block_on(async {
        let by_path =
            format!("{}/me/drive/root:/Reports/Q1.xlsx:/workbook/worksheets/Sheet1/range(address='A1')", proxy.url);
        let answer = http.get(&by_path).bearer_auth(&proxy.secret).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["x-wbsessions-session"], "q1");
        // Nothing tracked on W2: with --create the proxy makes a session and uses it.
        let made = http.get(range(&proxy.url, "W2")).bearer_auth(&proxy.secret).send().await.unwrap();
        assert_eq!(made.status(), 200);
        assert_eq!(made.headers()["x-wbsessions-session"], "proxy-W2");
    });
    let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "proxy-W2", "--json"])).unwrap();
    assert_eq!((shown["mode"].as_str(), shown["recreate"].as_bool()), (Some("persistent"), Some(true)));
}

#[test]
fn with_track_a_callers_own_sessions_are_tracked_and_marked_closed() {
    let sim = SimThread::start(config(Duration::ZERO), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let proxy = start_proxy_with(&cli, &["--track"]);
    let http = http();
    let workbook = format!("{}/me/drive/items/W2/workbook", proxy.url);
    let id = block_on(async {
        let created = http
            .post(format!("{workbook}/createSession"))
            .bearer_auth(&proxy.secret)
            .json(&serde_json::json!({ "persistChanges": false }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let id = created.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        // Its own id goes through untouched.
        let patched = http
            .patch(range(&proxy.url, "W2"))
            .bearer_auth(&proxy.secret)
            .header("workbook-session-id", &id)
            .body(r#"{"values":[[3]]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 200);
        id
    });
    let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "proxy-W2", "--json"])).unwrap();
    assert_eq!((shown["session_id"].as_str(), shown["mode"].as_str()), (Some(id.as_str()), Some("non-persistent")));
    block_on(async {
        let closed = http
            .post(format!("{workbook}/closeSession"))
            .bearer_auth(&proxy.secret)
            .header("workbook-session-id", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(closed.status(), 204);
    });
    wait_for("proxy-W2 shown closed", Duration::from_secs(5), || {
        let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["show", "proxy-W2", "--json"])).unwrap();
        shown["status"] == "closed"
    });
}

#[test]
fn a_graph_that_does_not_answer_holds_a_call_no_longer_than_the_request_timeout() {
    let sim = SimThread::start(config(Duration::from_secs(6)), Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    cli.config("request_timeout = \"1s\"\n");
    let id = sim.sim.open_session("W1");
    cli.ok(&["add", "a", "--workbook", "me/drive/items/W1", "--session-id", &id]);
    let proxy = start_proxy(&cli);
    let http = http();
    let started = std::time::Instant::now();
    let status =
        block_on(async { http.get(range(&proxy.url, "W1")).bearer_auth(&proxy.secret).send().await.unwrap().status() });
    assert_eq!(status, 502);
    assert!(started.elapsed() < Duration::from_secs(4), "held {:?}", started.elapsed());
}

/// A Graph that answers every call with the start of a 200 and hangs up halfway: the answer a
/// proxy must not pass on as if it were whole.
fn graph_that_breaks_off() -> String {
    hostile_graph(true).0
}

/// A request's head as a hand-written server reads it: up to the blank line (`Err`: what came
/// before the connection ended or failed).
fn request_head(stream: &mut std::net::TcpStream) -> Result<Vec<u8>, Vec<u8>> {
    use std::io::Read as _;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return Err(seen),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Ok(seen)
}

/// A hostile Graph on loopback: it reads each request's headers, says so on the channel, then
/// breaks off halfway through an answer (`answers`) or holds the connection without a word.
fn hostile_graph(answers: bool) -> (String, std::sync::mpsc::Receiver<()>) {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1.0", listener.local_addr().unwrap());
    let (heard, hearing) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _head = request_head(&mut stream);
            let _ = heard.send(());
            if answers {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"responses\":[{\"id\":\"1\",",
                );
            } else {
                held.push(stream);
            }
        }
    });
    (url, hearing)
}

#[test]
fn a_batch_answer_that_breaks_off_reaches_the_caller_as_a_failure_not_a_short_success() {
    let graph = graph_that_breaks_off();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&graph, dir.path());
    let proxy = start_proxy(&cli);
    let http = http();
    block_on(async {
        let answer = http
            .post(format!("{}/$batch", proxy.url))
            .bearer_auth(&proxy.secret)
            .json(&serde_json::json!({ "requests": [
                { "id": "1", "method": "GET", "url": "/me/drive/items/W1/workbook/worksheets",
                  "headers": { "workbook-session-id": "callers-own" } },
            ]}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 502);
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "answerCutOff", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("may have run"), "{body}");
    });
}

/// A caller that opens a connection and never finishes its headers is let go of: thousands of
/// them must not hold the proxy's connections for good.
#[test]
fn a_caller_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read as _, Write as _};
    let graph = graph_that_breaks_off();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&graph, dir.path());
    let proxy = start_proxy(&cli);
    let address = proxy.url.trim_start_matches("http://").trim_end_matches("/v1.0").to_string();
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /v1.0/me HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    // The proxy closes the connection (with a 408 or without a word); a read that times out
    // instead means it was kept.
    let closed = slow.read_to_end(&mut rest).is_ok();
    assert!(closed, "the connection was still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(15), "closed only after {:?}", started.elapsed());
}

/// SIGTERM while a call hangs at Graph: the proxy stops within a few seconds, not when the call
/// would have ended.
#[test]
fn the_proxy_stops_promptly_with_a_call_hanging_at_graph() {
    let (graph, heard) = hostile_graph(false);
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&graph, dir.path());
    cli.config("request_timeout = \"60s\"\n");
    let mut proxy = start_proxy(&cli);
    let (url, secret) = (range(&proxy.url, "W1"), proxy.secret.clone());
    let call = std::thread::spawn(move || {
        block_on(async { http().get(url).bearer_auth(secret).header("workbook-session-id", "own").send().await })
    });
    heard.recv_timeout(Duration::from_secs(10)).expect("the call reached Graph");
    let pid = libc::pid_t::try_from(proxy.child.id()).unwrap();
    let started = std::time::Instant::now();
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = proxy.child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(9), "stopped after {:?}", started.elapsed());
    assert!(status.success(), "{status:?}");
    assert!(call.join().unwrap().is_err(), "the hanging call was cut, not answered");
}

/// A Graph that echoes what it was sent, on a 200 and on a 400 over 64 KiB: the token is taken
/// out of every answer, whole or streamed, and a long error answer reaches the caller whole.
fn graph_that_echoes() -> String {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1.0", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = request_head(&mut stream).unwrap_or_else(|partial| partial);
            let text = String::from_utf8_lossy(&seen).to_string();
            let auth =
                text.lines().find(|l| l.to_ascii_lowercase().starts_with("authorization:")).unwrap_or("").to_string();
            let (status, body) = if text.contains("/big-error") {
                let padding = "x".repeat(100_000);
                (
                    "400 Bad Request",
                    format!("{{\"error\":{{\"code\":\"badRequest\",\"message\":\"{padding} {auth} end\"}}}}"),
                )
            } else {
                ("200 OK", format!("{{\"you_sent\":\"{auth}\"}}"))
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-echo: {auth}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn the_token_is_taken_out_of_every_answer_and_a_long_error_arrives_whole() {
    let graph = graph_that_echoes();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&graph, dir.path());
    let proxy = start_proxy(&cli);
    let http = http();
    block_on(async {
        for (path, status) in [("worksheets", 200), ("big-error", 400)] {
            let answer = http
                .get(format!("{}/me/drive/items/W1/workbook/{path}", proxy.url))
                .bearer_auth(&proxy.secret)
                .header("workbook-session-id", "own")
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), status);
            let echoed = answer.headers()["x-echo"].to_str().unwrap().to_string();
            let body = answer.text().await.unwrap();
            assert!(
                !echoed.contains(REAL_TOKEN) && !body.contains(REAL_TOKEN),
                "{echoed} / {}",
                &body[body.len().saturating_sub(200)..]
            );
            assert!(echoed.contains("withheld"), "{echoed}");
            if status == 400 {
                assert!(body.len() > 100_000 && body.ends_with("end\"}}"), "the whole error, {} bytes", body.len());
            }
        }
    });
}

/// A token too short to be a secret (a test's `t`) is left alone rather than replaced in every
/// answer; an error answer still reaches the caller at once.
#[test]
fn a_short_token_does_not_stall_an_error_answer() {
    let sim = SimThread::start(SimConfig { token: Some("t".into()), ..sim_config(&[("W1", None)]) }, Clock::system());
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let proxy = start_proxy_holding(&cli, &[], "t");
    let (url, secret) = (proxy.url.clone(), proxy.secret.clone());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let status = block_on(async {
        http.get(format!("{url}/me/drive/items/NOPE/workbook/worksheets"))
            .bearer_auth(&secret)
            .header("workbook-session-id", "own")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 404);
}

/// A caller that stops reading a long answer lets go of its workbook's turn after the request
/// timeout: the next call on the workbook goes through.
#[test]
fn a_caller_that_stops_reading_does_not_hold_its_workbook() {
    use std::io::{Read as _, Write as _};
    let (graph, _heard) = endless_graph();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&graph, dir.path());
    cli.config("request_timeout = \"2s\"\n");
    let proxy = start_proxy(&cli);
    let address = proxy.url.trim_start_matches("http://").trim_end_matches("/v1.0").to_string();
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stalled,
        "GET /v1.0/me/drive/items/W1/workbook/endless HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nworkbook-session-id: own\r\n\r\n",
        proxy.secret
    )
    .unwrap();
    let mut some = [0u8; 100];
    let _ = stalled.read(&mut some).unwrap();
    // It reads no more. Another call on the same workbook:
    let started = std::time::Instant::now();
    let status = block_on(async {
        http()
            .get(format!("{}/me/drive/items/W1/workbook/short", proxy.url))
            .bearer_auth(&proxy.secret)
            .header("workbook-session-id", "own")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(8), "waited {:?}", started.elapsed());
    drop(stalled);
}

/// A Graph whose `/endless` answer never ends (a megabyte at a time) and whose other answers
/// are short.
fn endless_graph() -> (String, ()) {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1.0", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let Ok(seen) = request_head(&mut stream) else { return };
                if String::from_utf8_lossy(&seen).contains("/endless") {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n",
                    );
                    let chunk = vec![b'x'; 1 << 20];
                    loop {
                        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
                            || stream.write_all(&chunk).is_err()
                            || stream.write_all(b"\r\n").is_err()
                        {
                            return;
                        }
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
            });
        }
    });
    (url, ())
}
