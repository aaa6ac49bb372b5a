//! A fake Graph and an in-memory store for the engine, so that engine tests run under tokio's
//! paused time: every call's start time is recorded on tokio's clock, and nothing waits for real.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wbsessions::engine::{BatchResult, Failure, Graph};
use wbsessions::graph::{CallMeta, ErrorClass, GraphError, Reply};
use wbsessions::session::SortBy;
use wbsessions::session::{Mode, Outcome, OutcomeKind, SessionId, SessionKey, TrackedSession, WorkbookRef};
use wbsessions::store::{
    GRANT_COUNTED, Grant, GrantToken, Reservation, Rev, RuntimeState, SessionStore, StoreError, StoreEvent,
    StoreFuture, Write,
};

/// What the fake answers to one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Ok,
    /// 429 with this `Retry-After` (or none).
    Throttled(Option<Duration>),
    /// 404 invalidSessionReCreatable.
    Expired,
    /// 400 invalidSessionUnsupportedWorkbook.
    Dead,
    /// A server error with this status (500, 503, 504).
    Status(u16),
}

/// What the fake's `$batch` does with each request's session header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchMode {
    /// As a plain call would.
    #[default]
    Honoured,
    /// Not read: every refresh answers success and keeps nothing alive.
    Ignored,
    /// Read (an unknown or expired session is an error) but nothing is kept alive.
    NoRefresh,
    /// No `$batch` at all: 400.
    Missing,
    /// Every `$batch` times out (504).
    Unanswered,
}

/// One call as the fake saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub at: Instant,
    pub kind: &'static str,
    pub workbook: String,
    pub session: Option<String>,
    /// It was one request of a `$batch`.
    pub in_batch: bool,
    /// What the fake answered (filled in when the call ends).
    pub answer: Option<Answer>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Answers for the next calls on a workbook, in order; afterwards `Ok`.
    scripted: HashMap<String, VecDeque<Answer>>,
    /// Answers for every call on a workbook.
    always: HashMap<String, Answer>,
    latency: Duration,
    created: u64,
    live: HashSet<String>,
    /// Idle expiry, when set: a session not touched for this long is gone.
    expiry: Option<Duration>,
    last_touch: HashMap<String, Instant>,
    expired: u64,
    expired_ids: Vec<String>,
    /// Random faults: (share throttled, share failing with 500), and the generator.
    faults: Option<(f64, f64, fastrand::Rng)>,
    running: HashMap<String, usize>,
    /// Most calls seen running on one workbook at once, and on all.
    peak_per_workbook: usize,
    peak: usize,
    in_flight: usize,
    batch: BatchMode,
    /// The size of each `$batch` request.
    batches: Vec<usize>,
}

#[derive(Default)]
pub struct FakeGraph {
    state: Mutex<State>,
}

fn error(class: ErrorClass, status: u16, codes: &[&str], retry_after: Option<Duration>) -> Failure {
    Failure::Graph(GraphError {
        class,
        meta: CallMeta {
            http_status: Some(status),
            request_id: Some(format!("req-{status}")),
            client_request_id: "client".into(),
            latency: Duration::ZERO,
            requests: 1,
        },
        codes: codes.iter().map(|c| c.to_string()).collect(),
        message: Some(format!("simulated {status}")),
        retry_after,
    })
}

impl FakeGraph {
    pub fn new() -> Arc<FakeGraph> {
        Arc::new(FakeGraph::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    pub fn script(&self, workbook: &str, answers: &[Answer]) {
        self.state().scripted.entry(workbook.into()).or_default().extend(answers.iter().cloned());
    }

    pub fn always(&self, workbook: &str, answer: Answer) {
        self.state().always.insert(workbook.into(), answer);
    }

    pub fn set_batch(&self, mode: BatchMode) {
        self.state().batch = mode;
    }

    /// The size of each `$batch` request made.
    pub fn batches(&self) -> Vec<usize> {
        self.state().batches.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn calls_of(&self, kind: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.kind == kind).collect()
    }

    pub fn peaks(&self) -> (usize, usize) {
        let s = self.state();
        (s.peak_per_workbook, s.peak)
    }

    pub fn is_live(&self, id: &str) -> bool {
        self.state().live.contains(id)
    }

    /// Sessions expire after `expiry` without a successful call, as Graph's do.
    pub fn set_expiry(&self, expiry: Duration) {
        self.state().expiry = Some(expiry);
    }

    /// How many sessions were found expired when called.
    pub fn expired(&self) -> u64 {
        self.state().expired
    }

    pub fn expired_ids(&self) -> Vec<String> {
        self.state().expired_ids.clone()
    }

    /// Throttles (with a Retry-After of 0.5 to 3 s) and fails calls at random, as the
    /// simulator's `--throttle-rate` and `--error-rate` do.
    pub fn set_faults(&self, throttle: f64, error: f64, seed: u64) {
        self.state().faults = Some((throttle, error, fastrand::Rng::with_seed(seed)));
    }

    /// Whether a live session has outlived its idle expiry; touching it if not.
    fn touch(&self, id: &str) -> bool {
        let mut s = self.state();
        let now = Instant::now();
        let expired = match (s.expiry, s.last_touch.get(id)) {
            (Some(expiry), Some(last)) => now.duration_since(*last) >= expiry,
            _ => false,
        };
        if expired {
            s.live.remove(id);
            s.expired += 1;
            s.expired_ids.push(id.to_string());
            return false;
        }
        let live = s.live.contains(id);
        if live {
            s.last_touch.insert(id.to_string(), now);
        }
        live
    }

    /// Whether a session is alive, as `touch` decides, without counting this as activity.
    fn alive_untouched(&self, id: &str) -> bool {
        let last = self.state().last_touch.get(id).copied();
        if self.touch(id) {
            if let Some(last) = last {
                self.state().last_touch.insert(id.to_string(), last);
            }
            return true;
        }
        false
    }

    /// A session the fake knows, as if created elsewhere.
    pub fn open(&self, id: &str) {
        let mut s = self.state();
        s.live.insert(id.into());
        s.last_touch.insert(id.into(), Instant::now());
    }

    async fn call(&self, kind: &'static str, workbook: &WorkbookRef, session: Option<&SessionId>) -> Answer {
        self.call_in(kind, workbook, session, false).await
    }

    async fn call_in(
        &self,
        kind: &'static str,
        workbook: &WorkbookRef,
        session: Option<&SessionId>,
        in_batch: bool,
    ) -> Answer {
        let workbook = workbook.to_string();
        let latency = {
            let mut s = self.state();
            s.calls.push(Call {
                at: Instant::now(),
                kind,
                workbook: workbook.clone(),
                session: session.map(|i| i.to_string()),
                in_batch,
                answer: None,
            });
            let n = s.running.entry(workbook.clone()).or_default();
            *n += 1;
            let n = *n;
            s.peak_per_workbook = s.peak_per_workbook.max(n);
            s.in_flight += 1;
            s.peak = s.peak.max(s.in_flight);
            s.latency
        };
        tokio::time::sleep(latency).await;
        let answer = self.answer(&workbook);
        let mut s = self.state();
        let index = s.calls.iter().rposition(|c| c.workbook == workbook && c.answer.is_none());
        if let Some(call) = index.and_then(|i| s.calls.get_mut(i)) {
            call.answer = Some(answer.clone());
        }
        answer
    }

    fn answer(&self, workbook: &str) -> Answer {
        let mut s = self.state();
        if let Some(n) = s.running.get_mut(workbook) {
            *n -= 1;
        }
        s.in_flight -= 1;
        let scripted = s.scripted.get_mut(workbook).and_then(VecDeque::pop_front);
        if let Some(answer) = scripted.or_else(|| s.always.get(workbook).cloned()) {
            return answer;
        }
        match &mut s.faults {
            Some((throttle, error, rng)) => {
                let roll = rng.f64();
                if roll < *throttle {
                    Answer::Throttled(Some(Duration::from_millis(rng.u64(500..3000))))
                } else if roll < *throttle + *error {
                    Answer::Status(500)
                } else {
                    Answer::Ok
                }
            }
            None => Answer::Ok,
        }
    }

    fn failure(answer: &Answer) -> Option<Failure> {
        match answer {
            Answer::Ok => None,
            Answer::Throttled(wait) => Some(error(ErrorClass::Throttled, 429, &["TooManyRequests"], *wait)),
            Answer::Expired => {
                Some(error(ErrorClass::Expired, 404, &["itemNotFound", "invalidSessionReCreatable"], None))
            }
            Answer::Dead => {
                Some(error(ErrorClass::Dead, 400, &["badRequest", "invalidSessionUnsupportedWorkbook"], None))
            }
            Answer::Status(503) => Some(error(ErrorClass::Expired, 503, &[], None)),
            Answer::Status(status) => Some(error(ErrorClass::Transient, *status, &[], None)),
        }
    }

    async fn refresh_in(&self, workbook: &WorkbookRef, id: &SessionId, in_batch: bool) -> Result<Reply<()>, Failure> {
        let answer = self.call_in("refresh", workbook, Some(id), in_batch).await;
        let answer = if answer == Answer::Ok && !self.touch(id.as_str()) { Answer::Expired } else { answer };
        match Self::failure(&answer) {
            Some(failure) => Err(failure),
            None => Ok(Self::reply(())),
        }
    }

    fn reply<T>(value: T) -> Reply<T> {
        Reply { value, meta: CallMeta { http_status: Some(200), requests: 1, ..CallMeta::default() } }
    }
}

impl Graph for FakeGraph {
    fn create<'a>(
        &'a self,
        workbook: &'a WorkbookRef,
        _mode: Mode,
    ) -> BoxFuture<'a, Result<Reply<SessionId>, Failure>> {
        async move {
            let answer = self.call("create", workbook, None).await;
            if let Some(failure) = Self::failure(&answer) {
                return Err(failure);
            }
            let mut s = self.state();
            s.created += 1;
            let id = format!("fake-{}", s.created);
            s.live.insert(id.clone());
            s.last_touch.insert(id.clone(), Instant::now());
            Ok(Self::reply(SessionId::new(&id).unwrap()))
        }
        .boxed()
    }

    fn refresh<'a>(
        &'a self,
        workbook: &'a WorkbookRef,
        id: &'a SessionId,
    ) -> BoxFuture<'a, Result<Reply<()>, Failure>> {
        self.refresh_in(workbook, id, false).boxed()
    }

    fn close<'a>(&'a self, workbook: &'a WorkbookRef, id: &'a SessionId) -> BoxFuture<'a, Result<Reply<()>, Failure>> {
        async move {
            let answer = self.call("close", workbook, Some(id)).await;
            let answer =
                if answer == Answer::Ok && !self.state().live.remove(id.as_str()) { Answer::Expired } else { answer };
            match Self::failure(&answer) {
                Some(failure) => Err(failure),
                None => Ok(Self::reply(())),
            }
        }
        .boxed()
    }

    fn refresh_batch<'a>(&'a self, items: &'a [(&'a WorkbookRef, &'a SessionId)]) -> BoxFuture<'a, BatchResult> {
        async move {
            let mode = self.state().batch;
            match mode {
                BatchMode::Missing => return Err(error(ErrorClass::Failed, 400, &["BadRequest"], None)),
                BatchMode::Unanswered => return Err(error(ErrorClass::Transient, 504, &[], None)),
                _ => {}
            }
            self.state().batches.push(items.len());
            let answers = items.iter().map(|(workbook, id)| async move {
                match mode {
                    BatchMode::Ignored => {
                        self.call_in("refresh", workbook, Some(id), true).await;
                        Ok(Self::reply(()))
                    }
                    BatchMode::NoRefresh => {
                        let answer = self.call_in("refresh", workbook, Some(id), true).await;
                        let known = self.alive_untouched(id.as_str());
                        let answer = if answer == Answer::Ok && !known { Answer::Expired } else { answer };
                        match Self::failure(&answer) {
                            Some(failure) => Err(failure),
                            None => Ok(Self::reply(())),
                        }
                    }
                    _ => self.refresh_in(workbook, id, true).await,
                }
            });
            Ok(futures_util::future::join_all(answers).await)
        }
        .boxed()
    }

    fn resolve<'a>(&'a self, workbook: &'a WorkbookRef) -> BoxFuture<'a, Result<Reply<WorkbookRef>, Failure>> {
        async move {
            if !workbook.is_by_path() {
                return Ok(Reply { value: workbook.clone(), meta: CallMeta::default() });
            }
            let answer = self.call("resolve", workbook, None).await;
            match Self::failure(&answer) {
                Some(failure) => Err(failure),
                None => Ok(Self::reply(workbook.with_item("RESOLVED"))),
            }
        }
        .boxed()
    }
}

/// The store in memory: writes land at once; `fail_inserts` makes every insert fail.
#[derive(Default)]
pub struct MemoryStore {
    pub state: Mutex<MemoryState>,
}

#[derive(Default)]
pub struct MemoryState {
    pub sessions: HashMap<SessionKey, TrackedSession>,
    pub outcomes: HashMap<SessionKey, Vec<Outcome>>,
    pub paused: bool,
    pub next_key: SessionKey,
    pub fail_inserts: bool,
    /// Creations written down and not yet over, by intent.
    pub intents: HashMap<i64, String>,
    /// The shared request budget's grants: when, and how many.
    pub budget: Vec<(chrono::DateTime<chrono::Utc>, u64)>,
    /// Opened as a write-protected file would be: read, never written.
    pub read_only: bool,
}

impl MemoryStore {
    pub fn new(sessions: &[TrackedSession]) -> Arc<MemoryStore> {
        let store = MemoryStore::default();
        {
            let mut s = store.state.lock().unwrap();
            for session in sessions {
                s.next_key = s.next_key.max(session.key);
                s.sessions.insert(session.key, session.clone());
            }
        }
        Arc::new(store)
    }

    pub fn session(&self, key: SessionKey) -> Option<TrackedSession> {
        self.state.lock().unwrap().sessions.get(&key).cloned()
    }

    pub fn outcomes(&self, key: SessionKey) -> Vec<Outcome> {
        self.state.lock().unwrap().outcomes.get(&key).cloned().unwrap_or_default()
    }

    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut s = self.state.lock().unwrap();
        for write in writes {
            match write {
                Write::Record { key, state, outcome } => {
                    if let Some(session) = s.sessions.get_mut(key) {
                        if let Some(RuntimeState { status, last_refresh, failures, session_id, workbook }) =
                            state.clone()
                        {
                            (session.status, session.last_refresh, session.failures) = (status, last_refresh, failures);
                            (session.session_id, session.workbook) = (session_id, workbook);
                        }
                        if let Some(outcome) = outcome {
                            session.last_call = Some(outcome.into());
                            s.outcomes.entry(*key).or_default().insert(0, outcome.clone());
                        }
                    }
                }
                Write::Settings { key, change } => {
                    if let Some(name) = &change.name
                        && s.sessions.values().any(|o| o.name == *name && o.key != *key)
                    {
                        return Err(StoreError::NameTaken(name.clone()));
                    }
                    if let Some(session) = s.sessions.get_mut(key) {
                        change.apply_to(session);
                    }
                }
                Write::Remove { key } => {
                    s.sessions.remove(key);
                }
                Write::Rewrite(session) => {
                    if let Some(stored) = s.sessions.get_mut(&session.key) {
                        *stored = (**session).clone();
                    }
                }
                Write::Paused(paused) => s.paused = *paused,
                Write::Batching(_) | Write::Hold(_) => {}
                Write::Creating { id, name, .. } => {
                    s.intents.insert(*id, name.clone());
                }
                Write::Created { id } => {
                    s.intents.remove(id);
                }
            }
        }
        Ok(())
    }
}

fn ready<T: Send + 'static>(value: Result<T, StoreError>) -> StoreFuture<T> {
    async move { value }.boxed()
}

impl MemoryStore {
    fn sorted(&self) -> Vec<TrackedSession> {
        let mut sessions: Vec<TrackedSession> = self.state.lock().unwrap().sessions.values().cloned().collect();
        sessions.sort_by(|a, b| a.name.cmp(&b.name));
        sessions
    }
}

impl SessionStore for MemoryStore {
    fn location(&self) -> &str {
        "memory"
    }

    fn read_only(&self) -> bool {
        self.state.lock().unwrap().read_only
    }

    fn sessions(&self) -> StoreFuture<Vec<TrackedSession>> {
        ready(Ok(self.sorted()))
    }

    fn snapshot(&self) -> StoreFuture<(Vec<TrackedSession>, Rev)> {
        ready(Ok((self.sorted(), 0)))
    }

    fn each_session(&self) -> mpsc::Receiver<Result<Vec<TrackedSession>, StoreError>> {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Ok(self.sorted()));
        rx
    }

    fn session(&self, name: &str) -> StoreFuture<TrackedSession> {
        let found = self.sorted().into_iter().find(|s| s.name == name);
        ready(found.ok_or_else(|| StoreError::NotFound(name.to_string())))
    }

    fn name_of_id(&self, id: &SessionId) -> StoreFuture<Option<String>> {
        ready(Ok(self.sorted().into_iter().find(|s| s.session_id == *id).map(|s| s.name)))
    }

    fn first_page(&self, _sort: SortBy, _reverse: bool, limit: usize) -> StoreFuture<Vec<TrackedSession>> {
        ready(Ok(self.sorted().into_iter().take(limit).collect()))
    }

    fn names(&self) -> StoreFuture<Vec<String>> {
        ready(Ok(self.sorted().into_iter().map(|s| s.name).collect()))
    }

    fn history(&self, key: SessionKey, limit: usize) -> StoreFuture<Vec<Outcome>> {
        let mut outcomes = self.outcomes(key);
        outcomes.truncate(limit);
        ready(Ok(outcomes))
    }

    fn problems(&self, limit: usize) -> StoreFuture<Vec<(String, Outcome)>> {
        let state = self.state.lock().unwrap();
        let mut failed: Vec<(String, Outcome)> = state
            .outcomes
            .iter()
            .flat_map(|(key, outcomes)| {
                let name = state.sessions.get(key).map(|s| s.name.clone()).unwrap_or_default();
                outcomes.iter().filter(|o| o.kind != OutcomeKind::Ok).map(move |o| (name.clone(), o.clone()))
            })
            .collect();
        failed.sort_by_key(|(_, o)| std::cmp::Reverse(o.at));
        failed.truncate(limit);
        ready(Ok(failed))
    }

    fn reserve(&self, ask: Reservation, budget: u32, now: chrono::DateTime<chrono::Utc>) -> StoreFuture<Grant> {
        let Reservation { want, extra, unused, .. } = ask;
        let mut state = self.state.lock().unwrap();
        let counted = chrono::TimeDelta::from_std(GRANT_COUNTED).unwrap();
        if let Some((token, n)) = unused
            && let Some(row) = state.budget.iter_mut().find(|(at, _)| at.timestamp_millis() == token.at_ms)
        {
            row.1 = row.1.saturating_sub(u64::from(n));
        }
        state.budget.retain(|(at, _)| *at > now - counted);
        let used: u64 = state.budget.iter().map(|(_, n)| n).sum();
        let granted = u32::try_from(u64::from(budget).saturating_sub(used)).unwrap_or(u32::MAX).min(want);
        if granted + extra > 0 {
            state.budget.push((now, u64::from(granted + extra)));
        }
        let retry_in = (granted == 0 && want > 0).then(|| {
            let oldest = state.budget.first().map_or(now, |(at, _)| *at);
            (oldest + counted - now).to_std().unwrap_or(Duration::from_millis(10)).max(Duration::from_millis(10))
        });
        let token = (granted > 0).then(|| GrantToken { row: 0, at_ms: now.timestamp_millis() });
        ready(Ok(Grant { granted, retry_in, token, ..Grant::default() }))
    }

    fn paused(&self) -> StoreFuture<bool> {
        ready(Ok(self.state.lock().unwrap().paused))
    }

    fn batching(&self) -> StoreFuture<Option<wbsessions::store::BatchVerdict>> {
        ready(Ok(None))
    }

    fn rev(&self) -> StoreFuture<Rev> {
        ready(Ok(0))
    }

    fn write(&self, write: Write) {
        let _ = self.apply(&[write]);
    }

    fn write_acked(&self, writes: Vec<Write>) -> StoreFuture<()> {
        ready(self.apply(&writes))
    }

    fn insert(&self, mut session: TrackedSession, history: Vec<Outcome>) -> StoreFuture<TrackedSession> {
        let result = (|| {
            let mut s = self.state.lock().unwrap();
            if s.fail_inserts {
                return Err(StoreError::Closed);
            }
            if s.sessions.values().any(|o| o.name == session.name) {
                return Err(StoreError::NameTaken(session.name.clone()));
            }
            s.next_key += 1;
            session.key = s.next_key;
            session.last_call = history.last().map(Into::into);
            s.sessions.insert(session.key, session.clone());
            s.outcomes.entry(session.key).or_default().extend(history.into_iter().rev());
            Ok(session)
        })();
        ready(result)
    }

    fn insert_all(&self, sessions: Vec<TrackedSession>) -> StoreFuture<Vec<SessionKey>> {
        let mut keys = Vec::new();
        for session in sessions {
            match self.insert(session, Vec::new()).now_or_never() {
                Some(Ok(s)) => keys.push(s.key),
                Some(Err(e)) => return ready(Err(e)),
                None => return ready(Err(StoreError::Closed)),
            }
        }
        ready(Ok(keys))
    }

    fn flush(&self) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }

    fn unfinished(&self) -> StoreFuture<Vec<wbsessions::store::Unfinished>> {
        ready(Ok(Vec::new()))
    }

    fn watch(&self, _since: Rev) -> mpsc::UnboundedReceiver<StoreEvent> {
        mpsc::unbounded_channel().1
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }
}
