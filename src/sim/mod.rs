//! The embedded Graph simulator: a stateful stand-in for the workbook session calls and the
//! sign-in endpoints, for the demo, the tests and the benchmarks. It speaks real HTTP on loopback.

mod graph;
mod signin;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::time::Clock;

/// How the simulator behaves; every field has a flag on `wbsessions sim`.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub persistent_expiry: Duration,
    pub non_persistent_expiry: Duration,
    /// The accepted bearer token; `None` accepts any non-empty one (and always those it issued).
    pub token: Option<String>,
    /// `(item id, optional path under the drive root)`; empty seeds the demo set.
    pub workbooks: Vec<(String, Option<String>)>,
    /// createSession with `Prefer: respond-async` answers 202 and finishes after this long.
    pub async_create: Option<Duration>,
    pub throttle_rate: f64,
    pub error_rate: f64,
    pub latency: Option<(Duration, Duration)>,
    /// Requests per 10 s before Excel-style throttling starts.
    pub rate_limit: Option<u32>,
    /// Workbooks whose session calls always fail with a server error.
    pub failing_workbooks: Vec<String>,
    /// Workbooks whose sessions die at once: `invalidSessionUnsupportedWorkbook`.
    pub unsupported_workbooks: Vec<String>,
    /// Device-code sign-ins are approved this long after the code was issued.
    pub approve_after: Duration,
    pub token_lifetime: Duration,
    pub seed: Option<u64>,
    /// How `$batch` treats the session header of its requests (docs/graph.md, "Batching").
    pub batch: SimBatch,
}

/// What the simulator's `$batch` does, for each case Microsoft's documentation leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimBatch {
    /// Each request is handled as it would be on its own, session header included.
    #[default]
    Honoured,
    /// The session header is ignored: every refreshSession answers 204 and keeps nothing alive.
    Ignored,
    /// There is no `$batch`: it answers 400, as Graph does for an unknown segment.
    Missing,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            persistent_expiry: Duration::from_secs(5 * 60),
            non_persistent_expiry: Duration::from_secs(7 * 60),
            token: None,
            workbooks: Vec::new(),
            async_create: None,
            throttle_rate: 0.0,
            error_rate: 0.0,
            latency: None,
            rate_limit: None,
            failing_workbooks: Vec::new(),
            unsupported_workbooks: Vec::new(),
            approve_after: Duration::from_secs(2),
            token_lifetime: Duration::from_secs(3600),
            seed: None,
            batch: SimBatch::Honoured,
        }
    }
}

/// The workbooks a bare `wbsessions sim` knows.
pub(crate) fn demo_workbooks() -> Vec<(String, Option<String>)> {
    [
        ("01BUDGET2026", "Finance/Budget 2026.xlsx"),
        ("01SALESQ3", "Sales/Q3 pipeline.xlsx"),
        ("01INVENTORY", "Ops/Inventory.xlsx"),
        ("01FORECAST", "Finance/Forecast.xlsx"),
    ]
    .into_iter()
    .map(|(id, path)| (id.to_string(), Some(path.to_string())))
    .collect()
}

#[derive(Debug)]
struct SimSession {
    workbook: String,
    persistent: bool,
    last_activity: DateTime<Utc>,
    /// Ranges written in a non-persistent session: they go when it goes.
    changes: HashMap<Cell, serde_json::Value>,
}

impl SimSession {
    fn new(workbook: String, persistent: bool, now: DateTime<Utc>) -> Self {
        SimSession { workbook, persistent, last_activity: now, changes: HashMap::new() }
    }
}

/// (workbook item, sheet in lower case, address in upper case)
type Cell = (String, String, String);

#[derive(Debug)]
struct Operation {
    workbook_prefix: String,
    workbook: String,
    persistent: bool,
    ready_at: DateTime<Utc>,
    session: Option<String>,
}

/// Counters a test or benchmark can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub requests: u64,
    pub created: u64,
    pub refreshed: u64,
    pub closed: u64,
    pub throttled: u64,
    /// `$batch` requests (each of their items counts in `requests` too).
    pub batches: u64,
    pub live_sessions: usize,
    /// Range writes that reached a workbook.
    pub range_writes: u64,
    /// Writes that arrived while another write on the same workbook was still being answered:
    /// what Microsoft asks clients never to do.
    pub overlapping_writes: u64,
    pub tokens_issued: u64,
}

#[derive(Default)]
struct SimState {
    /// item id → path under the drive root
    workbooks: HashMap<String, Option<String>>,
    sessions: HashMap<String, SimSession>,
    operations: HashMap<String, Operation>,
    window: VecDeque<DateTime<Utc>>,
    /// Range values kept by the workbook itself.
    cells: HashMap<Cell, serde_json::Value>,
    /// Writes being answered now, by workbook item.
    writing: HashMap<String, u32>,
    stats: SimStats,
    signin: signin::SignInState,
}

pub struct Sim {
    config: SimConfig,
    clock: Clock,
    state: Mutex<SimState>,
    rng: Mutex<fastrand::Rng>,
    base: Mutex<String>,
    /// (throttle rate, error rate): start from the config, changeable while running.
    rates: Mutex<(f64, f64)>,
}

impl Sim {
    pub fn new(mut config: SimConfig, clock: Clock) -> Arc<Sim> {
        if config.workbooks.is_empty() {
            config.workbooks = demo_workbooks();
        }
        let state = SimState { workbooks: config.workbooks.iter().cloned().collect(), ..SimState::default() };
        let rng = config.seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        let rates = Mutex::new((config.throttle_rate, config.error_rate));
        Arc::new(Sim {
            config,
            clock,
            state: Mutex::new(state),
            rng: Mutex::new(rng),
            base: Mutex::new(String::new()),
            rates,
        })
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn chance(&self, rate: f64) -> bool {
        rate > 0.0 && self.rng.lock().unwrap_or_else(|p| p.into_inner()).f64() < rate
    }

    fn random_between(&self, min: Duration, max: Duration) -> Duration {
        if max <= min {
            return min;
        }
        let f = self.rng.lock().unwrap_or_else(|p| p.into_inner()).f64();
        min + (max - min).mul_f64(f)
    }

    fn random_text(&self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=._-";
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        (0..len).map(|_| ALPHABET[rng.usize(..ALPHABET.len())] as char).collect()
    }

    pub(crate) fn base_url(&self) -> String {
        self.base.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stats(&self) -> SimStats {
        let state = self.state();
        let mut stats = state.stats.clone();
        let now = self.clock.now();
        stats.live_sessions = state.sessions.values().filter(|s| !self.is_expired(s, now)).count();
        stats
    }

    fn rates(&self) -> (f64, f64) {
        *self.rates.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn expiry_of(&self, persistent: bool) -> Duration {
        if persistent { self.config.persistent_expiry } else { self.config.non_persistent_expiry }
    }

    fn is_expired(&self, s: &SimSession, now: DateTime<Utc>) -> bool {
        let expiry = chrono::Duration::from_std(self.expiry_of(s.persistent)).unwrap_or(chrono::Duration::MAX);
        now - s.last_activity >= expiry
    }

    /// Opens a session as if another client had created it: for tests that need ids to track.
    pub fn open_session(&self, workbook: &str) -> String {
        self.create(workbook, true)
    }

    /// Drops a session on the server side, as Graph may do at any time.
    pub fn drop_session(&self, id: &str) -> bool {
        self.state().sessions.remove(id).is_some()
    }

    /// The sessions alive now, by id, with the workbook item each is on.
    pub fn live_sessions(&self) -> Vec<(String, String)> {
        let now = self.clock.now();
        let state = self.state();
        state
            .sessions
            .iter()
            .filter(|(_, s)| !self.is_expired(s, now))
            .map(|(id, s)| (id.clone(), s.workbook.clone()))
            .collect()
    }
}

/// A write being answered on a workbook, counted while it lasts (however the request ends).
struct Writing {
    sim: Arc<Sim>,
    item: String,
}

impl Writing {
    fn start(sim: &Arc<Sim>, path: &str) -> Option<Writing> {
        let (_, after) = path.split_once("/items/")?;
        let item = after.split('/').next()?.to_string();
        let mut state = sim.state();
        let writing = state.writing.entry(item.clone()).or_default();
        *writing += 1;
        if *writing > 1 {
            state.stats.overlapping_writes += 1;
        }
        Some(Writing { sim: sim.clone(), item })
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut state = self.sim.state();
        if let Some(n) = state.writing.get_mut(&self.item) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.writing.remove(&self.item);
            }
        }
    }
}

/// A simulator bound to a port and serving until stopped or dropped.
pub struct RunningSim {
    pub addr: SocketAddr,
    pub sim: Arc<Sim>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningSim {
    /// The Graph base URL clients use: `http://ADDR/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("http://{}/v1.0", self.addr)
    }

    /// Where the sign-in endpoints live: `http://ADDR`.
    pub fn login_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `addr` and serves the simulator on the current tokio runtime.
pub async fn start(config: SimConfig, clock: Clock, addr: SocketAddr) -> std::io::Result<RunningSim> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let sim = Sim::new(config, clock);
    *sim.base.lock().unwrap_or_else(|p| p.into_inner()) = format!("http://{addr}");
    let router = Router::new().fallback(handle).with_state(sim.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the simulator stopped");
        }
    });
    Ok(RunningSim { addr, sim, stop: Some(stop), task: Some(task) })
}

async fn handle(State(sim): State<Arc<Sim>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    if path.starts_with("/v1.0/") || path == "/v1.0" {
        let _writing = (method != Method::GET).then(|| Writing::start(&sim, &path)).flatten();
        if let Some((min, max)) = sim.config.latency {
            tokio::time::sleep(sim.random_between(min, max)).await;
        }
        graph::handle(&sim, &method, &uri, &headers, &body).into_response()
    } else {
        signin::handle(&sim, &method, &path, &body).into_response()
    }
}
