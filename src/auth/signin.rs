//! The device code flow and refresh-token grants against the Microsoft identity platform (or the
//! simulator's copy of it), and the token cache they fill (docs/graph.md, "Sign-in").

use std::io::Write as _;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AuthError, Secret};

pub const NO_CLIENT_ID: &str = "no client id: register an app in Microsoft Entra ID (allow public client flows, add the \
     delegated permission Files.ReadWrite), then pass --client-id ID or set client_id in config.toml \
     (docs/configuration.md, \"Signing in\", has the steps)";

pub(crate) const SCOPE: &str = "offline_access Files.ReadWrite";

/// The longest a device code is waited for, whatever the server says (it says 900 s).
const MAX_DEVICE_CODE_SECS: u64 = 3600;
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Where sign-in happens; a cached sign-in remembers its own, so renewal goes back to the same place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    pub login_url: String,
    pub tenant: String,
    pub client_id: String,
}

impl Authority {
    fn endpoint(&self, name: &str) -> String {
        format!("{}/{}/oauth2/v2.0/{name}", self.login_url.trim_end_matches('/'), self.tenant)
    }
}

/// What the cache file holds. Only this file ever holds a token on disk, with mode 0600.
#[derive(Clone, Serialize, Deserialize)]
pub struct CachedSignIn {
    pub authority: Authority,
    access_token: String,
    refresh_token: Option<String>,
    pub obtained_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub user: Option<String>,
}

impl std::fmt::Debug for CachedSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSignIn")
            .field("authority", &self.authority)
            .field("expires_at", &self.expires_at)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl CachedSignIn {
    pub fn access_token(&self) -> Secret {
        Secret::new(self.access_token.clone())
    }

    pub fn has_refresh_token(&self) -> bool {
        self.refresh_token.is_some()
    }

    /// When to renew: 5 minutes before expiry, or at 80 % of a lifetime shorter than 25 minutes.
    pub fn renew_at(&self) -> DateTime<Utc> {
        // The times come from a file: saturate rather than overflow on nonsense.
        let lifetime = crate::time::until(self.obtained_at, self.expires_at);
        if lifetime >= Duration::from_secs(25 * 60) {
            crate::time::sub(self.expires_at, Duration::from_secs(5 * 60))
        } else {
            crate::time::add(self.obtained_at, lifetime.mul_f64(0.8))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read the token cache {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the token cache {path} {why}, so it is not used; {fix}")]
    Unsafe { path: PathBuf, why: String, fix: String },
    #[error("the token cache {path} is damaged ({detail}); run `wbsessions login` again")]
    Damaged { path: PathBuf, detail: String },
    #[error("cannot write the token cache {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Reads the cache, trusting it only as ssh trusts a key: the user's own regular file that nobody
/// else can read or write. A planted or loosened file could send the refresh token elsewhere.
pub fn load(path: &Path) -> Result<Option<CachedSignIn>, CacheError> {
    use std::io::Read;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CacheError::Read { path: path.to_path_buf(), source }),
    };
    let unsafe_because = |why: String, fix: String| CacheError::Unsafe { path: path.to_path_buf(), why, fix };
    let relogin = format!("remove it (`rm {}`) and run `wbsessions login`", path.display());
    if meta.file_type().is_symlink() {
        return Err(unsafe_because("is a symlink".into(), relogin));
    }
    if !meta.is_file() {
        return Err(unsafe_because("is not a regular file".into(), relogin));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(unsafe_because(format!("belongs to another user (uid {})", meta.uid()), relogin));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(unsafe_because(
                format!("can be read or written by others (mode {:o})", meta.mode() & 0o777),
                format!("run `chmod 600 {}`, or {relogin}", path.display()),
            ));
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let mut text = String::new();
    options
        .open(path)
        .and_then(|f| f.take(1024 * 1024).read_to_string(&mut text))
        .map_err(|source| CacheError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| CacheError::Damaged { path: path.to_path_buf(), detail: e.to_string() })
}

/// Writes the cache readable by the user alone, atomically: a kill leaves the old file or the new.
/// The temporary file has a random name and is created new, so nothing planted is written through.
pub fn save(path: &Path, signin: &CachedSignIn) -> Result<(), CacheError> {
    let err = |source| CacheError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        crate::files::private_dir(dir).map_err(err)?;
    }
    let temp = path.with_extension(format!("tmp-{}", crate::files::random_suffix()));
    let mut file = crate::files::create_new_private(&temp).map_err(err)?;
    let text = serde_json::to_vec_pretty(signin).map_err(|e| err(std::io::Error::other(e)))?;
    let written = file.write_all(&text).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(err(e));
    }
    Ok(())
}

pub fn remove(path: &Path) -> Result<bool, CacheError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CacheError::Write { path: path.to_path_buf(), source }),
    }
}

/// The first answer of the device code flow: what the user must see.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceCode {
    device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(deserialize_with = "lenient_seconds")]
    pub expires_in: u64,
    #[serde(default = "default_interval", deserialize_with = "lenient_seconds")]
    pub interval: u64,
    #[serde(default)]
    pub message: Option<String>,
}

fn default_interval() -> u64 {
    5
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    /// Seconds; a number too large for 64 bits reads as the cap.
    #[serde(deserialize_with = "lenient_seconds")]
    expires_in: u64,
}

fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().map(|f| f.clamp(0.0, 1e12) as u64)).unwrap_or(0)
        }
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// How a poll or a grant ended, when it did not give tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("the sign-in was declined")]
    Declined,
    #[error("the code expired before the sign-in finished; run `wbsessions login` again")]
    Expired,
    #[error("the sign-in service did not know the code; run `wbsessions login` again")]
    BadCode,
    #[error("the sign-in has ended ({0}); run `wbsessions login`")]
    SignInRequired(String),
    #[error("the sign-in service refused: {0}")]
    Refused(String),
    #[error("cannot reach the sign-in service: {0}")]
    Network(String),
}

impl From<SignInError> for AuthError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::SignInRequired(why) => AuthError::SignInRequired(why),
            other => AuthError::Renewal(other.to_string()),
        }
    }
}

/// Talks to `{login_url}/{tenant}/oauth2/v2.0/...`.
#[derive(Clone, Debug)]
pub struct SignIn {
    http: reqwest::Client,
    pub authority: Authority,
}

impl SignIn {
    pub fn new(authority: Authority) -> Result<SignIn, AuthError> {
        crate::graph::install_tls_provider();
        crate::graph::check_base_url(&authority.login_url)
            .map_err(|e| AuthError::Renewal(e.to_string().replace("Graph URL", "sign-in URL")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthError::Renewal(e.to_string()))?;
        Ok(SignIn { http, authority })
    }

    async fn post(&self, endpoint: &str, form: &[(&str, &str)]) -> Result<Result<Vec<u8>, OAuthError>, SignInError> {
        let response = self
            .http
            .post(self.authority.endpoint(endpoint))
            .form(form)
            .send()
            .await
            .map_err(|e| SignInError::Network(if e.is_timeout() { "timed out".into() } else { e.to_string() }))?;
        let status = response.status();
        let body = crate::graph::read_capped(response).await.map_err(SignInError::Network)?;
        if status.is_success() {
            return Ok(Ok(body));
        }
        match serde_json::from_slice::<OAuthError>(&body) {
            Ok(e) => Ok(Err(e)),
            Err(_) => Err(SignInError::Refused(format!("HTTP {status}"))),
        }
    }

    pub async fn device_code(&self) -> Result<DeviceCode, SignInError> {
        let client_id = self.authority.client_id.clone();
        match self.post("devicecode", &[("client_id", &client_id), ("scope", SCOPE)]).await? {
            Ok(body) => {
                let mut code: DeviceCode = serde_json::from_slice(&body)
                    .map_err(|e| SignInError::Refused(format!("unreadable device code: {e}")))?;
                // What the user is shown comes from the server: plain text only, and a sane wait.
                code.user_code = crate::text::clean(&code.user_code, 64);
                code.verification_uri = crate::text::clean(&code.verification_uri, 512);
                // The user is sent there to type a code: only to a page over https (or the
                // simulator on this machine).
                if !is_safe_page(&code.verification_uri) {
                    return Err(SignInError::Refused(format!(
                        "the sign-in service gave a verification address that is not https ({}); not shown",
                        crate::text::clean(&code.verification_uri, 80)
                    )));
                }
                code.message = crate::text::clean_opt(code.message.as_deref(), 1000);
                code.expires_in = code.expires_in.clamp(1, MAX_DEVICE_CODE_SECS);
                code.interval = code.interval.clamp(1, 60);
                Ok(code)
            }
            Err(e) => Err(SignInError::Refused(describe(&e))),
        }
    }

    /// Polls until the user finished, declined or the code expired. `on_wait` hears each pause.
    pub async fn wait_for_tokens(
        &self,
        code: &DeviceCode,
        mut on_wait: impl FnMut(Duration),
    ) -> Result<CachedSignIn, SignInError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(code.expires_in.clamp(1, MAX_DEVICE_CODE_SECS));
        let mut interval = Duration::from_secs(code.interval.max(1));
        let client_id = self.authority.client_id.clone();
        loop {
            on_wait(interval);
            tokio::time::sleep(interval).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(SignInError::Expired);
            }
            let form = [
                ("grant_type", DEVICE_CODE_GRANT),
                ("client_id", client_id.as_str()),
                ("device_code", code.device_code.as_str()),
            ];
            match self.post("token", &form).await? {
                Ok(body) => return self.tokens_from(&body, None),
                Err(e) => match e.error.as_str() {
                    "authorization_pending" => {}
                    "slow_down" => interval = (interval + Duration::from_secs(5)).min(Duration::from_secs(60)),
                    "authorization_declined" | "access_denied" => return Err(SignInError::Declined),
                    "expired_token" => return Err(SignInError::Expired),
                    "bad_verification_code" => return Err(SignInError::BadCode),
                    _ => return Err(SignInError::Refused(describe(&e))),
                },
            }
        }
    }

    /// A new access token (and a new refresh token, which replaces the old) for a cached sign-in.
    pub async fn renew(&self, cached: &CachedSignIn) -> Result<CachedSignIn, SignInError> {
        let refresh = cached
            .refresh_token
            .clone()
            .ok_or_else(|| SignInError::SignInRequired("no refresh token was issued".into()))?;
        let client_id = self.authority.client_id.clone();
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id.as_str()),
            ("refresh_token", refresh.as_str()),
            ("scope", SCOPE),
        ];
        match self.post("token", &form).await? {
            Ok(body) => self.tokens_from(&body, Some(cached)),
            Err(e) if matches!(e.error.as_str(), "invalid_grant" | "interaction_required") => {
                Err(SignInError::SignInRequired(e.error.clone()))
            }
            Err(e) => Err(SignInError::Refused(describe(&e))),
        }
    }

    fn tokens_from(&self, body: &[u8], previous: Option<&CachedSignIn>) -> Result<CachedSignIn, SignInError> {
        let answer: TokenAnswer =
            serde_json::from_slice(body).map_err(|e| SignInError::Refused(format!("unreadable token answer: {e}")))?;
        // A token travels in a header: one that cannot is refused before it is cached.
        if answer.access_token.is_empty() || !answer.access_token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SignInError::Refused(
                "the sign-in answered with an access token that cannot be sent in a header".into(),
            ));
        }
        let now = Utc::now();
        Ok(CachedSignIn {
            authority: self.authority.clone(),
            access_token: answer.access_token,
            // A renewal that brings no new refresh token keeps the old one.
            refresh_token: answer.refresh_token.or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            obtained_at: now,
            // Under a minute would renew before nearly every call: a minute at least.
            expires_at: crate::time::add(now, Duration::from_secs(answer.expires_in.clamp(60, 86_400))),
            user: previous.and_then(|p| p.user.clone()),
        })
    }
}

/// Whether a page the user is sent to is safe to show: https, or http to this machine.
fn is_safe_page(address: &str) -> bool {
    let Ok(url) = url::Url::parse(address) else { return false };
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// Names the user from `/me` (worth a line, not worth failing the sign-in over) and caches the sign-in.
pub(crate) async fn finish(
    mut signed_in: CachedSignIn,
    graph: &crate::graph::GraphClient,
    cache: &Path,
) -> Result<CachedSignIn, CacheError> {
    match graph.me(signed_in.access_token().expose()).await {
        Ok(me) => {
            let clean = |t: Option<String>| crate::text::clean_opt(t.as_deref(), 200);
            signed_in.user = match (clean(me.value.display_name), clean(me.value.user_principal_name)) {
                (Some(name), Some(upn)) => Some(format!("{name} ({upn})")),
                (name, upn) => name.or(upn),
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read /me after signing in"),
    }
    save(cache, &signed_in)?;
    Ok(signed_in)
}

/// How a device-code sign-in started from a long-running program goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Where to go and what to type.
    Code { verification_uri: String, user_code: String, expires_in: u64 },
    /// Signed in as the named user, or why not.
    Done(Result<String, String>),
}

/// The whole device-code sign-in: a code, the wait, `/me`, the cache, and the token source told.
pub async fn sign_in(
    authority: Authority,
    graph: &crate::graph::GraphClient,
    cache: &Path,
    tokens: &super::Tokens,
    mut progress: impl FnMut(Progress),
) {
    let result = async {
        let client = SignIn::new(authority).map_err(|e| e.to_string())?;
        let code = client.device_code().await.map_err(|e| e.to_string())?;
        progress(Progress::Code {
            verification_uri: code.verification_uri.clone(),
            user_code: code.user_code.clone(),
            expires_in: code.expires_in,
        });
        let signed_in = client.wait_for_tokens(&code, |_| {}).await.map_err(|e| e.to_string())?;
        let signed_in = finish(signed_in, graph, cache).await.map_err(|e| e.to_string())?;
        tokens.reload();
        tracing::info!("signed in");
        Ok(signed_in.user.unwrap_or_else(|| "an unknown user".into()))
    }
    .await;
    progress(Progress::Done(result));
}

fn describe(e: &OAuthError) -> String {
    let first = e.error_description.as_deref().and_then(|d| d.lines().next()).unwrap_or("");
    let error = crate::text::clean(&e.error, 100);
    let first = crate::text::clean(first, 300);
    if first.is_empty() { error } else { format!("{error}: {first}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signin(lifetime: chrono::Duration) -> CachedSignIn {
        let now = Utc::now();
        CachedSignIn {
            authority: Authority {
                login_url: "http://127.0.0.1:1".into(),
                tenant: "organizations".into(),
                client_id: "X".into(),
            },
            access_token: "secret-access".into(),
            refresh_token: Some("secret-refresh".into()),
            obtained_at: now,
            expires_at: now + lifetime,
            user: None,
        }
    }

    #[test]
    fn only_pages_over_https_or_on_this_machine_are_shown() {
        assert!(is_safe_page("https://microsoft.com/devicelogin"));
        assert!(is_safe_page("http://127.0.0.1:8080/device"));
        for unsafe_page in ["javascript:alert(1)", "http://evil.example/device", "file:///etc/passwd", "not a url"] {
            assert!(!is_safe_page(unsafe_page), "{unsafe_page}");
        }
    }

    #[test]
    fn absurd_times_in_the_cache_do_not_overflow() {
        let mut odd = signin(chrono::Duration::hours(1));
        odd.obtained_at = DateTime::<Utc>::MAX_UTC;
        odd.expires_at = DateTime::<Utc>::MIN_UTC;
        let _ = odd.renew_at();
        odd.obtained_at = DateTime::<Utc>::MIN_UTC;
        odd.expires_at = DateTime::<Utc>::MAX_UTC;
        let _ = odd.renew_at();
    }

    #[test]
    fn renewal_comes_five_minutes_early_or_at_eighty_percent() {
        let hour = signin(chrono::Duration::hours(1));
        assert_eq!(hour.renew_at(), hour.expires_at - chrono::Duration::minutes(5));
        let short = signin(chrono::Duration::seconds(10));
        assert_eq!(short.renew_at(), short.obtained_at + chrono::Duration::seconds(8));
    }

    #[test]
    fn the_cache_is_private_and_its_debug_form_holds_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token.json");
        let cached = signin(chrono::Duration::hours(1));
        save(&path, &cached).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.access_token().expose(), "secret-access");
        assert!(!format!("{back:?}").contains("secret"));
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        assert!(load(&path).unwrap().is_none());
        std::fs::write(&path, "{").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(load(&path), Err(CacheError::Damaged { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn a_loose_or_planted_cache_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        save(&path, &signin(chrono::Duration::hours(1))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("mode 664"), "{err}");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(load(&link).unwrap_err().to_string().contains("symlink"));
        // Saving through a planted link replaces the link, never writes its target.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let before = std::fs::read(&path).unwrap();
        save(&link, &signin(chrono::Duration::hours(2))).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn huge_lifetimes_from_the_server_do_not_overflow() {
        let answer: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"a","expires_in":18446744073709551615}"#).unwrap();
        assert_eq!(answer.expires_in, u64::MAX);
        let big: TokenAnswer = serde_json::from_str(r#"{"access_token":"a","expires_in":1e300}"#).unwrap();
        assert!(big.expires_in > 0);
        let code: DeviceCode = serde_json::from_str(
            r#"{"device_code":"d","user_code":"u","verification_uri":"v","expires_in":18446744073709551615,"interval":99999999999}"#,
        )
        .unwrap();
        assert_eq!(code.expires_in, u64::MAX);
    }
}
