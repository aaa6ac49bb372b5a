//! Where access tokens come from: a fixed token, a command that prints one, or the sign-in cache.
//! Tokens are secrets: they are never logged, shown or stored outside the 0600 token cache.

mod flow;
pub mod signin;

pub use flow::SignInState;
pub(crate) use flow::{Authenticator, DeviceSignIn};
pub use signin::Progress;

/// Who a token says it belongs to, where it is a JWT that says so (a work or school account's
/// Graph token is; a personal account's is opaque): its `upn`, `preferred_username`,
/// `unique_name`, `oid` or `sub` claim, the first present. Nothing is verified: it names the
/// owner of sessions (docs/graph.md, "Owners"), it grants nothing.
pub(crate) fn token_subject(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).filter(|p| p.len() <= 64 * 1024)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    ["upn", "preferred_username", "unique_name", "oid", "sub"]
        .iter()
        .find_map(|claim| crate::text::clean_opt(claims.get(*claim)?.as_str(), 200))
}

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use signin::{CachedSignIn, SignIn, SignInError};

/// A token that does not print itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access token: set WBSESSIONS_TOKEN or --token-command, or run `wbsessions login`")]
    Missing,
    #[error("{0}")]
    Cache(String),
    #[error("the token command failed: {0}; fix the command given by --token-command")]
    Command(String),
    #[error("the sign-in has ended ({0}): run `wbsessions login`")]
    SignInRequired(String),
    #[error("cannot renew the token: {0}")]
    Renewal(String),
}

/// A command's token is used this long before it is asked for a new one.
pub(crate) const COMMAND_TOKEN_MAX_AGE: Duration = Duration::from_secs(50 * 60);

/// How long a token command may run unless configured otherwise.
pub(crate) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a token command may print: a token is a few kilobytes.
const MAX_COMMAND_OUTPUT: u64 = 64 * 1024;

enum Source {
    None,
    Static(Secret),
    Command { command: String, timeout: Duration, current: Mutex<Option<(Secret, Instant, u64)>> },
    Cache(CacheSource),
}

/// The sign-in cache as a token source: renews before expiry and once after a rejection.
struct CacheSource {
    path: PathBuf,
    state: std::sync::Mutex<CacheState>,
    /// One renewal at a time; the others wait and take its result.
    renewing: Mutex<()>,
}

#[derive(Default)]
struct CacheState {
    signin: Option<CachedSignIn>,
    generation: u64,
    /// Why the sign-in ended (`invalid_grant`, ...), until a new one is found.
    ended: Option<String>,
    /// Why the cache file cannot be used (unsafe permissions, damaged), until it can.
    problem: Option<String>,
}

/// What the dashboard and `whoami` show about the sign-in; never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInStatus {
    pub user: Option<String>,
    pub tenant: String,
    pub expires_at: DateTime<Utc>,
    pub(crate) ended: Option<String>,
}

/// A token as handed out, with the generation it belongs to (to renew once per rejection).
#[derive(Debug, Clone)]
pub struct Token {
    pub secret: Secret,
    pub(crate) generation: u64,
}

/// Shared by every task that calls Graph.
#[derive(Clone)]
pub struct Tokens {
    source: Arc<Source>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl Tokens {
    pub fn none() -> Self {
        Tokens { source: Arc::new(Source::None) }
    }

    pub fn fixed(token: &str) -> Self {
        Tokens { source: Arc::new(Source::Static(Secret::new(token.trim()))) }
    }

    pub fn command(command: &str, timeout: Duration) -> Self {
        Tokens {
            source: Arc::new(Source::Command { command: command.to_string(), timeout, current: Mutex::new(None) }),
        }
    }

    /// The sign-in cache at `path` (what `wbsessions login` wrote).
    pub fn cache(path: PathBuf) -> Self {
        let (signin, problem) = match signin::load(&path) {
            Ok(signin) => (signin, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let state = std::sync::Mutex::new(CacheState { signin, problem, ..CacheState::default() });
        Tokens { source: Arc::new(Source::Cache(CacheSource { path, state, renewing: Mutex::new(()) })) }
    }

    /// `--token` first, then `--token-command`, then the sign-in cache.
    pub(crate) fn from_settings(token: Option<&str>, command: Option<(&str, Duration)>, cache: PathBuf) -> Self {
        match (token, command) {
            (Some(t), _) => Tokens::fixed(t),
            (None, Some((c, timeout))) => Tokens::command(c, timeout),
            (None, None) => Tokens::cache(cache),
        }
    }

    /// Why the sign-in cache cannot be used, if it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        let Source::Cache(cache) = &*self.source else { return None };
        cache.state.lock().unwrap_or_else(|p| p.into_inner()).problem.clone()
    }

    /// Whether tokens come from the sign-in cache (so `login` is the way to get one).
    pub(crate) fn is_sign_in(&self) -> bool {
        matches!(&*self.source, Source::Cache(_))
    }

    /// Picks up a sign-in written to the cache since (by `login`, or the dashboard's sign-in).
    pub(crate) fn reload(&self) {
        if let Source::Cache(cache) = &*self.source {
            cache.reload_if_newer();
        }
    }

    /// The cached sign-in's state, when tokens come from the cache.
    pub fn status(&self) -> Option<SignInStatus> {
        let Source::Cache(cache) = &*self.source else { return None };
        let state = cache.state.lock().unwrap_or_else(|p| p.into_inner());
        let signin = state.signin.as_ref()?;
        Some(SignInStatus {
            user: signin.user.clone(),
            tenant: signin.authority.tenant.clone(),
            expires_at: signin.expires_at,
            ended: state.ended.clone(),
        })
    }

    pub(crate) fn describe(&self) -> &'static str {
        match &*self.source {
            Source::None => "no token",
            Source::Static(_) => "fixed token",
            Source::Command { .. } => "token command",
            Source::Cache(_) => "signed in",
        }
    }

    /// Whether this source can give a token at all (a cache only once someone signed in).
    pub(crate) fn is_configured(&self) -> bool {
        match &*self.source {
            Source::None => false,
            Source::Cache(cache) => {
                cache.reload_if_newer() || cache.state.lock().unwrap_or_else(|p| p.into_inner()).signin.is_some()
            }
            _ => true,
        }
    }

    /// A token to use now.
    pub async fn get(&self) -> Result<Token, AuthError> {
        match &*self.source {
            Source::None => Err(AuthError::Missing),
            Source::Static(secret) => Ok(Token { secret: secret.clone(), generation: 0 }),
            Source::Command { command, timeout, current } => {
                let mut current = current.lock().await;
                if let Some((secret, at, generation)) = &*current
                    && at.elapsed() < COMMAND_TOKEN_MAX_AGE
                {
                    return Ok(Token { secret: secret.clone(), generation: *generation });
                }
                let generation = current.as_ref().map_or(1, |(_, _, g)| g + 1);
                let secret = run_token_command(command, *timeout).await?;
                *current = Some((secret.clone(), Instant::now(), generation));
                Ok(Token { secret, generation })
            }
            Source::Cache(cache) => cache.get().await,
        }
    }

    /// Graph refused `rejected`: get a new token, unless another task already did since.
    /// Returns `None` when this source cannot produce a different token.
    pub(crate) async fn renew_after_rejection(&self, rejected: &Token) -> Result<Option<Token>, AuthError> {
        match &*self.source {
            Source::None | Source::Static(_) => Ok(None),
            Source::Command { command, timeout, current } => {
                let mut current = current.lock().await;
                if let Some((secret, _, generation)) = &*current
                    && *generation > rejected.generation
                {
                    return Ok(Some(Token { secret: secret.clone(), generation: *generation }));
                }
                let secret = run_token_command(command, *timeout).await?;
                let generation = rejected.generation + 1;
                *current = Some((secret.clone(), Instant::now(), generation));
                Ok(Some(Token { secret, generation }))
            }
            Source::Cache(cache) => cache.renew(rejected.generation).await.map(Some),
        }
    }
}

impl CacheSource {
    fn snapshot(&self) -> (Option<CachedSignIn>, u64, Option<String>) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.signin.clone(), state.generation, state.ended.clone())
    }

    /// Adopts the file if another process (a `login`, another keeper's renewal) wrote a newer
    /// sign-in. Returns whether it did.
    fn reload_if_newer(&self) -> bool {
        let on_disk = match signin::load(&self.path) {
            Ok(Some(on_disk)) => on_disk,
            Ok(None) => {
                self.state.lock().unwrap_or_else(|p| p.into_inner()).problem = None;
                return false;
            }
            Err(e) => {
                // An unsafe or damaged cache is not used, not even what was read from it before.
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.problem = Some(e.to_string());
                state.signin = None;
                return false;
            }
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.problem = None;
        let newer = state.signin.as_ref().is_none_or(|mine| on_disk.obtained_at > mine.obtained_at);
        if newer {
            state.signin = Some(on_disk);
            state.generation += 1;
            state.ended = None;
        }
        newer
    }

    async fn get(&self) -> Result<Token, AuthError> {
        let (signin, generation, ended) = self.snapshot();
        let Some(signin) = signin.filter(|_| ended.is_none()) else {
            if self.reload_if_newer() {
                return Box::pin(self.get()).await;
            }
            let problem = self.state.lock().unwrap_or_else(|p| p.into_inner()).problem.clone();
            return Err(match (ended, problem) {
                (_, Some(problem)) => AuthError::Cache(problem),
                (Some(why), None) => AuthError::SignInRequired(why),
                (None, None) => AuthError::Missing,
            });
        };
        if Utc::now() < signin.renew_at() {
            return Ok(Token { secret: signin.access_token(), generation });
        }
        self.renew(generation).await
    }

    async fn renew(&self, seen: u64) -> Result<Token, AuthError> {
        let _one_at_a_time = self.renewing.lock().await;
        self.reload_if_newer();
        let (signin, generation, ended) = self.snapshot();
        let Some(current) = signin else { return Err(AuthError::Missing) };
        if let Some(why) = ended {
            return Err(AuthError::SignInRequired(why));
        }
        // Another task (or process) renewed while this one waited.
        if generation > seen && Utc::now() < current.renew_at() {
            return Ok(Token { secret: current.access_token(), generation });
        }
        let client = SignIn::new(current.authority.clone())?;
        match client.renew(&current).await {
            Ok(renewed) => {
                if let Err(e) = signin::save(&self.path, &renewed) {
                    tracing::warn!(error = %e, "the renewed token could not be cached; it is used from memory");
                }
                tracing::info!(expires_at = %renewed.expires_at.to_rfc3339(), "renewed the access token");
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.generation += 1;
                let token = Token { secret: renewed.access_token(), generation: state.generation };
                state.signin = Some(renewed);
                Ok(token)
            }
            Err(SignInError::SignInRequired(why)) => {
                tracing::warn!(reason = %why, "the sign-in has ended; `wbsessions login` is needed");
                self.state.lock().unwrap_or_else(|p| p.into_inner()).ended = Some(why.clone());
                Err(AuthError::SignInRequired(why))
            }
            Err(e) if Utc::now() < current.expires_at => {
                // The old token still works for a while; try again on the next call.
                tracing::warn!(error = %e, "renewing the access token failed; the current one is still valid");
                Ok(Token { secret: current.access_token(), generation })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Kills a command's process group when dropped, unless it has ended.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: signal 0 to the group asks only whether it still has members; SIGKILL to a
            // negative pid ends the group the command was started in.
            unsafe {
                if libc::kill(-pid, 0) == 0 {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Runs the token command with a deadline: on expiry it is killed (with everything it started)
/// and the call fails with a clear error instead of hanging.
async fn run_token_command(command: &str, timeout: Duration) -> Result<Secret, AuthError> {
    use tokio::io::AsyncReadExt;
    let mut shell = shell(command);
    shell
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    shell.process_group(0);
    // It dies with this process, however this one ends.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl only sets a flag of the child process between fork and exec.
    unsafe {
        shell.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = shell.spawn().map_err(|e| AuthError::Command(format!("cannot run it: {e}")))?;
    let group = child.id();
    // Ended early (a signal, a shutdown): everything the command started goes with it.
    let _group_guard = GroupGuard(group);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let work = async {
        // Standard error is read once the command has ended: a flood on standard output must not
        // wait on it.
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(MAX_COMMAND_OUTPUT + 1).read_to_end(&mut out).await;
        }
        if out.len() as u64 > MAX_COMMAND_OUTPUT {
            return None;
        }
        let status = child.wait().await.ok();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(4096).read_to_end(&mut err).await;
        }
        status
    };
    let finished = tokio::time::timeout(timeout, work).await;
    let kill_group = || {
        #[cfg(unix)]
        if let Some(pid) = group.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill has no memory preconditions; a negative pid names the process group
            // the command was started in, so its children go too.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    };
    let status = match finished {
        Err(_) => {
            kill_group();
            return Err(AuthError::Command(format!(
                "it did not finish within {} and was stopped (token_command_timeout in config.toml sets the limit)",
                crate::time::format_duration(timeout)
            )));
        }
        Ok(None) => {
            kill_group();
            return Err(AuthError::Command(format!("it printed more than {} KiB", MAX_COMMAND_OUTPUT / 1024)));
        }
        Ok(Some(status)) => status,
    };
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err);
        let first = crate::text::clean(stderr.lines().next().unwrap_or("").trim(), 200);
        return Err(AuthError::Command(format!(
            "it exited with {status}{}",
            if first.is_empty() { String::new() } else { format!(": {first}") }
        )));
    }
    let token = String::from_utf8(out).map_err(|_| AuthError::Command("its output is not text".into()))?;
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) || token.chars().any(char::is_control) {
        return Err(AuthError::Command("it printed no single token".into()));
    }
    tracing::info!("obtained a token from the token command");
    Ok(Secret::new(token))
}

fn shell(command: &str) -> tokio::process::Command {
    if cfg!(windows) {
        let mut c = tokio::process::Command::new("cmd");
        c.arg("/C").arg(command);
        c
    } else {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(command);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::token_subject;

    #[test]
    fn a_jwt_names_its_user_and_anything_else_names_nobody() {
        use base64::Engine as _;
        let part = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let jwt = |claims: &str| format!("{}.{}.sig", part(r#"{"alg":"none"}"#), part(claims));
        assert_eq!(
            token_subject(&jwt(r#"{"upn":"ada@contoso.example","oid":"1"}"#)).as_deref(),
            Some("ada@contoso.example")
        );
        assert_eq!(token_subject(&jwt(r#"{"oid":"0000-1111","sub":"x"}"#)).as_deref(), Some("0000-1111"));
        assert_eq!(
            token_subject(&jwt(r#"{"upn":"evil\u001b[2J@x"}"#)).as_deref().map(|s| s.contains('\u{1b}')),
            Some(false)
        );
        for opaque in ["t", "EwB4A8l6BAAU...", "a.b.c", "a.!!!.c", &jwt("[1,2]"), &jwt(r#"{"upn":7}"#)] {
            assert_eq!(token_subject(opaque), None, "{opaque}");
        }
    }

    use super::*;

    #[tokio::test]
    async fn a_command_token_is_cached_and_renewed_once_per_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        let command =
            format!("n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; echo tok$n", counter.display());
        let tokens = Tokens::command(&command, DEFAULT_COMMAND_TIMEOUT);
        let first = tokens.get().await.unwrap();
        assert_eq!(first.secret.expose(), "tok1");
        assert_eq!(tokens.get().await.unwrap().secret.expose(), "tok1", "cached");
        let renewed = tokens.renew_after_rejection(&first).await.unwrap().unwrap();
        assert_eq!(renewed.secret.expose(), "tok2");
        // A second task rejected with the old token gets the already renewed one.
        let again = tokens.renew_after_rejection(&first).await.unwrap().unwrap();
        assert_eq!(again.secret.expose(), "tok2");
    }

    #[tokio::test]
    async fn failing_commands_and_missing_tokens_say_what_to_do() {
        let err = Tokens::command("echo nope >&2; exit 3", DEFAULT_COMMAND_TIMEOUT).get().await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(Tokens::command("true", DEFAULT_COMMAND_TIMEOUT).get().await.is_err());
        let flood = Tokens::command("yes", DEFAULT_COMMAND_TIMEOUT).get().await.unwrap_err();
        assert!(flood.to_string().contains("KiB"), "{flood}");
        assert!(Tokens::none().get().await.unwrap_err().to_string().contains("wbsessions login"));
        assert_eq!(format!("{:?}", Secret::new("abc")), "Secret(..)");
    }

    #[tokio::test]
    async fn a_hanging_token_command_is_stopped_at_its_deadline() {
        let command = "sleep 1000";
        let started = std::time::Instant::now();
        let err = Tokens::command(command, Duration::from_millis(300)).get().await.unwrap_err();
        assert!(err.to_string().contains("did not finish within 300ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
