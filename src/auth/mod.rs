//! Where access tokens come from: a fixed token, a command that prints one, or the sign-in cache.
//! Tokens are secrets: they are never logged, shown or stored outside the 0600 token cache.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

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
    #[error("no access token: pass --token or --token-command, or run `wbsessions login`")]
    Missing,
    #[error("the token command failed: {0}; fix the command given by --token-command")]
    Command(String),
    #[error("the sign-in has ended ({0}): run `wbsessions login`")]
    SignInRequired(String),
    #[error("cannot renew the token: {0}")]
    Renewal(String),
}

/// A command's token is used this long before it is asked for a new one.
pub const COMMAND_TOKEN_MAX_AGE: Duration = Duration::from_secs(50 * 60);

enum Source {
    None,
    Static(Secret),
    Command { command: String, current: Mutex<Option<(Secret, Instant, u64)>> },
}

/// A token as handed out, with the generation it belongs to (to renew once per rejection).
#[derive(Debug, Clone)]
pub struct Token {
    pub secret: Secret,
    pub generation: u64,
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

    pub fn command(command: &str) -> Self {
        Tokens { source: Arc::new(Source::Command { command: command.to_string(), current: Mutex::new(None) }) }
    }

    /// `--token` first, then `--token-command`.
    pub fn from_settings(token: Option<&str>, command: Option<&str>) -> Self {
        match (token, command) {
            (Some(t), _) => Tokens::fixed(t),
            (None, Some(c)) => Tokens::command(c),
            (None, None) => Tokens::none(),
        }
    }

    pub fn describe(&self) -> &'static str {
        match &*self.source {
            Source::None => "no token",
            Source::Static(_) => "fixed token",
            Source::Command { .. } => "token command",
        }
    }

    pub fn is_configured(&self) -> bool {
        !matches!(&*self.source, Source::None)
    }

    /// A token to use now.
    pub async fn get(&self) -> Result<Token, AuthError> {
        match &*self.source {
            Source::None => Err(AuthError::Missing),
            Source::Static(secret) => Ok(Token { secret: secret.clone(), generation: 0 }),
            Source::Command { command, current } => {
                let mut current = current.lock().await;
                if let Some((secret, at, generation)) = &*current
                    && at.elapsed() < COMMAND_TOKEN_MAX_AGE
                {
                    return Ok(Token { secret: secret.clone(), generation: *generation });
                }
                let generation = current.as_ref().map_or(1, |(_, _, g)| g + 1);
                let secret = run_token_command(command).await?;
                *current = Some((secret.clone(), Instant::now(), generation));
                Ok(Token { secret, generation })
            }
        }
    }

    /// Graph refused `rejected`: get a new token, unless another task already did since.
    /// Returns `None` when this source cannot produce a different token.
    pub async fn renew_after_rejection(&self, rejected: &Token) -> Result<Option<Token>, AuthError> {
        match &*self.source {
            Source::None | Source::Static(_) => Ok(None),
            Source::Command { command, current } => {
                let mut current = current.lock().await;
                if let Some((secret, _, generation)) = &*current
                    && *generation > rejected.generation
                {
                    return Ok(Some(Token { secret: secret.clone(), generation: *generation }));
                }
                let secret = run_token_command(command).await?;
                let generation = rejected.generation + 1;
                *current = Some((secret.clone(), Instant::now(), generation));
                Ok(Some(Token { secret, generation }))
            }
        }
    }
}

async fn run_token_command(command: &str) -> Result<Secret, AuthError> {
    let output = shell(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| AuthError::Command(format!("cannot run it: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(AuthError::Command(format!(
            "it exited with {}{}",
            output.status,
            if first.is_empty() { String::new() } else { format!(": {first}") }
        )));
    }
    let token = String::from_utf8(output.stdout).map_err(|_| AuthError::Command("its output is not text".into()))?;
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
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
    use super::*;

    #[tokio::test]
    async fn a_command_token_is_cached_and_renewed_once_per_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        let command =
            format!("n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; echo tok$n", counter.display());
        let tokens = Tokens::command(&command);
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
        let err = Tokens::command("echo nope >&2; exit 3").get().await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(Tokens::command("true").get().await.is_err());
        assert!(Tokens::none().get().await.unwrap_err().to_string().contains("wbsessions login"));
        assert_eq!(format!("{:?}", Secret::new("abc")), "Secret(..)");
    }
}
