//! What the engine is told by whoever starts it: no command-line or file types here.

use std::time::Duration;

use crate::session::Defaults;

/// How the engine schedules and limits its calls.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// Intervals, idle expiries and the recreate default for sessions that say nothing of their own.
    pub defaults: Defaults,
    /// Calls in flight at once, across all workbooks.
    pub concurrency: usize,
    /// Requests per 10 s, across all sessions: the ceiling the adaptive rate climbs back to.
    pub request_budget: u32,
    pub request_timeout: Duration,
    /// Refresh several sessions per `$batch` request, once Graph has shown it honours the session
    /// header there (`batching`).
    pub batch: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            defaults: Defaults::default(),
            concurrency: 8,
            request_budget: 1000,
            request_timeout: Duration::from_secs(30),
            batch: true,
        }
    }
}
