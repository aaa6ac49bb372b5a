//! The store's writer thread: batches writes into few transactions, and watches for changes that
//! other processes commit (`PRAGMA data_version`).

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc as tmpsc, oneshot};

use super::{Store, StoreError, Write};
use crate::session::TrackedSession;

/// What the writer reports on its own.
#[derive(Debug)]
pub enum StoreEvent {
    /// Another process changed the store; this is the whole list as it is now.
    External(Vec<TrackedSession>),
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
    Insert(Box<TrackedSession>, oneshot::Sender<Result<TrackedSession, StoreError>>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Message>,
}

impl WriterHandle {
    /// Queues a write; it lands in the next batch.
    pub fn write(&self, write: Write) {
        let _ = self.tx.send(Message::Write(Box::new(write)));
    }

    /// Writes and waits until the transaction has committed.
    pub async fn write_acked(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Message::Request(Request::Acked(writes, reply))).map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn insert(&self, session: TrackedSession) -> Result<TrackedSession, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Request(Request::Insert(Box::new(session), reply)))
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Resolves once everything queued before it has committed.
    pub async fn flush(&self) {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Message::Request(Request::Flush(reply))).is_ok() {
            let _ = answer.await;
        }
    }
}

pub struct StoreWriter {
    pub handle: WriterHandle,
    pub events: tmpsc::UnboundedReceiver<StoreEvent>,
    pub thread: JoinHandle<()>,
}

impl StoreWriter {
    /// Moves the store onto its own thread. `poll` is how often other processes' changes are looked
    /// for; `outcomes` how many outcomes per session an external snapshot carries.
    pub fn spawn(store: Store, poll: Duration, outcomes: usize) -> StoreWriter {
        let (tx, rx) = mpsc::channel();
        let (events_tx, events) = tmpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store, rx, events_tx, poll, outcomes))
            .unwrap_or_else(|e| panic!("cannot start the store thread: {e}"));
        StoreWriter { handle: WriterHandle { tx }, events, thread }
    }
}

/// Most writes one transaction takes; more wait for the next.
const MAX_BATCH: usize = 4096;

/// How long a batch of unacknowledged writes waits for more before it commits.
const LINGER: Duration = Duration::from_millis(25);

fn run(
    mut store: Store,
    rx: mpsc::Receiver<Message>,
    events: tmpsc::UnboundedSender<StoreEvent>,
    poll: Duration,
    outcomes: usize,
) {
    // No version seen yet: the first check always sends a snapshot, which covers any change made
    // between the caller's first read of the store and this thread's start.
    let mut seen_version = None;
    let mut last_check = Instant::now();
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
            let linger_until = Instant::now() + LINGER;
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
                    Request::Insert(mut session, reply) => {
                        let _ = reply.send(store.insert(&mut session).map(|()| *session));
                    }
                    Request::Flush(reply) => {
                        let _ = reply.send(());
                    }
                }
            }
        }
        if last_check.elapsed() >= poll {
            last_check = Instant::now();
            let version = store.data_version().ok();
            if version.is_some() && version != seen_version {
                seen_version = version;
                match store.sessions(outcomes) {
                    Ok(list) => {
                        let _ = events.send(StoreEvent::External(list));
                    }
                    Err(e) => {
                        let _ = events.send(StoreEvent::Failed(e.to_string()));
                    }
                }
            }
        }
    }
}
