//! The store's writer thread: batches writes into few transactions, answers the reads the engine
//! needs off its own task, and watches for changes that other processes commit
//! (`PRAGMA data_version`), reading only what changed since the revision it last saw.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc as tmpsc, oneshot};

use super::{Changes, Persist, Store, StoreError, Write};
use crate::session::{Outcome, SessionKey, TrackedSession};

/// What the writer reports on its own.
#[derive(Debug)]
pub enum StoreEvent {
    /// Another process changed the store.
    Changed(Changes),
    /// A batch of unacknowledged writes failed.
    Failed(String),
}

enum Message {
    /// Lands in the next batch; nobody waits for it.
    Write(Box<Write>),
    /// Someone waits for the answer: handled after the batch it arrived with.
    Request(Request),
}

enum Request {
    Acked(Vec<Write>, oneshot::Sender<Result<(), StoreError>>),
    Insert(Box<(TrackedSession, Vec<Outcome>)>, oneshot::Sender<Result<TrackedSession, StoreError>>),
    History(SessionKey, usize, oneshot::Sender<Result<Vec<Outcome>, StoreError>>),
    Load(oneshot::Sender<Result<Vec<TrackedSession>, StoreError>>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Message>,
}

impl WriterHandle {
    fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(Message::Request(make(reply)));
        async move {
            sent.map_err(|_| StoreError::WriterGone)?;
            answer.await.map_err(|_| StoreError::WriterGone)?
        }
        .boxed()
    }
}

impl Persist for WriterHandle {
    fn write(&self, write: Write) {
        let _ = self.tx.send(Message::Write(Box::new(write)));
    }

    fn write_acked(&self, writes: Vec<Write>) -> BoxFuture<'static, Result<(), StoreError>> {
        self.ask(|reply| Request::Acked(writes, reply))
    }

    fn insert(
        &self,
        session: TrackedSession,
        history: Vec<Outcome>,
    ) -> BoxFuture<'static, Result<TrackedSession, StoreError>> {
        self.ask(|reply| Request::Insert(Box::new((session, history)), reply))
    }

    fn history(&self, key: SessionKey, limit: usize) -> BoxFuture<'static, Result<Vec<Outcome>, StoreError>> {
        self.ask(|reply| Request::History(key, limit, reply))
    }

    fn load(&self) -> BoxFuture<'static, Result<Vec<TrackedSession>, StoreError>> {
        self.ask(Request::Load)
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
}

pub struct StoreWriter {
    pub handle: WriterHandle,
    pub events: tmpsc::UnboundedReceiver<StoreEvent>,
    pub thread: JoinHandle<()>,
}

impl StoreWriter {
    /// Moves the store onto its own thread. With `watch`, other processes' changes since revision
    /// `seen` are looked for every so often.
    pub fn spawn(store: Store, watch: Option<(Duration, i64)>) -> std::io::Result<StoreWriter> {
        let (tx, rx) = mpsc::channel();
        let (events_tx, events) = tmpsc::unbounded_channel();
        let thread =
            std::thread::Builder::new().name("store-writer".into()).spawn(move || run(store, rx, events_tx, watch))?;
        Ok(StoreWriter { handle: WriterHandle { tx }, events, thread })
    }
}

/// Most writes one transaction takes; more wait for the next.
const MAX_BATCH: usize = 4096;

/// How long a batch of unacknowledged writes waits for more before it commits: one transaction
/// for 40 outcomes costs little more than one for a single one. Other processes see them as soon
/// as they would have polled anyway (`keeper::STORE_POLL`); a crash loses at most this much of
/// the record (`LINGER_BUSY` while writes come fast).
const LINGER: Duration = Duration::from_millis(250);
/// The wait while writes come fast (the last batch came at `BUSY_RATE` or more; the store keeps
/// more pages then too): a keeper of 10,000 sessions records about 170 outcomes a second, and a
/// session's page written once a second rather than four times is most of what its store costs.
const LINGER_BUSY: Duration = Duration::from_secs(1);
/// Writes per second.
const BUSY_RATE: f64 = 100.0;

fn run(
    mut store: Store,
    rx: mpsc::Receiver<Message>,
    events: tmpsc::UnboundedSender<StoreEvent>,
    watch: Option<(Duration, i64)>,
) {
    let poll = watch.map_or(Duration::from_secs(3600), |(poll, _)| poll);
    let mut seen_rev = watch.map_or(0, |(_, rev)| rev);
    let mut seen_version = store.data_version().ok();
    let mut last_check = Instant::now();
    let mut linger = LINGER;
    loop {
        let first = match rx.recv_timeout(poll) {
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
                }
                if batch.len() + after.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                    // Unacknowledged writes may wait a moment for company: fewer, larger transactions.
                    if next.is_none() && after.is_empty() && !batch.is_empty() && Instant::now() < linger_until {
                        next = rx.recv_timeout(linger_until.saturating_duration_since(Instant::now())).ok();
                    }
                }
            }
            // What someone waits for was reported done: it must survive a power cut, not only a kill.
            let durable = after.iter().any(|r| !matches!(r, Request::History(..) | Request::Load(_)));
            let _ = store.set_durable(durable);
            let busy = batch.len() as f64 >= BUSY_RATE * linger.as_secs_f64();
            if busy != (linger == LINGER_BUSY) {
                let _ = store.set_busy(busy);
            }
            linger = if busy { LINGER_BUSY } else { LINGER };
            if !batch.is_empty()
                && let Err(e) = store.apply(&batch)
            {
                tracing::error!(error = %e, writes = batch.len(), "a batch of store writes failed");
                let _ = events.send(StoreEvent::Failed(e.to_string()));
            }
            for request in after {
                match request {
                    Request::Acked(writes, reply) => {
                        let _ = reply.send(store.apply(&writes));
                    }
                    Request::Insert(inserted, reply) => {
                        let (mut session, history) = *inserted;
                        let _ = reply.send(store.insert_with_history(&mut session, &history).map(|()| session));
                    }
                    Request::History(key, limit, reply) => {
                        let _ = reply.send(store.outcomes(key, limit));
                    }
                    Request::Load(reply) => {
                        let _ = reply.send(store.sessions());
                    }
                    Request::Flush(reply) => {
                        let _ = reply.send(());
                    }
                }
            }
            let _ = store.set_durable(false);
            // Our own commits need not come back as changes: if nobody else committed meanwhile,
            // everything up to now is known here.
            if watch.is_some() {
                let version = store.data_version().ok();
                if version == seen_version
                    && let Ok(rev) = store.rev()
                {
                    seen_rev = rev;
                }
            }
        }
        if watch.is_some() && last_check.elapsed() >= poll {
            last_check = Instant::now();
            let version = store.data_version().ok();
            if version.is_some() && version != seen_version {
                seen_version = version;
                match store.changes_since(seen_rev) {
                    Ok(changes) => {
                        seen_rev = changes.rev;
                        let _ = events.send(StoreEvent::Changed(changes));
                    }
                    Err(e) => {
                        let _ = events.send(StoreEvent::Failed(e.to_string()));
                    }
                }
            }
        }
    }
}
