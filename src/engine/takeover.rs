//! A watching engine becomes the driver once the driver of its store lets go of the role.

use std::sync::Arc;

use crate::store::{DriverRole, Lease};

pub(crate) struct Takeover {
    role: Option<Arc<dyn DriverRole>>,
    lease: Option<Box<dyn Lease>>,
}

impl Takeover {
    /// `role`: the store's driver role, to take when it is free; `None` never takes over.
    pub fn new(role: Option<Arc<dyn DriverRole>>) -> Self {
        Takeover { role, lease: None }
    }

    /// Takes the role if its holder is gone. Returns whether this engine drives now.
    pub(crate) fn try_now(&mut self) -> bool {
        if self.lease.is_some() {
            return true;
        }
        let Some(role) = &self.role else { return false };
        match role.try_acquire() {
            Ok(lease) => {
                tracing::info!("the driver went away; this process schedules automatic refreshes now");
                self.lease = Some(lease);
                true
            }
            Err(_) => false,
        }
    }
}
