//! The dashboard, on the user's store or on the demo's.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::bad_input;
use super::front::{graph_setup, open_store, store_error};
use crate::auth::signin::Authority;
use crate::cli::ProxyOptions;
use crate::config::{LoginOverrides, Settings};
use crate::engine::Request;
use crate::engine::keeper::{Keeper, KeeperRole, Start};
use crate::session::{Draft, NewSession, SortBy};
use crate::sim::SimConfig;
use crate::store::{RoleError, StoreError};
use crate::time::Clock;
use crate::tui::app::Sort;
use crate::tui::theme::{Palette, ThemePreset};
use crate::tui::{self, App, Driver, Effect, Info, ProxyGauge};

/// Opens the dashboard on `settings.store`, as the driver if no other process is. `demo`: the
/// simulator's sign-in, and sessions to create first.
pub async fn dashboard(
    settings: &Settings,
    demo: Option<(Authority, Vec<NewSession>)>,
    proxy: Option<&ProxyOptions>,
) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(bad_input("the dashboard needs a terminal; use `wbsessions list` or `wbsessions run` in scripts"));
    }
    let listener = match proxy {
        Some(options) => Some(super::proxy::bind(options).await?),
        None => None,
    };
    // A store named on purpose must exist: a typo must not become a new, empty store.
    if settings.store_named && demo.is_none() && !settings.store.exists() {
        return Err(store_error(StoreError::Missing { store: settings.store.to_string() }));
    }
    // A store this user may read but not write is shown, as `list` shows it: watched, changed
    // by nothing here.
    let opened = match crate::store::open(&settings.store, crate::store::Access::Write) {
        Err(StoreError::ReadOnly { .. }) if demo.is_none() => super::front::open_to_read(settings)?,
        other => other.map_err(store_error)?,
    };
    let read_only = opened.sessions.read_only();
    let (authority, creations) = match demo {
        Some((authority, creations)) => (Some(authority), creations),
        None => (settings.authority(&LoginOverrides::default()), Vec::new()),
    };
    let graph = graph_setup(settings, authority.clone())?;
    super::front::identify(&*opened.role, &graph).await;
    let (role, driver) = match opened.role.acquire() {
        _ if read_only => (KeeperRole::Watch(opened.role.clone()), Driver::ReadOnly),
        Ok(lease) => (KeeperRole::Drive { lease, role: opened.role.clone() }, Driver::This),
        Err(RoleError::Held { holder, .. }) => (KeeperRole::Watch(opened.role.clone()), Driver::Other(holder.pid)),
        Err(e) if e.is_bad_input() => return Err(super::bad_input(e)),
        Err(e) => return Err(e.into()),
    };
    let token_missing = !graph.tokens.is_configured();
    let problem = graph.tokens.problem();
    let graph_tokens = graph.tokens.clone();
    let ctx = graph.ctx;
    let store = opened.sessions;
    let clock = ctx.clock.clone();
    let paused = store.paused().await.map_err(store_error)?;
    let unfinished = super::front::unfinished_creations(&*store, super::output::Times { utc: settings.utc }).await;
    let sort = saved_sort(settings).unwrap_or(Sort { by: settings.ui.sort, reverse: settings.ui.reverse });
    // The first screenful now; the engine reads the rest behind it, so a big store opens at once.
    let (_, rows) = tui::terminal_size();
    let first = store.first_page(sort.by, sort.reverse, usize::from(rows)).await.map_err(store_error)?;
    let info = Info {
        store: settings.store.to_string(),
        endpoint: settings.graph_url.clone(),
        demo: !creations.is_empty() || authority.as_ref().is_some_and(|a| a.client_id == DEMO_CLIENT_ID),
        driver,
        defaults: settings.engine.defaults.clone(),
        log_dir: settings.log_dir.display().to_string(),
        palette: palette(settings),
    };
    let mut app = App::new(info, first, tui::terminal_size(), clock.now());
    app.paused = paused;
    app.set_sort(sort);
    app.absolute_times = settings.ui.absolute_times;
    app.loading = true;
    let calls = ctx.graph.clone();
    let tokens = graph_tokens;
    let mut keeper =
        Keeper::start(store, role, ctx, settings.engine.clone(), Start::Stored).await.map_err(store_error)?;
    let serving = match (listener, proxy) {
        (Some(listener), Some(options)) => {
            let serving = super::proxy::serve_on(settings, options, listener, keeper.handle.clone(), tokens, calls)?;
            let counts = serving.counts.clone();
            app.proxy = Some(ProxyGauge { last_minute: Box::new(move || counts.last_minute()) });
            app.flash_info(format!("proxy listening on {}", serving.url), clock.now());
            Some(serving)
        }
        _ => None,
    };
    let mut effects: Vec<Effect> = creations.into_iter().map(|new| app.ask(Request::Create(new))).collect();
    for line in &unfinished {
        app.flash_error(line.clone(), clock.now());
    }
    if read_only {
        app.flash_error(
            format!("{} is read-only for you: shown and followed, changed by nothing here", settings.store),
            clock.now(),
        );
    }
    if let Some(problem) = problem {
        app.flash_error(problem, clock.now());
    } else if token_missing {
        if authority.is_some() {
            effects.extend(app.start_sign_in());
        } else {
            app.flash_error(crate::auth::AuthError::Missing.to_string(), clock.now());
        }
    }
    let result = tui::run(&mut app, &keeper.handle, &mut keeper.events, &clock, effects).await;
    // The terminal is back; let running calls finish and the store flush.
    if let Some(serving) = serving {
        serving.stop().await;
    }
    keeper.stop().await;
    save_sort(settings, app.sort);
    result.context("the dashboard failed")?;
    Ok(ExitCode::SUCCESS)
}

const DEMO_CLIENT_ID: &str = "wbsessions-demo";

/// The theme of the config file with its status colours; none at all under `NO_COLOR` or on a
/// terminal that says it is dumb.
fn palette(settings: &Settings) -> Palette {
    let dumb = std::env::var_os("TERM").is_some_and(|term| term == "dumb");
    let preset = if settings.no_color || dumb { ThemePreset::Mono } else { settings.ui.theme };
    let custom = settings
        .ui
        .colors
        .iter()
        .filter_map(|(status, name)| name.parse::<ratatui::style::Color>().ok().map(|c| (*status, c)))
        .collect();
    Palette::new(preset, &custom)
}

/// The sort the dashboard was left in, so that it survives restarts.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedUi {
    sort: String,
    reverse: bool,
}

fn saved_sort(settings: &Settings) -> Option<Sort> {
    let text = std::fs::read_to_string(&settings.ui_state).ok()?;
    let saved: SavedUi = serde_json::from_str(&text).ok()?;
    Some(Sort { by: SortBy::parse(&saved.sort)?, reverse: saved.reverse })
}

fn save_sort(settings: &Settings, sort: Sort) {
    let saved = SavedUi { sort: sort.by.word().to_string(), reverse: sort.reverse };
    let written = settings
        .ui_state
        .parent()
        .map_or(Ok(()), crate::files::private_dir)
        .and_then(|()| serde_json::to_vec(&saved).map_err(std::io::Error::other))
        .and_then(|bytes| std::fs::write(&settings.ui_state, bytes));
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %settings.ui_state.display(), "could not save the dashboard's sort");
    }
}

/// The simulator the demo runs against: short expiries, a little throttling, one workbook that
/// keeps failing and one whose sessions die, so that every status shows within a minute.
pub(crate) fn demo_sim_config() -> SimConfig {
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

/// (name, workbook, non-persistent, interval in seconds, recreate)
const DEMO_SESSIONS: &[(&str, &str, bool, u64, bool)] = &[
    ("budget-live", "me/drive/items/01BUDGET2026", false, 15, false),
    ("sales-pipeline", "me/drive/items/01SALESQ3", false, 20, false),
    ("inventory-scratch", "me/drive/items/01INVENTORY", true, 30, false),
    ("forecast-model", "me/drive/items/01FORECAST", false, 15, false),
    ("legacy-macros", "me/drive/items/01LEGACY", false, 20, false),
    ("nightly-import", "me/drive/items/01BUDGET2026", false, 50, false),
    ("report-cache", "me/drive/items/01SALESQ3", false, 45, true),
    ("ops-by-path", "/me/drive/root:/Ops/Inventory.xlsx:", false, 25, false),
];

pub async fn demo(settings: &Settings, store_from_flag: bool, scratch: Option<PathBuf>) -> Result<ExitCode> {
    let scratch = match scratch {
        Some(dir) => dir,
        None => scratch_dir()?,
    };
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(bad_input("the demo is a dashboard and needs a terminal"));
    }
    let sim_config = demo_sim_config();
    let sim =
        crate::sim::start(sim_config.clone(), Clock::system(), "127.0.0.1:0".parse().context("loopback address")?)
            .await
            .context("cannot start the simulator")?;
    let mut settings = settings.clone();
    settings.store =
        if store_from_flag { settings.store.clone() } else { crate::store::Location::Sqlite(scratch.join("demo.db")) };
    settings.store_named = false;
    settings.graph_url = sim.graph_url();
    settings.token = Some("demo-token".into());
    settings.token_command = None;
    settings.engine.request_timeout = Duration::from_secs(10);
    // What the dashboard assumes of Graph is what its simulator does.
    settings.engine.defaults.persistent_expiry = sim_config.persistent_expiry;
    settings.engine.defaults.non_persistent_expiry = sim_config.non_persistent_expiry;
    // Well inside the simulator's idle expiries, as the real defaults are inside Graph's.
    settings.engine.defaults.persistent_interval = sim_config.persistent_expiry / 2;
    settings.engine.defaults.non_persistent_interval = sim_config.non_persistent_expiry / 2;
    // `l` in the demo signs in against the simulator; the tokens stay in the scratch folder.
    settings.token_cache = scratch.join("token.json");
    let authority =
        Authority { login_url: sim.login_url(), tenant: "organizations".into(), client_id: DEMO_CLIENT_ID.into() };
    let store = open_store(&settings)?.sessions;
    let names = store.names().await.map_err(store_error)?;
    store.close().await;
    let creations: Vec<NewSession> = DEMO_SESSIONS
        .iter()
        .filter(|(name, ..)| !names.iter().any(|n| n == name))
        .filter_map(|(name, workbook, non_persistent, interval, recreate)| {
            let draft = Draft {
                name: name.to_string(),
                workbook: workbook.to_string(),
                session_id: None,
                non_persistent: *non_persistent,
                interval: Some(Duration::from_secs(*interval)),
                recreate: Some(*recreate),
            };
            NewSession::check(&draft, &settings.engine.defaults).ok()
        })
        .collect();
    let result = dashboard(&settings, Some((authority, creations)), None).await;
    sim.stop().await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A private folder for the throwaway demo store, its log and its dashboard state.
pub(crate) fn scratch_dir() -> Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("wbsessions-demo-{}-{}", std::process::id(), crate::files::random_suffix()));
    crate::files::private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
