//! `wbsessions proxy`: the local Graph endpoint (`crate::proxy`) on an engine of its own, which
//! keeps the store's sessions alive too when no other process drives it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::front::{graph_setup, open_store, store_error};
use super::{Signal, bad_input, shutdown_signal};
use crate::auth::Tokens;
use crate::cli::{ProxyArgs, ProxyOptions};
use crate::config::Settings;
use crate::engine::Handle;
use crate::engine::keeper::{Keeper, KeeperRole, Start};
use crate::graph::Transport;
use crate::proxy::{Counts, Proxy};
use crate::session::Mode;
use crate::store::RoleError;

/// The environment a script needs to call Graph through the proxy.
pub(crate) const URL_VAR: &str = "WBSESSIONS_GRAPH_URL";
pub(crate) const SECRET_VAR: &str = "WBSESSIONS_PROXY_TOKEN";

/// Where a running proxy's address and the callers' secret are kept (both 0600).
pub(crate) struct ProxyFiles {
    pub address: PathBuf,
    pub secret: PathBuf,
}

impl ProxyFiles {
    /// The address file is the store's: proxies on two stores each say where they are.
    pub(crate) fn of(settings: &Settings) -> ProxyFiles {
        let dir = settings.state_dir();
        // FNV-1a: stable across builds, which a std hasher is not promised to be.
        let store = settings.store.to_string();
        let hash =
            store.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        ProxyFiles { address: dir.join(format!("proxy-address-{:08x}", hash as u32)), secret: dir.join("proxy-secret") }
    }

    /// The callers' secret: the one kept, else a new random one, kept.
    fn secret(&self) -> Result<String> {
        if let Some(secret) = self.read_secret()? {
            return Ok(secret);
        }
        if let Some(dir) = self.secret.parent() {
            crate::files::private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // 244 random bits from the operating system's generator.
        let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        match crate::files::create_new_private(&self.secret) {
            Ok(mut file) => {
                file.write_all(secret.as_bytes()).with_context(|| format!("cannot write {}", self.secret.display()))?;
                Ok(secret)
            }
            // Another proxy made it meanwhile: its secret is the one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.read_secret()?.context("the proxy's secret file is empty")
            }
            Err(e) => Err(e).with_context(|| format!("cannot create {}", self.secret.display())),
        }
    }

    fn read_secret(&self) -> Result<Option<String>> {
        match read_private(&self.secret)? {
            None => Ok(None),
            Some(text) => {
                let secret = text.trim().to_string();
                if secret.is_empty() || secret.len() > 256 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                    anyhow::bail!(
                        "{} does not hold a usable secret (1 to 256 printable characters); delete it and start the proxy again",
                        self.secret.display()
                    );
                }
                Ok(Some(secret))
            }
        }
    }

    fn write_address(&self, url: &str) -> Result<()> {
        let _ = std::fs::remove_file(&self.address);
        let mut file = crate::files::create_new_private(&self.address)
            .with_context(|| format!("cannot create {}", self.address.display()))?;
        writeln!(file, "{url}").with_context(|| format!("cannot write {}", self.address.display()))
    }

    /// The running proxy's URL and the secret, or why there is none to use.
    pub(crate) fn running(&self) -> Result<(String, String)> {
        let address = read_private(&self.address)?.map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
        let Some(address) = address else {
            anyhow::bail!(
                "no proxy is running (none has written {}); start one with `wbsessions proxy`",
                self.address.display()
            );
        };
        let secret = self.read_secret()?.context("the proxy's secret is missing; start the proxy again")?;
        Ok((address, secret))
    }
}

/// A file of ours, read only if it is a small file the user's alone: another user's secret is
/// not trusted, and a link to a device or a pipe is not read at all.
fn read_private(path: &Path) -> Result<Option<String>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if !meta.file_type().is_file() {
        anyhow::bail!(
            "{} must be a plain file, not a link, device or pipe; delete it and start the proxy again",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        if meta.uid() != me || meta.mode() & 0o077 != 0 {
            anyhow::bail!("{} must be a file only you can read and write (chmod 600); it is not used", path.display());
        }
    }
    if meta.len() > 4096 {
        anyhow::bail!("{} is larger than it can be; delete it and start the proxy again", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(text))
}

/// `export` lines for a shell: `eval "$(wbsessions proxy --print-env)"`.
fn print_env(files: &ProxyFiles) -> Result<ExitCode> {
    let (url, secret) = files.running()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "export {URL_VAR}='{url}'")?;
    writeln!(out, "export {SECRET_VAR}='{secret}'")?;
    Ok(ExitCode::SUCCESS)
}

/// The proxy serving on an engine: its URL, and how to stop it.
pub(crate) struct Serving {
    pub url: String,
    pub counts: Arc<Counts>,
    files: ProxyFiles,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Serving {
    /// Stops taking calls, lets those under way finish (two seconds at most, then they are cut),
    /// and forgets the address.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        // Only if it still says where this one was: another proxy on the store may have started.
        if read_private(&self.files.address).ok().flatten().is_some_and(|a| a.trim() == self.url) {
            let _ = std::fs::remove_file(&self.files.address);
        }
    }
}

/// Checks where the proxy would listen before anything else starts: a bad address is bad input.
pub(crate) async fn bind(options: &ProxyOptions) -> Result<tokio::net::TcpListener> {
    let listen: SocketAddr = options.listen;
    if !listen.ip().is_loopback() {
        return Err(bad_input(format!(
            "the proxy listens on loopback only (127.0.0.1, ::1); {listen} is not: anyone who can reach it could use your sign-in"
        )));
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| bad_input(format!("cannot listen on {listen}: {e} (`--listen 127.0.0.1:0` picks a free port)")))
}

/// Serves the proxy on `listener` for the engine behind `handle`.
pub(crate) fn serve_on(
    settings: &Settings,
    options: &ProxyOptions,
    listener: tokio::net::TcpListener,
    handle: Handle,
    tokens: Tokens,
    graph: Arc<dyn crate::engine::Graph>,
) -> Result<Serving> {
    let files = ProxyFiles::of(settings);
    let transport = Transport::new(&settings.graph_url, settings.engine.request_timeout).map_err(bad_input)?;
    let secret = files.secret()?;
    let url = crate::proxy::base_url(listener.local_addr()?);
    let counts = Arc::new(Counts::default());
    let create = options.create.then_some(if options.non_persistent { Mode::NonPersistent } else { Mode::Persistent });
    let proxy = Arc::new(Proxy {
        handle,
        transport,
        tokens,
        secret,
        body_limit: options.max_body,
        counts: counts.clone(),
        create,
        track: options.track,
        graph,
        resolved: std::sync::Mutex::default(),
    });
    files.write_address(&url)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::proxy::serve(listener, proxy, async {
        let _ = stopped.await;
    }));
    tracing::info!(%url, store = %settings.store, "proxy started");
    Ok(Serving { url, counts, files, stop, task })
}

pub async fn proxy(settings: &Settings, args: ProxyArgs) -> Result<ExitCode> {
    if args.print_env {
        return print_env(&ProxyFiles::of(settings));
    }
    let listener = bind(&args.serve).await?;
    let opened = open_store(settings)?;
    let graph = graph_setup(settings, None)?;
    super::front::identify(&*opened.role, &graph).await;
    let role = match opened.role.join() {
        Ok(lease) => KeeperRole::Drive { lease, role: opened.role.clone() },
        Err(RoleError::Held { .. }) => KeeperRole::Watch(opened.role.clone()),
        Err(e) if e.is_bad_input() => return Err(bad_input(e)),
        Err(e) => return Err(e.into()),
    };
    let driving = matches!(role, KeeperRole::Drive { .. });
    graph.require_tokens()?;
    let tokens = graph.tokens.clone();
    let calls = graph.ctx.graph.clone();
    let mut keeper = Keeper::start(opened.sessions, role, graph.ctx, settings.engine.clone(), Start::Stored)
        .await
        .map_err(store_error)?;
    let serving = serve_on(settings, &args.serve, listener, keeper.handle.clone(), tokens, calls)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", serving.url)?;
        out.flush()?;
    }
    writeln!(
        std::io::stderr().lock(),
        "wbsessions: proxy for {}{}; `eval \"$(wbsessions proxy --print-env)\"` sets a script's environment; Ctrl-C stops",
        settings.store,
        if driving { ", keeping its sessions alive" } else { " (another process keeps its sessions alive)" }
    )?;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    // The engine's events are not shown here, but they are read: unread, they would pile up.
    let signal = loop {
        tokio::select! {
            signal = &mut signal => break Some(signal),
            event = keeper.events.recv() => if event.is_none() { break None },
        }
    };
    serving.stop().await;
    keeper.stop().await;
    match signal {
        Some(Signal::Interrupt) => Err(super::Interrupted.into()),
        Some(Signal::Terminate) => Ok(ExitCode::SUCCESS),
        None => anyhow::bail!("the engine stopped; the proxy stopped with it"),
    }
}
