//! `wbsessions sim` as a user runs it: its first line, its flags, and the answers curl would see.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct SimProcess {
    child: Child,
    url: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_sim(args: &[&str]) -> SimProcess {
    let mut child = binary().arg("sim").args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    let ip_port: std::net::SocketAddr = addr.parse().expect("the first line names IP:PORT");
    assert!(ip_port.ip().is_loopback() && ip_port.port() != 0);
    SimProcess { child, url: format!("http://{addr}/v1.0"), _stdout: stdout }
}

async fn create(url: &str, workbook: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http()
        .post(format!("{url}/me/drive/items/{workbook}/workbook/createSession"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "persistChanges": true }));
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

async fn refresh(url: &str, token: Option<&str>, id: &str) -> reqwest::Response {
    let mut request = http()
        .post(format!("{url}/me/drive/items/W1/workbook/refreshSession"))
        .header("workbook-session-id", id)
        .json(&serde_json::json!({}));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn sim_serves_create_refresh_expiry_and_auth() {
    let sim = spawn_sim(&["--workbook", "W1", "--persistent-expiry", "1s", "--token", TOKEN]);
    let created = create(&sim.url, "W1", &[]).await;
    assert_eq!(created.status(), 201);
    let body: serde_json::Value = created.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(refresh(&sim.url, Some(TOKEN), &id).await.status(), 204);

    let no_bearer = refresh(&sim.url, None, &id).await;
    assert_eq!(no_bearer.status(), 401);
    let body: serde_json::Value = no_bearer.json().await.unwrap();
    assert!(body["error"]["code"].is_string());
    assert_eq!(refresh(&sim.url, Some("wrong"), &id).await.status(), 401);

    // Idle expiry against a real process: each probe touches its own session once, so the probes do
    // not keep anything alive; the first 404 shows the configured expiry at work, measured from
    // that session's own creation.
    let mut spares = Vec::new();
    for _ in 0..60 {
        let body: serde_json::Value = create(&sim.url, "W1", &[]).await.json().await.unwrap();
        spares.push((body["id"].as_str().unwrap().to_string(), Instant::now()));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut expired = None;
    for (spare, created) in &spares {
        let asked = Instant::now();
        let answer = refresh(&sim.url, Some(TOKEN), spare).await;
        if answer.status() == 404 {
            assert!(asked.duration_since(*created) >= Duration::from_millis(900), "sessions must not expire early");
            expired = Some(answer.json::<serde_json::Value>().await.unwrap());
            break;
        }
        assert_eq!(answer.status(), 204);
        assert!(Instant::now() < deadline, "no session expired within the deadline");
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let expired = expired.expect("a session expired");
    assert_eq!(expired["error"]["code"], "itemNotFound");
    assert_eq!(expired["error"]["innerError"]["code"], "invalidSessionReCreatable");
}

#[tokio::test]
async fn sim_async_create_reaches_succeeded() {
    let sim = spawn_sim(&["--workbook", "W1", "--token", TOKEN, "--async-create", "300ms"]);
    let accepted = create(&sim.url, "W1", &[("Prefer", "respond-async")]).await;
    assert_eq!(accepted.status(), 202);
    let location = accepted.headers()["location"].to_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let operation = loop {
        let op: serde_json::Value =
            http().get(&location).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        if op["status"] == "succeeded" {
            break op;
        }
        assert_eq!(op["status"], "running");
        assert!(Instant::now() < deadline, "the operation never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let resource = operation["resourceLocation"].as_str().unwrap();
    let session: serde_json::Value =
        http().get(resource).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    let id = session["id"].as_str().unwrap();
    assert_eq!(refresh(&sim.url, Some(TOKEN), id).await.status(), 204);
}

#[test]
fn sim_without_workbooks_prints_the_demo_set() {
    let mut child = binary().arg("sim").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("listening on http://127.0.0.1:"), "{first}");
    let second = lines.next().unwrap().unwrap();
    assert!(second.starts_with("workbook me/drive/items/"), "{second}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_sim_flags_exit_2() {
    let out = binary().args(["sim", "--persistent-expiry", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
}
