//! Settings: flags > environment > config.toml > defaults. Paths come from `directories`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::GlobalArgs;
use crate::graph::DEFAULT_GRAPH_URL;
use crate::time::parse_duration;

pub const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_TENANT: &str = "organizations";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {path} is not valid: {message}; fix it or see docs/configuration.md")]
    Invalid { path: PathBuf, message: String },
    #[error("no home directory is known, so there is no default {0}; pass --{0} PATH")]
    NoHome(&'static str),
}

/// The file's shape; every key is optional and documented in docs/configuration.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    store: Option<PathBuf>,
    graph_url: Option<String>,
    token_command: Option<String>,
    persistent_interval: Option<String>,
    non_persistent_interval: Option<String>,
    recreate: Option<bool>,
    concurrency: Option<usize>,
    request_budget: Option<u32>,
    request_timeout: Option<String>,
    tenant: Option<String>,
    client_id: Option<String>,
    login_url: Option<String>,
    log_level: Option<String>,
}

/// How the engine schedules and limits its calls.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    pub persistent_interval: Duration,
    pub non_persistent_interval: Duration,
    /// Default for new sessions: recreate on expiry.
    pub recreate: bool,
    pub concurrency: usize,
    /// Requests per 10 s, across all sessions.
    pub request_budget: u32,
    pub request_timeout: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            persistent_interval: Duration::from_secs(4 * 60),
            non_persistent_interval: Duration::from_secs(5 * 60),
            recreate: false,
            concurrency: 8,
            request_budget: 1000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoginSettings {
    pub tenant: String,
    pub client_id: Option<String>,
    pub login_url: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub store: PathBuf,
    pub config_file: Option<PathBuf>,
    pub graph_url: String,
    pub token: Option<String>,
    pub token_command: Option<String>,
    pub no_color: bool,
    pub log_level: String,
    pub log_dir: PathBuf,
    pub data_dir: PathBuf,
    /// The sign-in cache (mode 0600): the only file that holds tokens.
    pub token_cache: PathBuf,
    pub engine: EngineSettings,
    pub login: LoginSettings,
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "wbsessions")
}

fn parse_setting_duration(
    path: &Path,
    key: &str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(&text)
            .map_err(|e| ConfigError::Invalid { path: path.to_path_buf(), message: format!("{key}: {e}") }),
    }
}

impl Settings {
    pub fn load(args: &GlobalArgs) -> Result<Settings, ConfigError> {
        let dirs = project_dirs();
        let config_file = match &args.config {
            Some(p) => Some(p.clone()),
            None => dirs.as_ref().map(|d| d.config_dir().join("config.toml")),
        };
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

        let data_dir = match &dirs {
            Some(d) => d.data_dir().to_path_buf(),
            None => args
                .store
                .as_ref()
                .and_then(|s| s.parent().map(Path::to_path_buf))
                .ok_or(ConfigError::NoHome("store"))?,
        };
        let store = match args.store.clone().or(file.store) {
            Some(s) => s,
            None => data_dir.join("sessions.db"),
        };
        let log_dir = dirs
            .as_ref()
            .map(|d| d.state_dir().unwrap_or(d.data_dir()).join("logs"))
            .unwrap_or_else(|| data_dir.join("logs"));

        let defaults = EngineSettings::default();
        let engine = EngineSettings {
            persistent_interval: parse_setting_duration(
                &path,
                "persistent_interval",
                file.persistent_interval,
                defaults.persistent_interval,
            )?,
            non_persistent_interval: parse_setting_duration(
                &path,
                "non_persistent_interval",
                file.non_persistent_interval,
                defaults.non_persistent_interval,
            )?,
            recreate: file.recreate.unwrap_or(defaults.recreate),
            concurrency: match file.concurrency {
                Some(0) => return Err(invalid("concurrency must be at least 1".into())),
                Some(n) => n,
                None => defaults.concurrency,
            },
            request_budget: match file.request_budget {
                Some(0) => return Err(invalid("request_budget must be at least 1".into())),
                Some(n) => n,
                None => defaults.request_budget,
            },
            request_timeout: parse_setting_duration(
                &path,
                "request_timeout",
                file.request_timeout,
                defaults.request_timeout,
            )?,
        };
        if engine.persistent_interval.is_zero() || engine.non_persistent_interval.is_zero() {
            return Err(invalid("refresh intervals must be longer than zero".into()));
        }
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
        Ok(Settings {
            store,
            config_file,
            graph_url: args.graph_url.clone().or(file.graph_url).unwrap_or_else(|| DEFAULT_GRAPH_URL.to_string()),
            token: args.token.clone().filter(|t| !t.trim().is_empty()),
            token_command: args.token_command.clone().or(file.token_command).filter(|c| !c.trim().is_empty()),
            no_color: args.no_color,
            log_level,
            log_dir,
            token_cache: data_dir.join("token.json"),
            data_dir,
            engine,
            login: LoginSettings {
                tenant: file.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_string()),
                client_id: file.client_id,
                login_url: file.login_url.unwrap_or_else(|| DEFAULT_LOGIN_URL.to_string()),
            },
        })
    }
}

impl EngineSettings {
    /// The interval a session uses when it has none of its own.
    pub fn default_interval(&self, mode: crate::session::Mode) -> Duration {
        match mode {
            crate::session::Mode::Persistent => self.persistent_interval,
            crate::session::Mode::NonPersistent => self.non_persistent_interval,
        }
    }

    /// The interval a session refreshes at: its own, or the default for its mode.
    pub fn interval_of(&self, session: &crate::session::TrackedSession) -> Duration {
        session.interval.unwrap_or_else(|| self.default_interval(session.mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &Path) -> GlobalArgs {
        GlobalArgs {
            store: None,
            config: Some(config.to_path_buf()),
            graph_url: None,
            token: None,
            token_command: None,
            no_color: false,
            verbose: 0,
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
        assert_eq!(s.engine.persistent_interval, Duration::from_secs(90));
        assert_eq!(s.engine.non_persistent_interval, Duration::from_secs(300));
        assert_eq!(s.engine.concurrency, 3);
        assert_eq!(s.store, PathBuf::from("/tmp/x.db"));
        a.store = Some("/tmp/flag.db".into());
        a.graph_url = Some("https://example.invalid/v1.0".into());
        let s = Settings::load(&a).unwrap();
        assert_eq!(s.store, PathBuf::from("/tmp/flag.db"));
        assert_eq!(s.graph_url, "https://example.invalid/v1.0");
    }

    #[test]
    fn a_bad_file_is_named_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        for bad in ["concurrency = \"many\"", "persistent_interval = \"soon\"", "colour = true", "[[["] {
            std::fs::write(&file, bad).unwrap();
            let err = Settings::load(&args(&file)).unwrap_err().to_string();
            assert!(err.contains("config.toml"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let missing = dir.path().join("missing.toml");
        assert!(matches!(Settings::load(&args(&missing)), Err(ConfigError::Read { .. })));
    }
}
