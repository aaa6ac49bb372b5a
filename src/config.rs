//! Settings: flags > environment > config.toml > defaults. Paths come from `directories`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::signin::Authority;
use crate::engine::EngineSettings;
use crate::graph::DEFAULT_GRAPH_URL;
use crate::session::{Defaults, MAX_INTERVAL, MIN_INTERVAL, SortBy, Status};
use crate::store::Location;
use crate::time::{format_duration, parse_duration};

pub(crate) const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
pub(crate) const DEFAULT_TENANT: &str = "organizations";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {path} is not valid: {message}; fix it or see docs/configuration.md")]
    Invalid { path: PathBuf, message: String },
    #[error("no home directory is known, so there is no default {0}; pass --{0} PATH")]
    NoHome(&'static str),
    #[error(
        "the token from --token or WBSESSIONS_TOKEN holds a space or a control character; a token is one word: check how it was set"
    )]
    BadToken,
    #[error(transparent)]
    UnknownStore(#[from] crate::store::UnknownScheme),
    /// As ssh refuses such a file: the config names a command to run and where tokens go.
    #[error(
        "the config file {path} {why}, and it can name a command this program runs (token_command); it was not read: `chmod go-w {path}`, and own it"
    )]
    Unsafe { path: PathBuf, why: &'static str },
    #[error("the store \"{0}\" names no file; pass a path, such as sqlite:/path/to/sessions.db")]
    EmptyStore(String),
}

/// Why a config file may not be trusted, if it may not: writable by others, or owned by another
/// user (root excepted).
fn unsafe_config(path: &Path) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me && meta.uid() != 0 {
            return Some("belongs to another user");
        }
        if meta.mode() & 0o022 != 0 {
            return Some("is writable by others");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

/// A store named by a flag, a variable or the file: a URL, or a path (which need not be UTF-8).
fn store_location(given: PathBuf) -> Result<Location, ConfigError> {
    let location = match given.to_str() {
        Some(text) => Location::parse(text)?,
        None => Location::Sqlite(given.clone()),
    };
    if location.path().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(ConfigError::EmptyStore(given.to_string_lossy().into_owned()));
    }
    Ok(location)
}

/// The file's shape; every key is optional and documented in docs/configuration.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    store: Option<PathBuf>,
    graph_url: Option<String>,
    token_command: Option<String>,
    token_command_timeout: Option<String>,
    persistent_interval: Option<String>,
    non_persistent_interval: Option<String>,
    persistent_expiry: Option<String>,
    non_persistent_expiry: Option<String>,
    recreate: Option<bool>,
    concurrency: Option<usize>,
    request_budget: Option<u32>,
    request_timeout: Option<String>,
    keeper_lease: Option<String>,
    batch: Option<bool>,
    tenant: Option<String>,
    client_id: Option<String>,
    login_url: Option<String>,
    log_level: Option<String>,
    ui: Option<UiFile>,
}

/// The `[ui]` table: how the dashboard looks when it opens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UiFile {
    /// A column (`name`, `workbook`, `mode`, `status`, `last`, `next`, `expires`, `latency`,
    /// `failures`), `-` in front to reverse.
    sort: Option<String>,
    /// `relative` or `absolute`.
    times: Option<String>,
    /// `dark`, `light`, `solarized-dark` or `mono`.
    theme: Option<String>,
    /// Status word to colour: a name such as `green` or `lightred`, or `#rrggbb`.
    colors: Option<std::collections::BTreeMap<String, String>>,
}

/// The dashboard's colours as a whole, for the terminal's background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThemePreset {
    #[default]
    Dark,
    Light,
    SolarizedDark,
    /// No colours: words, bold and reverse video.
    Mono,
}

impl ThemePreset {
    pub const ALL: [ThemePreset; 4] =
        [ThemePreset::Dark, ThemePreset::Light, ThemePreset::SolarizedDark, ThemePreset::Mono];

    pub fn word(self) -> &'static str {
        match self {
            ThemePreset::Dark => "dark",
            ThemePreset::Light => "light",
            ThemePreset::SolarizedDark => "solarized-dark",
            ThemePreset::Mono => "mono",
        }
    }

    pub fn parse(word: &str) -> Option<ThemePreset> {
        ThemePreset::ALL.into_iter().find(|p| p.word() == word)
    }
}

/// How the dashboard looks when it opens; the sort it was left in wins over this one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UiSettings {
    pub sort: SortBy,
    pub reverse: bool,
    pub(crate) absolute_times: bool,
    pub theme: ThemePreset,
    /// Status to a colour name or `#rrggbb`, already checked.
    pub colors: Vec<(Status, String)>,
}

/// The colour names the dashboard knows.
const COLOR_NAMES: &[&str] = &[
    "black",
    "red",
    "green",
    "yellow",
    "blue",
    "magenta",
    "cyan",
    "gray",
    "darkgray",
    "lightred",
    "lightgreen",
    "lightyellow",
    "lightblue",
    "lightmagenta",
    "lightcyan",
    "white",
];

fn is_color(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    COLOR_NAMES.contains(&lower.as_str())
        || (lower.len() == 7 && lower.starts_with('#') && lower[1..].chars().all(|c| c.is_ascii_hexdigit()))
}

fn ui_settings(file: Option<UiFile>, invalid: &dyn Fn(String) -> ConfigError) -> Result<UiSettings, ConfigError> {
    let file = file.unwrap_or_default();
    let (reverse, word) = match file.sort.as_deref() {
        None => (false, "name"),
        Some(text) => match text.strip_prefix('-') {
            Some(word) => (true, word),
            None => (false, text),
        },
    };
    let sort = SortBy::parse(word).ok_or_else(|| {
        let words: Vec<&str> = SortBy::ALL.iter().map(|s| s.word()).collect();
        invalid(format!("[ui] sort {word:?} is not one of {}", words.join(", ")))
    })?;
    let absolute_times = match file.times.as_deref() {
        None | Some("relative") => false,
        Some("absolute") => true,
        Some(other) => return Err(invalid(format!("[ui] times {other:?} is neither relative nor absolute"))),
    };
    let theme = match file.theme.as_deref() {
        None => ThemePreset::default(),
        Some(word) => ThemePreset::parse(word).ok_or_else(|| {
            let words: Vec<&str> = ThemePreset::ALL.iter().map(|p| p.word()).collect();
            invalid(format!("[ui] theme {word:?} is not one of {}", words.join(", ")))
        })?,
    };
    let mut colors = Vec::new();
    for (status, color) in file.colors.unwrap_or_default() {
        let status = Status::parse(&status)
            .ok_or_else(|| invalid(format!("[ui.colors] {status:?} is not a status (ok, stale, expired, ...)")))?;
        if !is_color(&color) {
            return Err(invalid(format!(
                "[ui.colors] {color:?} is not a colour: use #rrggbb or one of {}",
                COLOR_NAMES.join(", ")
            )));
        }
        colors.push((status, color));
    }
    Ok(UiSettings { sort, reverse, absolute_times, theme, colors })
}

/// What the command line says: every field here has its flag or variable in `cli.rs`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub store: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub graph_url: Option<String>,
    pub token: Option<String>,
    pub(crate) token_command: Option<String>,
    pub no_color: bool,
    pub(crate) utc: bool,
    pub(crate) verbose: u8,
    pub(crate) quiet: bool,
    pub(crate) json: bool,
}

/// Where a sign-in goes, as the command line asks for it.
#[derive(Debug, Clone, Default)]
pub struct LoginOverrides {
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub login_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoginSettings {
    pub tenant: String,
    pub client_id: Option<String>,
    pub login_url: String,
    /// Whether the file named them (else they are defaults, and a cached sign-in's win).
    pub(crate) configured_tenant: bool,
    pub(crate) configured_login_url: bool,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub store: Location,
    pub graph_url: String,
    pub token: Option<String>,
    pub(crate) token_command: Option<String>,
    pub(crate) token_command_timeout: Duration,
    pub no_color: bool,
    /// Times in UTC rather than local time.
    pub(crate) utc: bool,
    /// No progress bars.
    pub(crate) quiet: bool,
    /// What a command prints on standard output is JSON (docs/configuration.md, "JSON").
    pub(crate) json: bool,
    /// Whether the store was named on the command line (a read-only use must not create it).
    pub(crate) store_named: bool,
    pub(crate) log_level: String,
    pub log_dir: PathBuf,
    /// The sign-in cache (mode 0600): the only file that holds tokens.
    pub(crate) token_cache: PathBuf,
    pub engine: EngineSettings,
    pub login: LoginSettings,
    pub(crate) ui: UiSettings,
    /// Where the dashboard keeps what it was left in (its sort), beside the logs.
    pub(crate) ui_state: PathBuf,
}

impl Settings {
    /// The state folder: the logs, the dashboard's state, the proxy's address and secret.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.ui_state.parent().map_or_else(|| self.log_dir.clone(), Path::to_path_buf)
    }
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "wbsessions")
}

/// Where the daily log files go (the state folder, else the data folder).
pub fn default_log_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.state_dir().unwrap_or(d.data_dir()).join("logs"))
}

/// A duration setting, held to the bounds its flag (if it has one) would hold it to.
fn parse_setting_duration(
    path: &Path,
    key: &str,
    value: Option<String>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let invalid =
        |message: String| ConfigError::Invalid { path: path.to_path_buf(), message: format!("{key}: {message}") };
    let Some(text) = value else { return Ok(default) };
    let value = parse_duration(&text).map_err(|e| invalid(e.to_string()))?;
    if value < min || value > max {
        return Err(invalid(format!("{text:?} is outside {} to {}", format_duration(min), format_duration(max))));
    }
    Ok(value)
}

/// A keeper's lease on its workbooks: long enough to ride out a slow turn, short enough that a
/// dead keeper's sessions are taken over well inside their idle expiry.
const LEASE_TIMES: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(60));

/// Refresh intervals and idle expiries: at least a second (anything faster hammers Graph), at
/// most a day.
const SESSION_TIMES: (Duration, Duration) = (MIN_INTERVAL, MAX_INTERVAL);

/// How long one call may take.
const CALL_TIMES: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));

impl Settings {
    pub fn load(args: &Overrides) -> Result<Settings, ConfigError> {
        let dirs = project_dirs();
        let config_file = match &args.config {
            Some(p) => Some(p.clone()),
            None => dirs.as_ref().map(|d| d.config_dir().join("config.toml")),
        };
        if let Some(path) = &config_file
            && let Some(why) = unsafe_config(path)
        {
            return Err(ConfigError::Unsafe { path: path.clone(), why });
        }
        let file = match &config_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError::Invalid { path: path.clone(), message: e.message().to_string() })?,
                // Only an explicitly named file must exist.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.config.is_none() => FileConfig::default(),
                Err(source) => return Err(ConfigError::Read { path: path.clone(), source }),
            },
            None => FileConfig::default(),
        };
        let path = config_file.clone().unwrap_or_default();
        let invalid = |message: String| ConfigError::Invalid { path: path.clone(), message };

        let named = args.store.clone().or(file.store).map(store_location).transpose()?;
        let data_dir = match &dirs {
            Some(d) => d.data_dir().to_path_buf(),
            None => named
                .as_ref()
                .and_then(Location::path)
                .and_then(|s| s.parent().map(Path::to_path_buf))
                .ok_or(ConfigError::NoHome("store"))?,
        };
        let store = named.unwrap_or_else(|| Location::Sqlite(data_dir.join("sessions.db")));
        let log_dir = default_log_dir().unwrap_or_else(|| data_dir.join("logs"));

        let defaults = EngineSettings::default();
        let d = &defaults.defaults;
        let duration = |key: &str, value: Option<String>, default: Duration, bounds| {
            parse_setting_duration(&path, key, value, default, bounds)
        };
        // How soon keepers take over from one that died or was cut off (PostgreSQL stores).
        let lease = duration("keeper_lease", file.keeper_lease, crate::store::postgres::DEFAULT_LEASE, LEASE_TIMES)?;
        let mut store = store;
        if let Location::Postgres(url) = &mut store {
            url.lease = lease;
        }
        let engine = EngineSettings {
            defaults: Defaults {
                persistent_interval: duration(
                    "persistent_interval",
                    file.persistent_interval,
                    d.persistent_interval,
                    SESSION_TIMES,
                )?,
                non_persistent_interval: duration(
                    "non_persistent_interval",
                    file.non_persistent_interval,
                    d.non_persistent_interval,
                    SESSION_TIMES,
                )?,
                persistent_expiry: duration(
                    "persistent_expiry",
                    file.persistent_expiry,
                    d.persistent_expiry,
                    SESSION_TIMES,
                )?,
                non_persistent_expiry: duration(
                    "non_persistent_expiry",
                    file.non_persistent_expiry,
                    d.non_persistent_expiry,
                    SESSION_TIMES,
                )?,
                recreate: file.recreate.unwrap_or(d.recreate),
            },
            concurrency: match file.concurrency {
                Some(n @ 1..=256) => n,
                Some(_) => return Err(invalid("concurrency must be 1 to 256".into())),
                None => defaults.concurrency,
            },
            request_budget: match file.request_budget {
                Some(n @ 1..=1_000_000) => n,
                Some(_) => {
                    return Err(invalid(
                        "request_budget must be 1 to 1000000 (Graph allows 1500 per 10 s per app and tenant)".into(),
                    ));
                }
                None => defaults.request_budget,
            },
            request_timeout: duration("request_timeout", file.request_timeout, defaults.request_timeout, CALL_TIMES)?,
            batch: file.batch.unwrap_or(defaults.batch),
        };
        let token_command_timeout = duration(
            "token_command_timeout",
            file.token_command_timeout,
            crate::auth::DEFAULT_COMMAND_TIMEOUT,
            CALL_TIMES,
        )?;
        let ui = ui_settings(file.ui, &invalid)?;
        let log_level = match file.log_level.as_deref() {
            None => "info".to_string(),
            Some(level @ ("error" | "warn" | "info" | "debug" | "trace")) => level.to_string(),
            Some(other) => {
                return Err(invalid(format!("log_level {other:?} is not one of error, warn, info, debug, trace")));
            }
        };
        let log_level = match args.verbose {
            0 => log_level,
            1 => "debug".into(),
            _ => "trace".into(),
        };
        // A newline from `$(cat file)` is forgiven; anything inside would be sent as it is and
        // come back as a sign-in failure on every session.
        let token = args.token.as_deref().map(str::trim).filter(|t| !t.is_empty());
        if token.is_some_and(|t| t.chars().any(|c| c.is_whitespace() || c.is_control())) {
            return Err(ConfigError::BadToken);
        }
        let token = token.map(str::to_string);
        Ok(Settings {
            store,
            graph_url: args.graph_url.clone().or(file.graph_url).unwrap_or_else(|| DEFAULT_GRAPH_URL.to_string()),
            token,
            token_command: args.token_command.clone().or(file.token_command).filter(|c| !c.trim().is_empty()),
            token_command_timeout,
            no_color: args.no_color,
            utc: args.utc,
            quiet: args.quiet,
            json: args.json,
            store_named: args.store.is_some(),
            log_level,
            log_dir: log_dir.clone(),
            token_cache: data_dir.join("token.json"),
            ui,
            ui_state: log_dir.parent().map_or_else(|| data_dir.join("ui.json"), |state| state.join("ui.json")),
            engine,
            login: LoginSettings {
                configured_tenant: file.tenant.is_some(),
                configured_login_url: file.login_url.is_some(),
                tenant: file.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_string()),
                client_id: file.client_id,
                login_url: file.login_url.unwrap_or_else(|| DEFAULT_LOGIN_URL.to_string()),
            },
        })
    }
}

impl Settings {
    /// Where a sign-in goes, resolved once for `login`, the dashboard and the demo: the command
    /// line, then the config file, then the sign-in cached last time. `None` without a client id.
    pub fn authority(&self, flags: &LoginOverrides) -> Option<Authority> {
        let cached = crate::auth::signin::load(&self.token_cache).ok().flatten().map(|c| c.authority);
        let client_id = flags
            .client_id
            .clone()
            .or_else(|| self.login.client_id.clone())
            .or_else(|| cached.as_ref().map(|a| a.client_id.clone()))
            .filter(|c| !c.trim().is_empty())?;
        // A cached sign-in for this same client keeps its tenant and sign-in URL unless told otherwise.
        let same = cached.filter(|a| a.client_id == client_id);
        Some(Authority {
            login_url: flags
                .login_url
                .clone()
                .or_else(|| self.login.configured_login_url.then(|| self.login.login_url.clone()))
                .or_else(|| same.as_ref().map(|a| a.login_url.clone()))
                .unwrap_or_else(|| self.login.login_url.clone()),
            tenant: flags
                .tenant
                .clone()
                .or_else(|| self.login.configured_tenant.then(|| self.login.tenant.clone()))
                .or_else(|| same.as_ref().map(|a| a.tenant.clone()))
                .unwrap_or_else(|| self.login.tenant.clone()),
            client_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &Path) -> Overrides {
        Overrides { config: Some(config.to_path_buf()), ..Overrides::default() }
    }

    /// A config file others may write could make this program run their command: refused, as
    /// ssh refuses such a file; once tightened it is read.
    #[cfg(unix)]
    #[test]
    fn a_config_file_writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "token_command = \"echo T\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        match Settings::load(&args(&file)) {
            Err(e @ ConfigError::Unsafe { .. }) => assert!(e.to_string().contains("writable by others"), "{e}"),
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Settings::load(&args(&file)).is_ok());
    }

    #[test]
    fn an_empty_store_path_is_refused_naming_it() {
        for given in ["sqlite:", "sqlite://"] {
            let overrides = Overrides { store: Some(PathBuf::from(given)), ..Overrides::default() };
            match Settings::load(&overrides) {
                Err(e @ ConfigError::EmptyStore(_)) => assert!(e.to_string().contains(given), "{e}"),
                other => panic!("{given}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_file_fills_what_flags_leave_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "graph_url = \"http://127.0.0.1:9/v1.0\"\npersistent_interval = \"90s\"\nconcurrency = 3\nstore = \"/tmp/x.db\"\n").unwrap();
        let mut a = args(&file);
        let s = Settings::load(&a).unwrap();
        assert_eq!(s.graph_url, "http://127.0.0.1:9/v1.0");
        assert_eq!(s.engine.defaults.persistent_interval, Duration::from_secs(90));
        assert_eq!(s.engine.defaults.non_persistent_interval, Duration::from_secs(300));
        assert_eq!(s.engine.concurrency, 3);
        assert_eq!(s.store, Location::Sqlite("/tmp/x.db".into()));
        a.store = Some("/tmp/flag.db".into());
        a.graph_url = Some("https://example.invalid/v1.0".into());
        let s = Settings::load(&a).unwrap();
        assert_eq!(s.store, Location::Sqlite("/tmp/flag.db".into()));
        assert_eq!(s.graph_url, "https://example.invalid/v1.0");
    }

    #[test]
    fn the_ui_table_sets_the_dashboards_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[ui]\nsort = \"-expires\"\ntimes = \"absolute\"\n[ui.colors]\nok = \"#00ff00\"\nstale = \"lightred\"\n",
        )
        .unwrap();
        let ui = Settings::load(&args(&file)).unwrap().ui;
        assert_eq!((ui.sort, ui.reverse, ui.absolute_times), (SortBy::Expires, true, true));
        assert_eq!(ui.colors, [(Status::Ok, "#00ff00".to_string()), (Status::Stale, "lightred".to_string())]);
    }

    #[test]
    fn a_bad_file_is_named_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        for bad in [
            "concurrency = \"many\"",
            "persistent_interval = \"soon\"",
            "colour = true",
            "[[[",
            // Held to the same bounds as the flags.
            "persistent_interval = \"1ms\"",
            "request_timeout = \"0s\"",
            "persistent_expiry = \"2d\"",
            "concurrency = 0",
            "token_command_timeout = \"10ms\"",
            "[ui]\nsort = \"colour\"",
            "[ui]\ntimes = \"soon\"",
            "[ui.colors]\nok = \"chartreuse-ish\"",
            "[ui.colors]\nhappy = \"green\"",
        ] {
            std::fs::write(&file, bad).unwrap();
            let err = Settings::load(&args(&file)).unwrap_err().to_string();
            assert!(err.contains("config.toml"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let missing = dir.path().join("missing.toml");
        assert!(matches!(Settings::load(&args(&missing)), Err(ConfigError::Read { .. })));
    }
}
