//! `login`, `logout`, `whoami`: the device code flow and the token cache.

use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::bad_input;
use super::output::{Times, json_time};
use crate::auth::signin::{self, NO_CLIENT_ID, SignIn};
use crate::cli::LoginArgs;
use crate::config::{LoginOverrides, Settings};
use crate::graph::{ClientOptions, GraphClient};
use serde_json::json;

pub async fn login(settings: &Settings, args: LoginArgs) -> Result<ExitCode> {
    let flags = LoginOverrides { tenant: args.tenant, client_id: args.client_id, login_url: args.login_url };
    let authority = settings.authority(&flags).ok_or_else(|| bad_input(NO_CLIENT_ID))?;
    let client = SignIn::new(authority.clone()).map_err(bad_input)?;
    let code = client.device_code().await?;
    let mut err = std::io::stderr();
    writeln!(err, "To sign in, open {} and enter the code {}", code.verification_uri, code.user_code)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in);
    let live = std::io::stderr().is_terminal();
    let countdown = tokio::spawn(async move {
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now()).as_secs();
            if live {
                eprint!("\r\x1b[2Kwaiting for the sign-in: {}:{:02} left (Ctrl-C stops)", left / 60, left % 60);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let outcome = tokio::select! {
        result = client.wait_for_tokens(&code, |_| {}) => Some(result),
        _ = super::shutdown_signal() => None,
    };
    countdown.abort();
    if live {
        eprint!("\r\x1b[2K");
    }
    let Some(outcome) = outcome else {
        anyhow::bail!("sign-in stopped; nothing was changed");
    };
    let graph = GraphClient::new(&settings.graph_url, ClientOptions::with_timeout(Duration::from_secs(15)))
        .map_err(bad_input)?;
    let signed_in = signin::finish(outcome?, &graph, &settings.token_cache).await?;
    tracing::info!(tenant = %authority.tenant, "signed in");
    let mut out = std::io::stdout().lock();
    if settings.json {
        let value = json!({
            "user": signed_in.user,
            "tenant": authority.tenant,
            "renews_at": json_time(signed_in.renew_at()),
        });
        writeln!(out, "{value}")?;
    } else {
        writeln!(
            out,
            "signed in as {} (tenant {}); the token renews by itself, next at {}",
            signed_in.user.as_deref().unwrap_or("an unknown user"),
            authority.tenant,
            Times { utc: settings.utc }.stamp_secs(signed_in.renew_at())
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logout(settings: &Settings) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let removed = signin::remove(&settings.token_cache)?;
    if settings.json {
        writeln!(out, "{}", json!({ "signed_out": removed }))?;
    } else if removed {
        writeln!(out, "signed out: removed {}", settings.token_cache.display())?;
    } else {
        writeln!(out, "not signed in; nothing to remove")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn whoami(settings: &Settings) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if settings.token.is_some() {
        if settings.json {
            writeln!(out, "{}", json!({ "source": "token" }))?;
        } else {
            writeln!(out, "using the token from WBSESSIONS_TOKEN / --token")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(command) = &settings.token_command {
        if settings.json {
            writeln!(out, "{}", json!({ "source": "token_command", "token_command": command }))?;
        } else {
            writeln!(out, "using the token printed by: {command}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(cached) = signin::load(&settings.token_cache)? else {
        anyhow::bail!("not signed in: run `wbsessions login`");
    };
    let now = chrono::Utc::now();
    if settings.json {
        let value = json!({
            "source": "sign_in",
            "user": cached.user,
            "tenant": cached.authority.tenant,
            "client_id": cached.authority.client_id,
            "login_url": cached.authority.login_url,
            "status": if cached.expires_at <= now { "expired" } else { "valid" },
            "expires_at": json_time(cached.expires_at),
            "renews_at": cached.has_refresh_token().then(|| json_time(cached.renew_at())),
        });
        writeln!(out, "{value}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let times = Times { utc: settings.utc };
    writeln!(out, "user        {}", cached.user.as_deref().unwrap_or("unknown"))?;
    writeln!(out, "tenant      {}", cached.authority.tenant)?;
    writeln!(out, "client id   {}", cached.authority.client_id)?;
    writeln!(out, "sign-in at  {}", cached.authority.login_url)?;
    let state = if cached.expires_at <= now { "expired" } else { "valid" };
    writeln!(out, "token       {state} until {}", times.stamp_secs(cached.expires_at))?;
    let renewal = if cached.has_refresh_token() {
        format!("automatic, next at {}", times.stamp_secs(cached.renew_at()))
    } else {
        "none: no refresh token".into()
    };
    writeln!(out, "renewal     {renewal}")?;
    Ok(ExitCode::SUCCESS)
}
