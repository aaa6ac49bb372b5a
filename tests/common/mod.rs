//! Helpers shared by the integration tests: the simulator in-process, a scripted server for the
//! answers the simulator never gives, a fake Graph and store for the engine, and the real binary.
#![allow(dead_code)]

pub mod dashboard;
pub mod fake;
pub mod hostile;
pub mod pg;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use wbsessions::graph::{ClientOptions, GraphClient, PollPolicy};
use wbsessions::sim::{RunningSim, SimConfig};
use wbsessions::time::Clock;

pub const TOKEN: &str = "T";

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn start_sim(config: SimConfig) -> RunningSim {
    start_sim_with_clock(config, Clock::system()).await
}

pub async fn start_sim_with_clock(config: SimConfig, clock: Clock) -> RunningSim {
    wbsessions::sim::start(config, clock, loopback()).await.expect("the simulator binds to loopback")
}

pub fn sim_config(workbooks: &[(&str, Option<&str>)]) -> SimConfig {
    SimConfig {
        token: Some(TOKEN.into()),
        workbooks: workbooks.iter().map(|(id, path)| (id.to_string(), path.map(str::to_string))).collect(),
        ..SimConfig::default()
    }
}

pub fn fast_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        session_timeout: Duration::from_secs(5),
        poll: PollPolicy {
            first: Duration::from_millis(20),
            max: Duration::from_millis(100),
            give_up_after: Duration::from_secs(5),
        },
        respond_async: true,
    }
}

pub fn client(url: &str) -> GraphClient {
    GraphClient::new(url, fast_options()).expect("a loopback URL is accepted")
}

/// One request as the scripted server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An answer the scripted server gives, in order.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Scripted {
    pub fn new(status: u16, body: &str) -> Self {
        Scripted { status, headers: Vec::new(), body: body.to_string(), delay: Duration::ZERO }
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
pub struct Script {
    pub answers: Mutex<std::collections::VecDeque<Scripted>>,
    pub seen: Mutex<Vec<Seen>>,
}

pub struct ScriptServer {
    pub addr: SocketAddr,
    pub script: Arc<Script>,
}

impl ScriptServer {
    pub fn url(&self) -> String {
        format!("http://{}/v1.0", self.addr)
    }
    pub fn push(&self, answer: Scripted) {
        self.script.answers.lock().unwrap().push_back(answer);
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }
}

async fn scripted(
    State(script): State<Arc<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    script.seen.lock().unwrap().push(Seen { method, path_and_query, headers, body });
    let answer = script.answers.lock().unwrap().pop_front();
    let Some(answer) = answer else {
        return (StatusCode::IM_A_TEAPOT, "script exhausted").into_response();
    };
    tokio::time::sleep(answer.delay).await;
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

pub async fn script_server() -> ScriptServer {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(Script::default());
    let router = axum::Router::new().fallback(scripted).with_state(script.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    ScriptServer { addr, script }
}

/// The binary under test.
pub fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_wbsessions"))
}

/// A plain HTTP client for talking to the simulator the way curl would.
pub fn http() -> reqwest::Client {
    wbsessions::graph::install_tls_provider();
    reqwest::Client::new()
}

/// The simulator on a thread of its own, for tests that drive the real binary synchronously.
pub struct SimThread {
    pub url: String,
    pub sim: std::sync::Arc<wbsessions::sim::Sim>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimThread {
    pub fn start(config: SimConfig, clock: Clock) -> SimThread {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let running = start_sim_with_clock(config, clock).await;
                ready_tx.send((running.graph_url(), running.sim.clone())).unwrap();
                let _ = stopped.await;
                running.stop().await;
            });
        });
        let (url, sim) = ready_rx.recv().unwrap();
        SimThread { url, sim, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for SimThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The binary, pointed at a simulator and a store, with a private config and log folder.
pub struct Cli {
    pub graph_url: String,
    pub store: std::path::PathBuf,
    pub home: std::path::PathBuf,
}

impl Cli {
    pub fn new(graph_url: &str, dir: &std::path::Path) -> Cli {
        Cli { graph_url: graph_url.to_string(), store: dir.join("sessions.db"), home: dir.join("home") }
    }

    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = binary();
        command.args(args);
        self.environment(&mut command);
        command
    }

    /// A bash script with the same environment as the binary gets.
    pub fn shell(&self, script: &str) -> std::process::Command {
        let mut command = std::process::Command::new("bash");
        command.arg("-c").arg(script);
        self.environment(&mut command);
        command
    }

    fn environment(&self, command: &mut std::process::Command) {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_DATA_HOME", self.home.join("data"))
            .env("XDG_STATE_HOME", self.home.join("state"))
            .env("WBSESSIONS_GRAPH_URL", &self.graph_url)
            .env("WBSESSIONS_TOKEN", TOKEN)
            .env("WBSESSIONS_STORE", &self.store);
    }

    /// Writes the config file this binary reads.
    pub fn config(&self, text: &str) {
        let dir = self.home.join("config/wbsessions");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), text).unwrap();
    }

    /// Runs a command to its end and returns its exit code (`None`: killed by a signal), stdout,
    /// stderr and peak resident memory in KiB.
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its memory peak
    pub fn measured(&self, args: &[&str]) -> (Option<i32>, String, String, u64) {
        use std::io::Read;
        let mut child = self
            .command(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let mut errors = String::new();
        let _ = err.read_to_string(&mut errors);
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: the pid is our own child, not yet reaped; the pointers are to live locals.
        let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        assert!(waited > 0, "wait4 failed");
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        (code, reader.join().unwrap(), errors, usage.ru_maxrss as u64)
    }

    pub fn output(&self, args: &[&str]) -> std::process::Output {
        self.command(args).stdin(std::process::Stdio::null()).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "{args:?} failed with {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Polls `check` until it holds or the deadline passes.
pub fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + deadline;
    while !check() {
        assert!(std::time::Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Everything the program logged under a home folder: the daily log files, oldest first.
pub fn log_text(home: &std::path::Path) -> String {
    let dir = home.join("state/wbsessions/logs");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files.iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect()
}

/// Runs a future to its end on a runtime of its own: for tests that are not async themselves.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// The SQLite store at `path`, as a command that writes opens it.
pub fn open_store(path: &std::path::Path) -> wbsessions::store::Opened {
    let location = wbsessions::store::Location::Sqlite(path.to_path_buf());
    wbsessions::store::open(&location, wbsessions::store::Access::Write).unwrap()
}

/// What the store at `path` holds, read as `list` reads it, from a test that is not async.
pub fn stored_sessions(path: &std::path::Path) -> Vec<wbsessions::session::TrackedSession> {
    block_on(async {
        let store = open_store(path).sessions;
        let sessions = store.sessions().await.unwrap();
        store.close().await;
        sessions
    })
}

/// Adds sessions to the store at `path` in one transaction, from a test that is not async.
pub fn insert_sessions(path: &std::path::Path, sessions: Vec<wbsessions::session::TrackedSession>) {
    block_on(async {
        let store = open_store(path).sessions;
        store.insert_all(sessions).await.unwrap();
        store.close().await;
    })
}

/// Writes to the store at `path` and waits for the commit, from a test that is not async.
pub fn write_store(path: &std::path::Path, writes: Vec<wbsessions::store::Write>) {
    block_on(async {
        let store = open_store(path).sessions;
        store.write_acked(writes).await.unwrap();
        store.close().await;
    })
}

/// The pid of the process that drives the store at `path`, if one does.
pub fn driver_pid(path: &std::path::Path) -> Option<u32> {
    let location = wbsessions::store::Location::Sqlite(path.to_path_buf());
    let opened = wbsessions::store::open(&location, wbsessions::store::Access::Peek).ok()?;
    opened.role.holder().map(|h| h.pid.unwrap_or(0))
}
