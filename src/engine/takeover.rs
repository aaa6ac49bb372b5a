//! The driver role as this engine holds it: a watcher takes it once it is free, and a driver
//! that lost it (another process took it while this one was stopped) lets go and watches.

use std::sync::Arc;

use crate::store::{DriverRole, Holder, Lease};

pub struct Takeover {
    role: Option<Arc<dyn DriverRole>>,
    lease: Option<Box<dyn Lease>>,
}

impl Takeover {
    /// `role`: the store's driver role (`None`: nothing to share); `lease`: the role, held.
    pub fn new(role: Option<Arc<dyn DriverRole>>, lease: Option<Box<dyn Lease>>) -> Self {
        Takeover { role, lease }
    }

    /// Looks at the role: `Some(true)` when this engine holds it (it just took it, or still
    /// holds it), `Some(false)` when it lost it, `None` when there is nothing to look at.
    pub fn check(&mut self) -> Option<bool> {
        if let Some(lease) = &self.lease {
            if lease.renew().is_ok() {
                return Some(true);
            }
            self.lease = None;
            return Some(false);
        }
        let role = self.role.as_ref()?;
        match role.try_acquire() {
            Ok(lease) => {
                tracing::info!("the driver went away; this process schedules automatic refreshes now");
                self.lease = Some(lease);
                Some(true)
            }
            Err(_) => Some(false),
        }
    }

    /// This engine's part, where keepers share the store (`None`: all of it).
    pub fn share(&self) -> Option<crate::store::Share> {
        self.lease.as_ref().and_then(|lease| lease.share())
    }

    /// The store's keepers' role, where keepers share the store's workbooks.
    pub fn shared_role(&self) -> Option<Arc<dyn DriverRole>> {
        self.role.clone().filter(|role| role.shares_workbooks())
    }

    /// Who holds the role, as the store says.
    pub fn holder(&self) -> Option<Holder> {
        self.role.as_ref().and_then(|role| role.holder())
    }
}
