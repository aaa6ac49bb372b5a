//! A `postgres://` store as people write it, and the connection it names: what the URL leaves
//! out comes from the usual `PG*` variables and the password file (`~/.pgpass`), as `psql` reads
//! them. The password is kept apart and never shown: the URL is shown without it.

use std::path::PathBuf;
use std::time::Duration;

/// How long a connection may take before the store is called unavailable, unless the URL or
/// `PGCONNECT_TIMEOUT` says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a connection is encrypted, by libpq's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    /// Encrypted when the server offers it, unverified (libpq's default).
    Prefer,
    /// Encrypted, unverified.
    Require,
    /// Encrypted, the certificate checked against the trusted roots and the host's name.
    VerifyFull,
}

/// A PostgreSQL store's address. `Display` shows it without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) dbname: String,
    pub(crate) password: Option<String>,
    pub(crate) sslmode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
    pub(crate) options: Option<String>,
    pub(crate) connect_timeout: Duration,
    /// How long a keeper's hold on a workbook lasts without renewal (the `keeper_lease` setting):
    /// how soon the others take over from a keeper that died or was cut off.
    pub lease: Duration,
}

/// `keeper_lease` unless the config says otherwise: well inside the gap between a session's
/// refresh interval (4 minutes) and its idle expiry (5).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') && !self.host.starts_with('/') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "postgres://{}@{host}:{}/{}", self.user, self.port, self.dbname)
    }
}

/// What is wrong with a `postgres://` URL; it never holds the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store URL {shown} {problem}")]
pub struct BadUrl {
    shown: String,
    problem: String,
}

/// Where the environment's values come from: the process's, or a test's.
pub(crate) trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub(crate) struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// The URL with any password cut out, for a message about a URL that could not be read.
pub(crate) fn without_password(given: &str) -> String {
    let Some((scheme, rest)) = given.split_once("://") else { return given.to_string() };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => format!("{}@{host}", user_info.split(':').next().unwrap_or_default()),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> =
                query.split('&').filter(|p| !p.to_ascii_lowercase().starts_with("password=")).collect();
            if kept.is_empty() { path.to_string() } else { format!("{path}?{}", kept.join("&")) }
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl PgUrl {
    /// Reads `postgres://[USER[:PASSWORD]@][HOST][:PORT][/DB][?sslmode=…&…]`.
    pub fn parse(given: &str) -> Result<PgUrl, BadUrl> {
        PgUrl::parse_with(given, &ProcessEnv)
    }

    pub(crate) fn parse_with(given: &str, env: &dyn Env) -> Result<PgUrl, BadUrl> {
        let bad = |problem: String| BadUrl { shown: without_password(given), problem };
        let url = url::Url::parse(given).map_err(|e| bad(format!("cannot be read: {e}")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad("is not a postgres:// URL".into()));
        }
        let decode = |s: &str| crate::text::percent_decoded(s);
        let mut sslmode = env.var("PGSSLMODE");
        let mut root_cert = env.var("PGSSLROOTCERT").map(PathBuf::from);
        let mut options = env.var("PGOPTIONS");
        let mut connect_timeout = env.var("PGCONNECT_TIMEOUT");
        let mut password = None;
        let mut host_param = None;
        let mut port_param = None;
        let mut user_param = None;
        let mut db_param = None;
        for (key, value) in url.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "sslmode" => sslmode = Some(value),
                "sslrootcert" => root_cert = Some(PathBuf::from(value)),
                "options" => options = Some(value),
                "connect_timeout" => connect_timeout = Some(value),
                "password" => password = Some(value),
                "host" => host_param = Some(value),
                "port" => port_param = Some(value),
                "user" => user_param = Some(value),
                "dbname" => db_param = Some(value),
                // Settings of other tools' (application_name, …) change nothing here.
                _ => {}
            }
        }
        let host = host_param
            .or_else(|| url.host_str().filter(|h| !h.is_empty()).map(|h| h.trim_matches(['[', ']']).to_string()))
            .or_else(|| env.var("PGHOST"))
            .unwrap_or_else(|| "localhost".into());
        let port = match port_param.or_else(|| url.port().map(|p| p.to_string())).or_else(|| env.var("PGPORT")) {
            Some(p) => {
                p.parse::<u16>().map_err(|_| bad(format!("names the port {p:?}; a port is a number up to 65535")))?
            }
            None => 5432,
        };
        let user = user_param
            .or_else(|| Some(decode(url.username())).filter(|u| !u.is_empty()))
            .or_else(|| env.var("PGUSER"))
            .or_else(|| env.var("USER"))
            .ok_or_else(|| bad("names no user; add one (postgres://USER@HOST/DB) or set PGUSER".into()))?;
        let dbname = db_param
            .or_else(|| Some(decode(url.path().trim_start_matches('/'))).filter(|d| !d.is_empty()))
            .or_else(|| env.var("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        let password = url
            .password()
            .map(decode)
            .or(password)
            .or_else(|| env.var("PGPASSWORD"))
            .or_else(|| from_password_file(env, &host, port, &dbname, &user));
        let sslmode = match sslmode.as_deref().unwrap_or("prefer") {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            // Checking the name as well as the chain is never weaker than what was asked.
            "verify-ca" | "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(bad(format!(
                    "asks for sslmode={other:?}; use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        };
        let connect_timeout = match connect_timeout {
            Some(t) => t
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s.max(2)))
                .ok_or_else(|| bad(format!("asks for connect_timeout={t:?}; give whole seconds")))?,
            None => CONNECT_TIMEOUT,
        };
        Ok(PgUrl {
            host,
            port,
            user,
            dbname,
            password,
            sslmode,
            root_cert,
            options,
            connect_timeout,
            lease: DEFAULT_LEASE,
        })
    }
}

/// The password for this connection in the password file (`PGPASSFILE`, else `~/.pgpass`),
/// read as libpq does: `host:port:db:user:password` lines, `*` matching anything, `\` escaping.
/// A file others can read is ignored, as libpq ignores it.
fn from_password_file(env: &dyn Env, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let path = env
        .var("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env.var("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the password file is readable by others; it is ignored (chmod 600 it)");
            return None;
        }
    }
    // A password file is a few lines; anything larger is not one.
    if !meta.is_file() || meta.len() > 1024 * 1024 {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let port = port.to_string();
    text.lines().filter(|l| !l.trim_start().starts_with('#')).find_map(|line| {
        let fields = split_fields(line);
        let [h, p, d, u, password] = fields.as_slice() else { return None };
        let matches = |field: &str, value: &str| field == "*" || field == value;
        (matches(h, host) && matches(p, &port) && matches(d, dbname) && matches(u, user)).then(|| password.clone())
    })
}

fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(last)) = (chars.next(), fields.last_mut()) {
                    last.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Vars(HashMap<&'static str, String>);

    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn none() -> Vars {
        Vars(HashMap::new())
    }

    #[test]
    fn a_url_is_read_and_shown_without_its_password() {
        let url =
            PgUrl::parse_with("postgres://keeper:s3cr%40t@db.example:6543/team?sslmode=require", &none()).unwrap();
        assert_eq!(url.password.as_deref(), Some("s3cr@t"));
        assert_eq!((url.host.as_str(), url.port, url.dbname.as_str()), ("db.example", 6543, "team"));
        assert_eq!(url.sslmode, SslMode::Require);
        assert_eq!(url.to_string(), "postgres://keeper@db.example:6543/team");
        assert!(!format!("{url:?}").contains("s3cr"));
        let bad = PgUrl::parse_with("postgres://keeper:hunter2@db/x?sslmode=sometimes", &none()).unwrap_err();
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
        assert!(bad.to_string().contains("sslmode"), "{bad}");
        let bad = PgUrl::parse_with("postgres://keeper:hunter2@db:99999/x?password=hunter3", &none()).unwrap_err();
        assert!(!bad.to_string().contains("hunter"), "{bad}");
    }

    #[test]
    fn what_the_url_leaves_out_comes_from_the_environment_and_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "# comment\nother:*:*:*:no\ndb.example:5433:*:kee\\:per:from-file\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let vars = Vars(HashMap::from([
            ("PGHOST", "db.example".to_string()),
            ("PGPORT", "5433".to_string()),
            ("PGUSER", "kee:per".to_string()),
            ("PGPASSFILE", file.display().to_string()),
        ]));
        let url = PgUrl::parse_with("postgres:///team", &vars).unwrap();
        assert_eq!((url.host.as_str(), url.port, url.user.as_str()), ("db.example", 5433, "kee:per"));
        assert_eq!(url.password.as_deref(), Some("from-file"));
        assert_eq!(url.sslmode, SslMode::Prefer);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(
                PgUrl::parse_with("postgres:///team", &vars).unwrap().password,
                None,
                "a readable file is ignored"
            );
        }
    }

    #[test]
    fn messages_about_urls_never_carry_the_password() {
        assert_eq!(
            without_password("postgres://u:pw@h:1/d?password=x&sslmode=require"),
            "postgres://u@h:1/d?sslmode=require"
        );
        assert_eq!(without_password("postgres://u@h/d"), "postgres://u@h/d");
    }
}
