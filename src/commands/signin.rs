//! `login`, `logout`, `whoami`: the device code flow and the token cache.

use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::bad_input;
use crate::auth::signin::{self, Authority, NO_CLIENT_ID, SignIn};
use crate::cli::LoginArgs;
use crate::config::Settings;
use crate::graph::{ClientOptions, GraphClient};

pub async fn login(settings: &Settings, args: LoginArgs) -> Result<ExitCode> {
    let cached = signin::load(&settings.token_cache).ok().flatten();
    let client_id = args
        .client_id
        .or_else(|| settings.login.client_id.clone())
        .or_else(|| cached.as_ref().map(|c| c.authority.client_id.clone()))
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| bad_input(NO_CLIENT_ID))?;
    let authority = Authority {
        login_url: args.login_url.unwrap_or_else(|| settings.login.login_url.clone()),
        tenant: args.tenant.unwrap_or_else(|| settings.login.tenant.clone()),
        client_id,
    };
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
        () = super::shutdown_signal() => None,
    };
    countdown.abort();
    if live {
        eprint!("\r\x1b[2K");
    }
    let Some(outcome) = outcome else {
        anyhow::bail!("sign-in stopped; nothing was changed");
    };
    let graph = GraphClient::new(
        &settings.graph_url,
        ClientOptions { timeout: Duration::from_secs(15), ..ClientOptions::default() },
    )
    .map_err(bad_input)?;
    let signed_in = signin::finish(outcome?, &graph, &settings.token_cache).await?;
    tracing::info!(tenant = %authority.tenant, "signed in");
    println!(
        "signed in as {} (tenant {}); the token renews by itself, next by {}",
        signed_in.user.as_deref().unwrap_or("an unknown user"),
        authority.tenant,
        signed_in.renew_at().with_timezone(&chrono::Local).format("%H:%M:%S")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn logout(settings: &Settings) -> Result<ExitCode> {
    if signin::remove(&settings.token_cache)? {
        println!("signed out: removed {}", settings.token_cache.display());
    } else {
        println!("not signed in; nothing to remove");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn whoami(settings: &Settings) -> Result<ExitCode> {
    if settings.token.is_some() {
        println!("using the token from --token / WBSESSIONS_TOKEN");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(command) = &settings.token_command {
        println!("using the token printed by: {command}");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(cached) = signin::load(&settings.token_cache)? else {
        anyhow::bail!("not signed in: run `wbsessions login`");
    };
    let now = chrono::Utc::now();
    let local =
        |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string();
    println!("user        {}", cached.user.as_deref().unwrap_or("unknown"));
    println!("tenant      {}", cached.authority.tenant);
    println!("client id   {}", cached.authority.client_id);
    println!("sign-in at  {}", cached.authority.login_url);
    let state = if cached.expires_at <= now { "expired" } else { "valid" };
    println!("token       {state} until {}", local(cached.expires_at));
    println!(
        "renewal     {}",
        if cached.has_refresh_token() {
            format!("automatic, next at {}", local(cached.renew_at()))
        } else {
            "none: no refresh token".into()
        }
    );
    Ok(ExitCode::SUCCESS)
}
