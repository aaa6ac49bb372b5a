//! Every flag and environment variable, declared once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;
use crate::time::parse_duration;

/// no-color.org: present and not empty means no colour, whatever the value.
pub const NO_COLOR: &str = "NO_COLOR";

/// Set by the shell's completion script when it asks this program for candidates.
pub const COMPLETE_VAR: &str = "WBSESSIONS_COMPLETE";

/// Session names for the shell's completion, from the store the environment or the config file
/// names; nothing (never an error) when there is none.
fn session_names(current: &std::ffi::OsStr) -> Vec<clap_complete::engine::CompletionCandidate> {
    let Some(prefix) = current.to_str() else { return Vec::new() };
    let overrides = Overrides {
        store: store_being_typed().or_else(|| std::env::var_os("WBSESSIONS_STORE").map(PathBuf::from)),
        config: std::env::var_os("WBSESSIONS_CONFIG").map(PathBuf::from),
        ..Overrides::default()
    };
    let Ok(settings) = crate::config::Settings::load(&overrides) else { return Vec::new() };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return Vec::new() };
    let names = runtime.block_on(async {
        let Ok(opened) = crate::store::open(&settings.store, crate::store::Access::Peek) else { return Vec::new() };
        let names = opened.sessions.names().await.unwrap_or_default();
        opened.sessions.close().await;
        names
    });
    names
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .map(clap_complete::engine::CompletionCandidate::new)
        .collect()
}

/// The `--store` on the command line being completed, if it names one: the names come from the
/// store the command will use.
fn store_being_typed() -> Option<PathBuf> {
    let mut words = std::env::args_os().skip_while(|w| w != "--").skip(1);
    let mut store = None;
    while let Some(word) = words.next() {
        if word == "--store" {
            store = words.next().map(PathBuf::from);
        } else if let Some(value) = word.to_str().and_then(|w| w.strip_prefix("--store=")) {
            store = Some(PathBuf::from(value));
        }
    }
    store
}

fn names_completer() -> clap_complete::engine::ArgValueCompleter {
    clap_complete::engine::ArgValueCompleter::new(session_names)
}

impl GlobalArgs {
    pub(crate) fn overrides(&self) -> Overrides {
        let no_color_env = std::env::var_os(NO_COLOR).is_some_and(|v| !v.is_empty());
        Overrides {
            store: self.store.clone(),
            config: self.config.clone(),
            graph_url: self.graph_url.clone(),
            token: self.token.clone(),
            token_command: self.token_command.clone(),
            no_color: self.no_color || no_color_env,
            utc: self.utc,
            verbose: self.verbose,
            quiet: self.quiet,
            json: self.json,
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "wbsessions", version, about = "Keeps Microsoft Graph Excel workbook sessions alive", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(flatten)]
    pub dashboard: DashboardArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalArgs {
    /// The session store: a file (SQLite), sqlite:PATH, or postgres://USER@HOST/DB
    #[arg(long, global = true, help_heading = "Global options", env = "WBSESSIONS_STORE", value_name = "PATH|URL")]
    pub store: Option<PathBuf>,
    /// The config file
    #[arg(long, global = true, help_heading = "Global options", env = "WBSESSIONS_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The Graph endpoint [default: https://graph.microsoft.com/v1.0]
    #[arg(long, global = true, help_heading = "Global options", env = "WBSESSIONS_GRAPH_URL", value_name = "URL")]
    pub graph_url: Option<String>,
    /// A command whose standard output is an access token; run again when the token is refused or 50 minutes old
    #[arg(long, global = true, help_heading = "Global options", env = "WBSESSIONS_TOKEN_COMMAND", value_name = "CMD")]
    pub(crate) token_command: Option<String>,
    /// An access token to use as it is; `-` reads it from standard input (prefer WBSESSIONS_TOKEN or
    /// --token-command: a token on the command line is visible to every local user)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WBSESSIONS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// No colours (status words stay); also when NO_COLOR is set to anything but empty
    #[arg(long, global = true, help_heading = "Global options")]
    pub no_color: bool,
    /// Times in UTC instead of local time
    #[arg(long, global = true, help_heading = "Global options")]
    pub(crate) utc: bool,
    /// More detail in the log file (-v debug, -vv trace)
    #[arg(short, long, global = true, help_heading = "Global options", action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// No progress bars (summaries and errors are still said)
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub(crate) quiet: bool,
    /// Standard output as JSON: sessions and outcomes with status words, RFC 3339 UTC times and
    /// durations in seconds (errors stay one line on stderr)
    #[arg(long, global = true, help_heading = "Global options")]
    pub(crate) json: bool,
}

// Usage lines are written out where clap's own would list the global options that the
// environment set (WBSESSIONS_STORE, ...) as if they were required.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The dashboard against the embedded simulator, with sample sessions (a throwaway store unless --store is given)
    Demo,
    /// Track a session that already exists
    #[command(override_usage = "wbsessions add [OPTIONS] <NAME> --workbook <REF> --session-id <ID>")]
    Add(AddArgs),
    /// Create a new session and track it
    #[command(override_usage = "wbsessions create [OPTIONS] <NAME> --workbook <REF>")]
    Create(CreateArgs),
    /// List the tracked sessions
    List,
    /// The processes keeping the store's sessions alive, and how many workbooks each keeps
    Keepers,
    /// One session in detail, with its recent outcomes
    #[command(override_usage = "wbsessions show [OPTIONS] <NAME>")]
    Show(ShowArgs),
    /// Print a session's id (for scripts); exits 1 unless the session is known to be alive
    #[command(override_usage = "wbsessions id [OPTIONS] <NAME>")]
    Id(IdArgs),
    /// Refresh sessions now
    #[command(override_usage = "wbsessions refresh [OPTIONS] <NAMES>... | --all")]
    Refresh(RefreshArgs),
    /// Close sessions at Graph (they stay listed, marked closed)
    #[command(override_usage = "wbsessions close [OPTIONS] <NAMES>...")]
    Close(NamesArg),
    /// Stop tracking sessions (they are not closed)
    #[command(override_usage = "wbsessions remove [OPTIONS] <NAMES>...")]
    Remove(NamesArg),
    /// Change how a session is kept (the dashboard's `e`)
    #[command(override_usage = "wbsessions edit [OPTIONS] <NAME>")]
    Edit(EditArgs),
    /// A new session on the same workbook and mode, replacing the id
    #[command(override_usage = "wbsessions recreate [OPTIONS] <NAMES>...")]
    Recreate(NamesArg),
    /// Run a command with a live session's id (and optionally a token) in its environment
    #[command(override_usage = "wbsessions exec [OPTIONS] <NAME> -- <CMD>...")]
    Exec(ExecArgs),
    /// Track many sessions at once, from JSON lines (as `list --json` writes) or CSV
    #[command(override_usage = "wbsessions import [OPTIONS] <FILE|->")]
    Import(ImportArgs),
    /// Keep every session alive without a dashboard; one line per outcome
    Run(RunArgs),
    /// A local Graph endpoint for scripts: it adds the tracked session and the token to their workbook calls
    Proxy(ProxyArgs),
    /// Sign in with the device code flow
    Login(LoginArgs),
    /// Forget the cached sign-in
    Logout,
    /// Who is signed in, and until when
    Whoami,
    /// The Graph simulator on its own
    Sim(SimArgs),
    /// Shell completions, session names included: `source <(wbsessions completions bash)`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// If another process drives the store, wait for it to go and then drive (for a service manager)
    #[arg(long)]
    pub wait: bool,
    /// Also serve the local Graph proxy for scripts, on this keeper's engine
    #[arg(long)]
    pub proxy: bool,
    #[command(flatten)]
    pub proxy_options: ProxyOptions,
}

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub serve: ProxyOptions,
    /// Print `export` lines for the running proxy's URL and secret, for `eval`, and exit
    #[arg(long)]
    pub print_env: bool,
}

/// What only the dashboard (no subcommand) takes.
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Also serve the local Graph proxy for scripts, on the dashboard's engine (its calls a minute in the header)
    #[arg(long)]
    pub proxy: bool,
    #[command(flatten)]
    pub proxy_options: ProxyOptions,
}

/// How the proxy serves, wherever it runs (`proxy`, `run --proxy`, the dashboard's `--proxy`).
#[derive(Debug, Clone, Args)]
pub struct ProxyOptions {
    /// Where the proxy listens: a loopback address and port (port 0 picks a free one)
    #[arg(long, value_name = "ADDR", env = "WBSESSIONS_PROXY_LISTEN", default_value = crate::proxy::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The largest request or answer body one proxied call may carry, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = crate::proxy::DEFAULT_MAX_BODY)]
    pub max_body: u64,
    /// A workbook call with no tracked session to use gets a new one (persistent, recreated on expiry), tracked as proxy-ITEM
    #[arg(long)]
    pub create: bool,
    /// The sessions --create makes are non-persistent
    #[arg(long, requires = "create")]
    pub non_persistent: bool,
    /// Track the sessions callers create with createSession (as proxy-ITEM), and mark those they close closed
    #[arg(long)]
    pub track: bool,
}

#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    #[arg(add = names_completer())]
    pub name: String,
    /// Print the id whatever the session's status
    #[arg(long)]
    pub any: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    #[arg(add = names_completer())]
    pub name: String,
    /// Refresh every DUR
    #[arg(long, value_name = "DUR", value_parser = parse_duration, conflicts_with = "default_interval")]
    pub interval: Option<Duration>,
    /// Follow the default interval for the session's mode again
    #[arg(long)]
    pub(crate) default_interval: bool,
    /// Create a new session when this one expires
    #[arg(long, overrides_with = "no_recreate")]
    pub recreate: bool,
    /// Let the session end when it expires
    #[arg(long, overrides_with = "recreate")]
    pub(crate) no_recreate: bool,
    /// Refresh on schedule
    #[arg(long, overrides_with = "no_auto")]
    pub auto: bool,
    /// Refresh only when asked
    #[arg(long, overrides_with = "auto")]
    pub(crate) no_auto: bool,
    /// A new name
    #[arg(long, value_name = "NEW")]
    pub rename: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    #[arg(add = names_completer())]
    pub name: String,
    /// Also export the current access token as WBSESSIONS_ACCESS_TOKEN
    #[arg(long, conflicts_with = "proxy")]
    pub(crate) export_token: bool,
    /// Point the command at the running proxy instead (WBSESSIONS_GRAPH_URL, WBSESSIONS_PROXY_TOKEN)
    #[arg(long)]
    pub(crate) proxy: bool,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The file, or `-` for standard input
    pub file: PathBuf,
    /// Import the valid lines and report the others, instead of importing nothing
    #[arg(long)]
    pub(crate) skip_invalid: bool,
}

#[derive(Debug, Clone, Args)]
pub struct NamesArg {
    #[arg(required = true, add = names_completer())]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    #[arg(add = names_completer())]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct RefreshArgs {
    #[arg(required_unless_present = "all", conflicts_with = "all", add = names_completer())]
    pub names: Vec<String>,
    /// Every tracked session that is not closed
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct SessionOptions {
    /// The workbook: me/drive/items/ID, drives/D/items/I, sites/S/drive/items/I, /me/drive/root:/path.xlsx:
    #[arg(long, value_name = "REF")]
    pub workbook: String,
    /// Changes are discarded when the session ends (expires after 7 minutes instead of 5)
    #[arg(long)]
    pub(crate) non_persistent: bool,
    /// Refresh every DUR instead of the default for the mode
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Create a new session when this one expires
    #[arg(long)]
    pub recreate: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    pub name: String,
    #[command(flatten)]
    pub(crate) options: SessionOptions,
    /// The id createSession returned
    #[arg(long, value_name = "ID")]
    pub session_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    pub name: String,
    #[command(flatten)]
    pub(crate) options: SessionOptions,
}

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Directory tenant: organizations, or a tenant id or domain [default: organizations]
    #[arg(long)]
    pub tenant: Option<String>,
    /// The application (client) id of your app registration
    #[arg(long)]
    pub client_id: Option<String>,
    /// The sign-in authority [default: https://login.microsoftonline.com]
    #[arg(long, value_name = "URL")]
    pub login_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Idle expiry of persistent sessions
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = parse_duration)]
    pub persistent_expiry: Duration,
    /// Idle expiry of non-persistent sessions
    #[arg(long, value_name = "DUR", default_value = "7m", value_parser = parse_duration)]
    pub non_persistent_expiry: Duration,
    /// The accepted bearer token (without it any non-empty bearer is accepted)
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// A workbook by item id, optionally with its path under the drive root; repeatable
    #[arg(long, value_name = "ID[=PATH]")]
    pub workbook: Vec<String>,
    /// createSession with `Prefer: respond-async` answers 202 and finishes after DUR
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub async_create: Option<Duration>,
    /// Share of requests answered 429 with a fractional Retry-After
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub throttle_rate: f64,
    /// Share of requests answered 500
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Added latency: DUR or MIN..MAX
    #[arg(long, value_name = "DUR|MIN..MAX", value_parser = parse_latency)]
    pub latency: Option<(Duration, Duration)>,
    /// Requests per 10 s before Excel-style throttling
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// A workbook whose session calls always fail; repeatable
    #[arg(long, value_name = "ID")]
    pub(crate) failing_workbook: Vec<String>,
    /// A workbook whose sessions die at once (invalidSessionUnsupportedWorkbook); repeatable
    #[arg(long, value_name = "ID")]
    pub(crate) unsupported_workbook: Vec<String>,
    /// Device-code sign-ins are approved after DUR
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = parse_duration)]
    pub approve_after: Duration,
    /// Lifetime of the access tokens it issues
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = parse_duration)]
    pub token_lifetime: Duration,
    /// Seed for the fault injection's random choices
    #[arg(long)]
    pub seed: Option<u64>,
    /// How $batch treats each request's session header: honoured, ignored (refreshes in a batch
    /// keep nothing alive) or missing (no $batch at all)
    #[arg(long, value_name = "MODE", value_enum, default_value_t = SimBatchArg::Honoured)]
    pub batch: SimBatchArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimBatchArg {
    Honoured,
    Ignored,
    Missing,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{text:?} is not a share between 0 and 1 (e.g. 0.05)")),
    }
}

fn parse_latency(text: &str) -> Result<(Duration, Duration), String> {
    let (min, max) = text.split_once("..").unwrap_or((text, text));
    let min = parse_duration(min).map_err(|e| e.to_string())?;
    let max = parse_duration(max).map_err(|e| e.to_string())?;
    if max < min {
        return Err(format!("{text:?}: the upper bound is below the lower one"));
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sim_flags_parse() {
        let cli = Cli::try_parse_from([
            "wbsessions",
            "sim",
            "--workbook",
            "W1",
            "--workbook",
            "W2=Reports/Q1.xlsx",
            "--persistent-expiry",
            "2s",
            "--latency",
            "5ms..20ms",
            "--throttle-rate",
            "0.1",
        ])
        .unwrap();
        let Some(Command::Sim(args)) = cli.command else { panic!("not sim") };
        assert_eq!(args.workbook, ["W1", "W2=Reports/Q1.xlsx"]);
        assert_eq!(args.persistent_expiry, Duration::from_secs(2));
        assert_eq!(args.latency, Some((Duration::from_millis(5), Duration::from_millis(20))));
        assert!(Cli::try_parse_from(["wbsessions", "sim", "--throttle-rate", "2"]).is_err());
        assert!(Cli::try_parse_from(["wbsessions", "sim", "--latency", "9ms..1ms"]).is_err());
    }
}
