//! The dashboard, on the user's store or on the demo's.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::bad_input;
use super::headless::{STORE_POLL, graph_context, open_store, store_error};
use crate::auth::signin::Authority;
use crate::config::Settings;
use crate::engine::{self, EngineConfig, MEMORY_OUTCOMES, ops};
use crate::session::{Mode, TrackedSession, WorkbookRef};
use crate::sim::SimConfig;
use crate::store::{DriverLock, LockError, StoreWriter};
use crate::time::Clock;
use crate::tui::{self, App, Driver, Info, SignInSetup};

/// Opens the dashboard on `settings.store`, as the driver if no other process is.
pub async fn dashboard(settings: &Settings, demo: Option<Authority>) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(bad_input("the dashboard needs a terminal; use `wbsessions list` or `wbsessions run` in scripts"));
    }
    let store = open_store(settings)?;
    let (lock, driver) = match DriverLock::acquire(&settings.store) {
        Ok(lock) => (Some(lock), Driver::This),
        Err(LockError::Held { pid, .. }) => (None, Driver::Other(pid)),
        Err(e) => return Err(e.into()),
    };
    let sessions = store.sessions(MEMORY_OUTCOMES).map_err(store_error)?;
    let ctx = graph_context(settings)?;
    let clock = ctx.clock.clone();
    let signin = SignInSetup {
        authority: demo.clone().or_else(|| {
            let cached = crate::auth::signin::load(&settings.token_cache).ok().flatten().map(|c| c.authority);
            settings
                .login
                .client_id
                .clone()
                .map(|client_id| Authority {
                    login_url: settings.login.login_url.clone(),
                    tenant: settings.login.tenant.clone(),
                    client_id,
                })
                .or(cached)
        }),
        graph: ctx.client.clone(),
        cache: settings.token_cache.clone(),
        tokens: ctx.tokens.clone(),
    };
    let demo = demo.is_some();
    let info = Info {
        store: settings.store.display().to_string(),
        endpoint: ctx.client.base_url().to_string(),
        demo,
        signin: if demo { "simulated".into() } else { tui::signin_label(&ctx.tokens) },
        driver: driver.clone(),
        defaults: settings.engine.clone(),
        no_color: settings.no_color,
    };
    let token_missing = !ctx.tokens.is_configured();
    let writer = StoreWriter::spawn(store, STORE_POLL, MEMORY_OUTCOMES);
    let config = EngineConfig {
        settings: settings.engine.clone(),
        driver: driver == Driver::This,
        take_over: Some(settings.store.clone()),
    };
    // The engine reports nothing about the sessions it starts with: the mirror starts from the same list.
    let mut app = App::new(info, sessions.clone());
    let mut engine = engine::spawn(ctx, writer.handle.clone(), writer.events, sessions, config);
    drop(writer.handle);
    if token_missing {
        if signin.authority.is_some() {
            app.start_sign_in();
        } else {
            app.flash_error(crate::auth::AuthError::Missing.to_string(), clock.now());
        }
    }
    let result = tui::run(app, &mut engine, &clock, signin).await;
    // The terminal is back; let running calls finish and the store flush.
    let _ = tokio::time::timeout(Duration::from_secs(6), &mut engine.task).await;
    let thread = writer.thread;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    drop(lock);
    result.context("the dashboard failed")?;
    Ok(ExitCode::SUCCESS)
}

/// The simulator the demo runs against: short expiries, a little throttling, one workbook that
/// keeps failing and one whose sessions die, so that every status shows within a minute.
pub fn demo_sim_config() -> SimConfig {
    let mut workbooks = crate::sim::demo_workbooks();
    workbooks.push(("01LEGACY".into(), Some("Archive/Legacy macros.xlsx".into())));
    SimConfig {
        persistent_expiry: Duration::from_secs(40),
        non_persistent_expiry: Duration::from_secs(60),
        workbooks,
        async_create: Some(Duration::from_millis(300)),
        throttle_rate: 0.06,
        latency: Some((Duration::from_millis(15), Duration::from_millis(140))),
        failing_workbooks: vec!["01FORECAST".into()],
        unsupported_workbooks: vec!["01LEGACY".into()],
        ..SimConfig::default()
    }
}

/// (name, workbook, mode, interval in seconds, recreate)
const DEMO_SESSIONS: &[(&str, &str, Mode, u64, bool)] = &[
    ("budget-live", "me/drive/items/01BUDGET2026", Mode::Persistent, 15, false),
    ("sales-pipeline", "me/drive/items/01SALESQ3", Mode::Persistent, 20, false),
    ("inventory-scratch", "me/drive/items/01INVENTORY", Mode::NonPersistent, 30, false),
    ("forecast-model", "me/drive/items/01FORECAST", Mode::Persistent, 15, false),
    ("legacy-macros", "me/drive/items/01LEGACY", Mode::Persistent, 20, false),
    ("nightly-import", "me/drive/items/01BUDGET2026", Mode::Persistent, 50, false),
    ("report-cache", "me/drive/items/01SALESQ3", Mode::Persistent, 45, true),
    ("ops-by-path", "/me/drive/root:/Ops/Inventory.xlsx:", Mode::Persistent, 25, false),
];

pub async fn demo(settings: &Settings, store_from_flag: bool) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(bad_input("the demo is a dashboard and needs a terminal"));
    }
    let sim = crate::sim::start(demo_sim_config(), Clock::system(), "127.0.0.1:0".parse().context("loopback address")?)
        .await
        .context("cannot start the simulator")?;
    let scratch = tempfile_dir()?;
    let mut settings = settings.clone();
    settings.store = if store_from_flag { settings.store.clone() } else { scratch.join("demo.db") };
    settings.graph_url = sim.graph_url();
    settings.token = Some("demo-token".into());
    settings.token_command = None;
    settings.engine.request_timeout = Duration::from_secs(10);
    // `l` in the demo signs in against the simulator; the tokens stay in the scratch folder.
    settings.token_cache = scratch.join("token.json");
    let authority =
        Authority { login_url: sim.login_url(), tenant: "organizations".into(), client_id: "wbsessions-demo".into() };

    let mut store = open_store(&settings)?;
    let ctx = graph_context(&settings)?;
    let missing: Vec<_> = DEMO_SESSIONS.iter().filter(|(name, ..)| store.session(name).is_err()).collect();
    // Side by side, and again after a throttled or failed try: the demo should open in a moment.
    let created =
        futures_util::future::join_all(missing.into_iter().map(|(name, workbook, mode, interval, recreate)| {
            let ctx = &ctx;
            async move {
                let workbook = WorkbookRef::parse(workbook).ok()?;
                for _ in 0..5 {
                    let report = ops::create(ctx, &workbook, *mode).await;
                    if let Some(id) = report.new_session_id.clone() {
                        let mut session = TrackedSession::new(name.to_string(), workbook, id, *mode, ctx.clock.now());
                        session.interval = Some(Duration::from_secs(*interval));
                        session.recreate = *recreate;
                        report.apply_to(&mut session, MEMORY_OUTCOMES);
                        return Some(session);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tracing::warn!(session = name, "the demo could not create a session");
                None
            }
        }))
        .await;
    for mut session in created.into_iter().flatten() {
        store.insert(&mut session).map_err(store_error)?;
    }
    drop(store);
    let result = dashboard(&settings, Some(authority)).await;
    sim.stop().await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A private folder for the throwaway demo store.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("wbsessions-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
