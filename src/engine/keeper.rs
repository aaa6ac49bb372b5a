//! Starting and stopping an engine on a store, the one way `run`, the dashboard and the one-shot
//! commands all do it: the store's change feed, the engine task, the driver role.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Context, EngineConfig, EngineSettings, Event, Handle, Role, Spawned};
use crate::session::TrackedSession;
use crate::store::{DriverRole, Lease, Rev, SessionStore, StoreError};

/// How long stopping waits for running calls and the last writes.
const STOP_WAIT: Duration = Duration::from_secs(7);

/// Who the keeper is on its store.
pub enum KeeperRole {
    /// Holds the driver role (`lease`, of `role`): schedules automatic refreshes.
    Drive { lease: Box<dyn Lease>, role: Arc<dyn DriverRole> },
    /// Another process drives; take over from it once it is gone.
    Watch(Arc<dyn DriverRole>),
    /// Does only what it is asked, on the sessions it is given.
    OneShot,
}

/// What the engine starts from.
pub enum Start {
    /// Every stored session, read by the engine in the background (a dashboard draws meanwhile).
    Stored,
    /// These sessions, read when the store was at `rev` (`SessionStore::snapshot`): what changes
    /// after it is picked up, and nothing committed between the read and the start is missed.
    Given { sessions: Vec<TrackedSession>, rev: Rev },
}

pub struct Keeper {
    pub handle: Handle,
    /// Events from the engine's start on.
    pub events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn SessionStore>,
}

impl Keeper {
    /// Starts an engine on `store`.
    pub async fn start(
        store: Arc<dyn SessionStore>,
        role: KeeperRole,
        ctx: Context,
        settings: EngineSettings,
        start: Start,
    ) -> Result<Keeper, StoreError> {
        let paused = store.paused().await?;
        // A store written by an older build, or one that cannot say, knows nothing: probe again.
        let batching = store.batching().await.ok().flatten();
        // Read before the engine reads the sessions, so a change in between is seen twice at
        // worst (applying one again changes nothing), never missed.
        let (sessions, rev) = match start {
            Start::Stored => (None, store.rev().await?),
            Start::Given { sessions, rev } => (Some(sessions), rev),
        };
        let (role, watch) = match role {
            KeeperRole::Drive { lease, role } => (Role::Leased { lease, role }, true),
            KeeperRole::Watch(role) => (Role::Watcher(role), true),
            KeeperRole::OneShot => (Role::OneShot, false),
        };
        let feed = watch.then(|| store.watch(rev));
        let config = EngineConfig { settings, role, paused, batching, seed: None };
        let Spawned { handle, events, task } = super::spawn(ctx, store.clone(), feed, sessions, config);
        Ok(Keeper { handle, events, task, store })
    }

    /// Asks the engine to stop (it lets go of the driver role), lets running calls finish and
    /// the store flush and close. Events sent on the way out are still in `events`.
    pub async fn stop(mut self) -> mpsc::UnboundedReceiver<Event> {
        self.handle.shutdown();
        if tokio::time::timeout(STOP_WAIT, &mut self.task).await.is_err() {
            tracing::warn!("the engine did not stop in time");
            self.task.abort();
        }
        self.store.close().await;
        self.events
    }
}
