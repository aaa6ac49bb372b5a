//! A store's thread, whatever database it talks to: its one connection lives here. It batches
//! unacknowledged writes into few transactions, answers reads and acknowledged writes in the
//! order they came, and, once someone watches, looks for what other processes committed
//! (`Backend::others_mark`), reading only what changed since the revision it last saw.

use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::session::{Outcome, SessionId, SessionKey, SortBy, TrackedSession};
use crate::store::{
    BatchVerdict, Changes, Grant, Reservation, Rev, SessionStore, StoreError, StoreEvent, StoreFuture, Unfinished,
    Write,
};
use chrono::{DateTime, Utc};

/// What a database does for a store's thread: the same reads and writes in its own SQL.
pub(crate) trait Backend: Send + 'static {
    /// Opened for reading only: every write would be refused.
    fn read_only(&self) -> bool;
    fn snapshot(&mut self) -> Result<(Vec<TrackedSession>, Rev), StoreError>;
    /// Calls `each` with every session in name order, without holding them all.
    fn each_session(
        &mut self,
        each: &mut dyn FnMut(TrackedSession) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    fn session(&mut self, name: &str) -> Result<TrackedSession, StoreError>;
    fn name_of_id(&mut self, id: &SessionId) -> Result<Option<String>, StoreError>;
    fn first_page(&mut self, sort: SortBy, reverse: bool, limit: usize) -> Result<Vec<TrackedSession>, StoreError>;
    fn names(&mut self) -> Result<Vec<String>, StoreError>;
    fn outcomes(&mut self, key: SessionKey, limit: usize) -> Result<Vec<Outcome>, StoreError>;
    fn problems(&mut self, limit: usize) -> Result<Vec<(String, Outcome)>, StoreError>;
    fn reserve(&mut self, ask: Reservation, budget: u32, now: DateTime<Utc>) -> Result<Grant, StoreError>;
    fn paused(&mut self) -> Result<bool, StoreError>;
    fn batching(&mut self) -> Result<Option<BatchVerdict>, StoreError>;
    fn rev(&mut self) -> Result<Rev, StoreError>;
    fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError>;
    fn insert_with_history(&mut self, session: &mut TrackedSession, history: &[Outcome]) -> Result<(), StoreError>;
    fn insert_all(&mut self, sessions: &[TrackedSession]) -> Result<Vec<SessionKey>, StoreError>;
    fn take_unfinished(&mut self) -> Result<Vec<Unfinished>, StoreError>;
    fn changes_since(&mut self, since: Rev) -> Result<Changes, StoreError>;
    /// A number that moves when another connection commits, and only then.
    fn others_mark(&mut self) -> Result<i64, StoreError>;
    /// Calls `wake` when another connection commits, where the database can say so (PostgreSQL's
    /// `LISTEN`); elsewhere the watcher polls.
    fn wake_on_change(&mut self, _wake: Box<dyn Fn() + Send>) {}
    /// Whether `wake_on_change` is heard now: the watcher then polls only now and then.
    fn woken(&self) -> bool {
        false
    }
    /// The next commits must survive a power cut (someone waits to be told they are done).
    fn set_durable(&mut self, _durable: bool) {}
    /// Writes come fast (or no longer do).
    fn set_busy(&mut self, _busy: bool) {}
    /// What was committed without a sync is synced now.
    fn sync(&mut self) {}
}

/// How often another process's changes are looked for while someone watches.
const POLL: Duration = Duration::from_millis(250);
/// How often they are looked for while the database wakes the watcher (`Backend::woken`): a
/// wake lost on its way costs at most this.
const POLL_WOKEN: Duration = Duration::from_secs(5);

/// Sessions per chunk of `each_session`: few enough to keep memory flat, enough to be cheap.
const CHUNK: usize = 256;

type Read<B> = Box<dyn FnOnce(&mut B) + Send>;

enum Message<B> {
    /// Lands in the next batch; nobody waits for it.
    Write(Box<Write>),
    /// Someone waits for the answer: handled after the batch it arrived with.
    Request(Request<B>),
    Watch(Rev, tmpsc::UnboundedSender<StoreEvent>),
    /// Another connection committed (`Backend::wake_on_change`): look now.
    Poke,
    Close,
}

enum Request<B> {
    Acked(Vec<Write>, oneshot::Sender<Result<(), StoreError>>),
    Insert(Box<(TrackedSession, Vec<Outcome>)>, oneshot::Sender<Result<TrackedSession, StoreError>>),
    InsertAll(Vec<TrackedSession>, oneshot::Sender<Result<Vec<SessionKey>, StoreError>>),
    Read(Read<B>),
    Flush(oneshot::Sender<()>),
}

/// A store: a handle to its thread.
pub(crate) struct ThreadStore<B> {
    tx: mpsc::Sender<Message<B>>,
    location: String,
    read_only: bool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<B: Backend> ThreadStore<B> {
    /// Moves the open connection onto a thread of its own.
    pub fn spawn(db: B, location: String) -> Result<ThreadStore<B>, StoreError> {
        let (tx, rx) = mpsc::channel();
        let read_only = db.read_only();
        let poke = tx.clone();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || run(db, rx, poke))
            .map_err(|e| StoreError::Unavailable { store: location.clone(), detail: e.to_string() })?;
        Ok(ThreadStore { tx, location, read_only, thread: Mutex::new(Some(thread)) })
    }

    fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request<B>,
    ) -> StoreFuture<T> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(Message::Request(make(reply)));
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }

    /// Runs `read` on the store's thread, in turn with everything else asked of it.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut B) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        self.ask(|reply| {
            Request::Read(Box::new(move |db: &mut B| {
                let _ = reply.send(read(db));
            }))
        })
    }
}

impl<B> Drop for ThreadStore<B> {
    /// The thread ends with the last handle, its kept writes tried once more, even if nobody
    /// closed it: its own waker holds the channel open (`run`).
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Close);
    }
}

impl<B: Backend> SessionStore for ThreadStore<B> {
    fn location(&self) -> &str {
        &self.location
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn sessions(&self) -> StoreFuture<Vec<TrackedSession>> {
        self.read(|db| {
            let mut sessions = Vec::new();
            db.each_session(&mut |s| {
                sessions.push(s);
                Ok(())
            })?;
            Ok(sessions)
        })
    }

    fn snapshot(&self) -> StoreFuture<(Vec<TrackedSession>, Rev)> {
        self.read(|db| db.snapshot())
    }

    fn each_session(&self) -> tmpsc::Receiver<Result<Vec<TrackedSession>, StoreError>> {
        let (chunks, rx) = tmpsc::channel(2);
        let sent = self.tx.send(Message::Request(Request::Read(Box::new(move |db: &mut B| {
            let mut chunk = Vec::with_capacity(CHUNK);
            let read = db.each_session(&mut |s| {
                chunk.push(s);
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    // The reader went away: stop reading.
                    chunks.blocking_send(Ok(full)).map_err(|_| StoreError::Closed)?;
                }
                Ok(())
            });
            let last = match read {
                Ok(()) if chunk.is_empty() => return,
                Ok(()) => Ok(chunk),
                Err(StoreError::Closed) => return,
                Err(e) => Err(e),
            };
            let _ = chunks.blocking_send(last);
        }))));
        if sent.is_err() {
            let (failed, rx) = tmpsc::channel(1);
            let _ = failed.try_send(Err(StoreError::Closed));
            return rx;
        }
        rx
    }

    fn session(&self, name: &str) -> StoreFuture<TrackedSession> {
        let name = name.to_string();
        self.read(move |db| db.session(&name))
    }

    fn name_of_id(&self, id: &SessionId) -> StoreFuture<Option<String>> {
        let id = id.clone();
        self.read(move |db| db.name_of_id(&id))
    }

    fn first_page(&self, sort: SortBy, reverse: bool, limit: usize) -> StoreFuture<Vec<TrackedSession>> {
        self.read(move |db| db.first_page(sort, reverse, limit))
    }

    fn names(&self) -> StoreFuture<Vec<String>> {
        self.read(|db| db.names())
    }

    fn history(&self, key: SessionKey, limit: usize) -> StoreFuture<Vec<Outcome>> {
        self.read(move |db| db.outcomes(key, limit))
    }

    fn problems(&self, limit: usize) -> StoreFuture<Vec<(String, Outcome)>> {
        self.read(move |db| db.problems(limit))
    }

    fn reserve(&self, ask: Reservation, budget: u32, now: DateTime<Utc>) -> StoreFuture<Grant> {
        self.read(move |db| db.reserve(ask, budget, now))
    }

    fn paused(&self) -> StoreFuture<bool> {
        self.read(|db| db.paused())
    }

    fn batching(&self) -> StoreFuture<Option<BatchVerdict>> {
        self.read(|db| db.batching())
    }

    fn rev(&self) -> StoreFuture<Rev> {
        self.read(|db| db.rev())
    }

    fn write(&self, write: Write) {
        let _ = self.tx.send(Message::Write(Box::new(write)));
    }

    fn write_acked(&self, writes: Vec<Write>) -> StoreFuture<()> {
        self.ask(|reply| Request::Acked(writes, reply))
    }

    fn insert(&self, session: TrackedSession, history: Vec<Outcome>) -> StoreFuture<TrackedSession> {
        self.ask(|reply| Request::Insert(Box::new((session, history)), reply))
    }

    fn insert_all(&self, sessions: Vec<TrackedSession>) -> StoreFuture<Vec<SessionKey>> {
        self.ask(|reply| Request::InsertAll(sessions, reply))
    }

    fn flush(&self) -> BoxFuture<'static, ()> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(Message::Request(Request::Flush(reply))).is_ok();
        async move {
            if sent {
                let _ = answer.await;
            }
        }
        .boxed()
    }

    fn unfinished(&self) -> StoreFuture<Vec<Unfinished>> {
        self.read(|db| db.take_unfinished())
    }

    fn watch(&self, since: Rev) -> tmpsc::UnboundedReceiver<StoreEvent> {
        let (events, rx) = tmpsc::unbounded_channel();
        let _ = self.tx.send(Message::Watch(since, events));
        rx
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        let _ = self.tx.send(Message::Close);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        async move {
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
        .boxed()
    }
}

/// Most writes one transaction takes; more wait for the next.
const MAX_BATCH: usize = 4096;

/// How long a batch of unacknowledged writes waits for more before it commits: one transaction
/// for 40 outcomes costs little more than one for a single one. Other processes see them as soon
/// as they would have polled anyway (`POLL`); a crash loses at most this much of the record
/// (`LINGER_BUSY` while writes come fast).
const LINGER: Duration = Duration::from_millis(250);
/// The wait while writes come fast (the last batch came at `BUSY_RATE` or more; the store keeps
/// more pages then too): a keeper of 10,000 sessions records about 170 outcomes a second, and a
/// session's page written once a second rather than four times is most of what its store costs.
const LINGER_BUSY: Duration = Duration::from_secs(1);
/// Writes per second.
const BUSY_RATE: f64 = 100.0;

/// Who watches, and what it has seen.
struct Watch {
    events: tmpsc::UnboundedSender<StoreEvent>,
    seen_rev: Rev,
    seen_version: Option<i64>,
    last_check: Instant,
}

/// Writes kept while the store cannot be reached, at most: ten minutes of a keeper of 10,000
/// sessions (about 170 outcomes a second) and room to spare. Past it the oldest are let go.
const MAX_KEPT: usize = 200_000;
/// The longest wait between tries to write what was kept.
const MAX_RETRY: Duration = Duration::from_secs(15);

/// Unacknowledged writes that found the store unreachable (a database cut off, a file busy or
/// on a full disk), kept in order and tried again with backoff: nobody waits for them, and
/// losing them would lose outcomes that were reported.
#[derive(Default)]
struct Kept {
    writes: std::collections::VecDeque<Write>,
    next_try: Option<Instant>,
    backoff: Duration,
    dropped: usize,
}

impl Kept {
    /// Whether a failure is the store's passing trouble rather than a write that can never go.
    fn transient(e: &StoreError) -> bool {
        matches!(e, StoreError::Unavailable { .. } | StoreError::Busy { .. } | StoreError::DiskFull { .. })
    }

    /// Keeps `writes` after a failed try; `true` when the trouble has just begun.
    fn keep(&mut self, writes: Vec<Write>, error: &StoreError) -> bool {
        let began = self.next_try.is_none();
        if began {
            tracing::warn!(%error, "the store cannot be written for now; its writes are kept and tried again");
            self.backoff = Duration::from_secs(1);
        } else {
            self.backoff = (self.backoff * 2).min(MAX_RETRY);
        }
        self.add(writes);
        self.next_try = Some(Instant::now() + self.backoff);
        began
    }

    fn add(&mut self, writes: Vec<Write>) {
        self.writes.extend(writes);
        let over = self.writes.len().saturating_sub(MAX_KEPT);
        if over > 0 {
            self.writes.drain(..over);
            self.dropped += over;
        }
    }

    fn due(&self) -> bool {
        self.next_try.is_some_and(|at| Instant::now() >= at)
    }
}

/// Writes `batch` after whatever was kept, in one transaction; on passing trouble keeps all of
/// it for later (and says so once, on the feed: the engine shows it), otherwise reports the
/// failure.
fn write_batch<B: Backend>(db: &mut B, kept: &mut Kept, batch: Vec<Write>, watch: Option<&Watch>) {
    let mut writes: Vec<Write> = std::mem::take(&mut kept.writes).into();
    let had = writes.len();
    writes.extend(batch);
    if writes.is_empty() {
        return;
    }
    match db.apply(&writes) {
        Ok(()) => {
            if had > 0 {
                tracing::warn!(
                    kept = had,
                    let_go = kept.dropped,
                    "the store is back; the writes kept meanwhile are written"
                );
            }
            *kept = Kept::default();
        }
        Err(e) if Kept::transient(&e) => {
            if kept.keep(writes, &e)
                && let Some(w) = watch
            {
                let _ = w.events.send(StoreEvent::Failed(e));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = writes.len(), "a batch of store writes failed");
            if let Some(w) = watch {
                let _ = w.events.send(StoreEvent::Failed(e));
            }
            *kept = Kept::default();
        }
    }
}

fn run<B: Backend>(mut db: B, rx: mpsc::Receiver<Message<B>>, poke: mpsc::Sender<Message<B>>) {
    let mut watch: Option<Watch> = None;
    // Kept for the first watcher, and dropped with the thread: the store's handle closes it
    // (`Drop for ThreadStore`), so this sender never keeps the thread alive on its own.
    let mut poke = Some(poke);
    let mut poked = false;
    let mut linger = LINGER;
    let mut closing = false;
    let mut kept = Kept::default();
    while !closing {
        let poll = if db.woken() { POLL_WOKEN } else { POLL };
        let mut wait = match &watch {
            Some(w) => poll.saturating_sub(w.last_check.elapsed()),
            None => Duration::from_secs(3600),
        };
        if let Some(at) = kept.next_try {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(first) = first {
            let mut batch = Vec::new();
            let mut after = Vec::new();
            let mut next = Some(first);
            let linger_until = Instant::now() + linger;
            while let Some(message) = next.take() {
                match message {
                    Message::Write(w) => batch.push(*w),
                    Message::Request(r) => after.push(r),
                    // Not yet seen: the first look reads what was committed since `since`, whoever
                    // committed it while the watcher was starting.
                    Message::Watch(since, events) => {
                        watch = Some(Watch { events, seen_rev: since, seen_version: None, last_check: Instant::now() });
                        if let Some(poke) = poke.take() {
                            db.wake_on_change(Box::new(move || {
                                let _ = poke.send(Message::Poke);
                            }));
                        }
                    }
                    Message::Poke => poked = true,
                    Message::Close => closing = true,
                }
                if batch.len() + after.len() < MAX_BATCH && !closing {
                    next = rx.try_recv().ok();
                    // Unacknowledged writes may wait a moment for company: fewer, larger transactions.
                    if next.is_none() && after.is_empty() && !batch.is_empty() && Instant::now() < linger_until {
                        next = rx.recv_timeout(linger_until.saturating_duration_since(Instant::now())).ok();
                    }
                }
            }
            // What someone waits for was reported done: it must survive a power cut, not only a kill.
            let durable = after.iter().any(|r| !matches!(r, Request::Read(_)));
            db.set_durable(durable);
            let busy = batch.len() as f64 >= BUSY_RATE * linger.as_secs_f64();
            if busy != (linger == LINGER_BUSY) {
                db.set_busy(busy);
            }
            linger = if busy { LINGER_BUSY } else { LINGER };
            // While the store is away, new writes join the kept ones until the next try.
            if !batch.is_empty() && (kept.next_try.is_none() || kept.due()) {
                write_batch(&mut db, &mut kept, batch, watch.as_ref());
            } else if !batch.is_empty() {
                kept.add(batch);
            }
            for request in after {
                match request {
                    Request::Acked(writes, reply) => {
                        let _ = reply.send(db.apply(&writes));
                    }
                    Request::Insert(inserted, reply) => {
                        let (mut session, history) = *inserted;
                        let _ = reply.send(db.insert_with_history(&mut session, &history).map(|()| session));
                    }
                    Request::InsertAll(sessions, reply) => {
                        let _ = reply.send(db.insert_all(&sessions));
                    }
                    Request::Read(read) => read(&mut db),
                    Request::Flush(reply) => {
                        // What was committed without a sync is synced now.
                        db.sync();
                        let _ = reply.send(());
                    }
                }
            }
            db.set_durable(false);
            // Our own commits need not come back as changes: if nobody else committed meanwhile,
            // everything up to now is known here.
            if let Some(w) = &mut watch
                && db.others_mark().ok() == w.seen_version
                && let Ok(rev) = db.rev()
            {
                w.seen_rev = rev;
            }
        }
        if kept.due() || (closing && !kept.writes.is_empty()) {
            write_batch(&mut db, &mut kept, Vec::new(), watch.as_ref());
            if closing && !kept.writes.is_empty() {
                tracing::error!(
                    writes = kept.writes.len(),
                    "the store was still away at the end; writes kept for it are lost"
                );
            }
        }
        let poll = if db.woken() { POLL_WOKEN } else { POLL };
        if let Some(w) = &mut watch
            && (std::mem::take(&mut poked) || w.last_check.elapsed() >= poll)
        {
            w.last_check = Instant::now();
            let version = db.others_mark().ok();
            if version.is_some() && version != w.seen_version {
                w.seen_version = version;
                let event = match db.changes_since(w.seen_rev) {
                    Ok(changes) => {
                        w.seen_rev = changes.rev;
                        StoreEvent::Changed(changes)
                    }
                    Err(e) => StoreEvent::Failed(e),
                };
                if w.events.send(event).is_err() {
                    watch = None;
                }
            }
        }
    }
}
