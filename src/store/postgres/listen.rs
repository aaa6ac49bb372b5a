//! Watchers woken by the database: every write transaction sends a notification on the
//! `wbs_changes` channel as it commits (`db::PgDb::write`), and a watcher's store keeps a
//! connection of its own listening for it, so that a change on any host is read at once rather
//! than at the next poll. While that connection is down, the store's thread polls as it would
//! without it (`Backend::woken`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator as _;

/// Opens a connection of the listener's own (`db::connect`, handed in by the store).
pub(super) type Connect = Box<dyn Fn() -> Option<Client> + Send>;

pub(super) const CHANNEL: &str = "wbs_changes";

/// How long a listen waits before it looks whether it should stop.
const LOOK: Duration = Duration::from_millis(500);
/// The longest wait before connecting again.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

pub(super) struct Listener {
    stop: Arc<AtomicBool>,
    listening: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Listens on a connection of its own, calling `wake` for every change another connection
    /// commits, and once each time it starts listening (something may have changed meanwhile).
    pub(super) fn start(connect: Connect, wake: Box<dyn Fn() + Send>) -> Option<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let listening = Arc::new(AtomicBool::new(false));
        let (stop_t, listening_t) = (stop.clone(), listening.clone());
        let thread = std::thread::Builder::new()
            .name("store-listen".into())
            .spawn(move || listen(&*connect, &*wake, &stop_t, &listening_t))
            .inspect_err(|e| tracing::warn!(error = %e, "cannot start listening for changes; polling instead"))
            .ok()?;
        Some(Listener { stop, listening, thread: Some(thread) })
    }

    /// Whether changes wake the watcher now.
    pub(super) fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn listen(connect: &(dyn Fn() -> Option<Client> + Send), wake: &dyn Fn(), stop: &AtomicBool, listening: &AtomicBool) {
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        if let Some(mut client) = connect()
            && client.batch_execute(&format!("LISTEN {CHANNEL}")).is_ok()
        {
            listening.store(true, Ordering::Relaxed);
            backoff = Duration::from_secs(1);
            wake();
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let (woken, failed) = {
                    let mut heard = client.notifications();
                    let mut pending = heard.timeout_iter(LOOK);
                    let mut woken = false;
                    loop {
                        match pending.next() {
                            Ok(Some(_)) => woken = true,
                            Ok(None) => break (woken, false),
                            Err(_) => break (woken, true),
                        }
                    }
                };
                if woken {
                    wake();
                }
                if failed || client.is_closed() {
                    break;
                }
            }
            listening.store(false, Ordering::Relaxed);
            tracing::info!("the connection listening for changes was lost; polling until it is back");
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
