//! Starting and stopping an engine on a store, the one way `run`, the dashboard and the one-shot
//! commands all do it: the store on its writer thread, the engine task, the driver lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Command, Context, EngineConfig, EngineHandle, EngineSettings, Event, Role};
use crate::session::TrackedSession;
use crate::store::{DriverLock, Store, StoreError, StoreWriter};

/// How often another process's changes to the store are looked for.
pub const STORE_POLL: Duration = Duration::from_millis(250);

/// How long stopping waits for running calls and the last writes.
const STOP_WAIT: Duration = Duration::from_secs(7);

/// Who the keeper is on its store.
pub enum KeeperRole {
    /// Holds the driver lock: schedules automatic refreshes.
    Drive(DriverLock),
    /// Another process drives; take over from it once it is gone.
    Watch { store: PathBuf },
    /// Does only what it is told, on the sessions it is given.
    OneShot,
}

/// What the engine starts from.
pub enum Start {
    /// Every stored session, read by the engine in the background (a dashboard draws meanwhile).
    Stored,
    /// These sessions, read when the store was at `rev` (`Store::snapshot`): what changes after
    /// it is picked up, and nothing committed between the read and the start is missed.
    Given { sessions: Vec<TrackedSession>, rev: i64 },
}

pub struct Keeper {
    pub commands: mpsc::UnboundedSender<Command>,
    pub events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
    writer: Option<std::thread::JoinHandle<()>>,
    lock: Option<DriverLock>,
}

impl Keeper {
    /// Starts an engine on `store`.
    pub fn start(
        store: Store,
        role: KeeperRole,
        ctx: Context,
        settings: EngineSettings,
        start: Start,
    ) -> Result<Keeper, StoreError> {
        let paused = store.paused()?;
        // Read before the engine reads the sessions, so a change in between is seen twice at
        // worst (applying one again changes nothing), never missed.
        let (sessions, rev) = match start {
            Start::Stored => (None, store.rev()?),
            Start::Given { sessions, rev } => (Some(sessions), rev),
        };
        let (role, lock, watch) = match role {
            KeeperRole::Drive(lock) => (Role::Driver, Some(lock), Some((STORE_POLL, rev))),
            KeeperRole::Watch { store: path } => {
                (Role::Watcher { take_over: Some(path) }, None, Some((STORE_POLL, rev)))
            }
            KeeperRole::OneShot => (Role::OneShot, None, None),
        };
        let path = store.path().to_path_buf();
        let writer = StoreWriter::spawn(store, watch).map_err(|source| StoreError::Io { path, source })?;
        let config = EngineConfig { settings, role, paused, seed: None };
        let EngineHandle { commands, events, task } =
            super::spawn(ctx, Arc::new(writer.handle), Some(writer.events), sessions, config);
        Ok(Keeper { commands, events, task, writer: Some(writer.thread), lock })
    }

    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Asks the engine to stop, lets running calls finish and the store flush, then lets go of
    /// the lock. Events sent on the way out are still in `events` for whoever wants them.
    pub async fn stop(mut self) -> mpsc::UnboundedReceiver<Event> {
        let _ = self.commands.send(Command::Shutdown);
        if tokio::time::timeout(STOP_WAIT, &mut self.task).await.is_err() {
            tracing::warn!("the engine did not stop in time");
            self.task.abort();
        }
        // The engine held the last handle to the writer: its thread ends once it has drained.
        if let Some(thread) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        drop(self.lock.take());
        self.events
    }
}
