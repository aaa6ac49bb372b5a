//! A watching engine becomes the driver once the driver of its store lets go of the lock.

use std::path::PathBuf;

use crate::store::DriverLock;

pub struct Takeover {
    store: Option<PathBuf>,
    lock: Option<DriverLock>,
}

impl Takeover {
    /// `store`: the store whose lock to take when it is free; `None` never takes over.
    pub fn new(store: Option<PathBuf>) -> Self {
        Takeover { store, lock: None }
    }

    /// Takes the lock if its holder is gone. Returns whether this engine drives now.
    pub fn try_now(&mut self) -> bool {
        if self.lock.is_some() {
            return true;
        }
        let Some(store) = &self.store else { return false };
        match DriverLock::acquire_now(store) {
            Ok(lock) => {
                tracing::info!("the driver went away; this process schedules automatic refreshes now");
                self.lock = Some(lock);
                true
            }
            Err(_) => false,
        }
    }
}
