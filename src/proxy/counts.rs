//! What the proxy has done, counted as it goes: for the dashboard's header and the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What the proxy has done, for a front end to show.
#[derive(Debug, Default)]
pub struct Counts {
    pub calls: AtomicU64,
    /// Calls answered with an error status, whoever's the error.
    pub errors: AtomicU64,
    /// Calls refused before they reached Graph (no secret, wrong host, not a workbook call).
    pub refused: AtomicU64,
    /// Calls and errors of each of the last 60 seconds: (second since `start`, calls, errors).
    seconds: std::sync::Mutex<Vec<(u64, u64, u64)>>,
    start: std::sync::OnceLock<Instant>,
}

impl Counts {
    fn second(&self) -> u64 {
        self.start.get_or_init(Instant::now).elapsed().as_secs()
    }

    /// A call answered; `error`: with an error status.
    pub fn record(&self, error: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.second();
        if let Ok(mut seconds) = self.seconds.lock() {
            seconds.resize(60, (u64::MAX, 0, 0));
            if let Some(slot) = seconds.get_mut((now % 60) as usize) {
                if slot.0 != now {
                    *slot = (now, 0, 0);
                }
                slot.1 += 1;
                slot.2 += u64::from(error);
            }
        }
    }

    /// Calls and errors in the last minute.
    pub fn last_minute(&self) -> (u64, u64) {
        let now = self.second();
        let Ok(seconds) = self.seconds.lock() else { return (0, 0) };
        seconds
            .iter()
            .filter(|(second, _, _)| now.saturating_sub(*second) < 60 && *second <= now)
            .fold((0, 0), |(calls, errors), (_, c, e)| (calls + c, errors + e))
    }
}
