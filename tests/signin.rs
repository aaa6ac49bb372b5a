//! Signing in with the device code flow, and keeping the token fresh, against the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failed check

mod common;

use std::time::{Duration, Instant};

use common::*;
use wbsessions::auth::signin::{self, Authority, DeviceCode, SignIn, SignInError};
use wbsessions::auth::{AuthError, Tokens};
use wbsessions::engine::{LiveGraph, ops};
use wbsessions::session::{Mode, OutcomeKind, TrackedSession, WorkbookRef};
use wbsessions::sim::{RunningSim, SimConfig};
use wbsessions::time::Clock;

fn signin_sim(approve_after: Duration, token_lifetime: Duration) -> SimConfig {
    SimConfig {
        token: None,
        approve_after,
        token_lifetime,
        workbooks: vec![("W1".into(), None)],
        ..SimConfig::default()
    }
}

fn authority(sim: &RunningSim) -> Authority {
    Authority { login_url: sim.login_url(), tenant: "organizations".into(), client_id: "test-client".into() }
}

async fn sign_in(sim: &RunningSim) -> signin::CachedSignIn {
    let client = SignIn::new(authority(sim)).unwrap();
    let code = client.device_code().await.unwrap();
    client.wait_for_tokens(&code, |_| {}).await.unwrap()
}

#[tokio::test]
async fn the_whole_device_code_flow() {
    let sim = start_sim(signin_sim(Duration::from_millis(1500), Duration::from_secs(3600))).await;
    let client = SignIn::new(authority(&sim)).unwrap();
    let code = client.device_code().await.unwrap();
    assert!(code.verification_uri.starts_with(&sim.login_url()));
    assert_eq!(code.user_code.len(), 8);
    let mut polls = 0;
    let signed_in = client.wait_for_tokens(&code, |_| polls += 1).await.unwrap();
    assert!(polls >= 2, "the first poll met authorization_pending");
    assert!(signed_in.has_refresh_token());
    assert!(signed_in.expires_at > chrono::Utc::now() + chrono::Duration::minutes(59));
    let me = client_for(&sim).me(signed_in.access_token().expose()).await.unwrap();
    assert_eq!(me.value.display_name.as_deref(), Some("Simulated User"));
    assert_eq!(reqwest_status(&sim, "any-bearer").await, 200, "without --token the simulator accepts any bearer too");
}

fn client_for(sim: &RunningSim) -> wbsessions::graph::GraphClient {
    client(&sim.graph_url())
}

async fn reqwest_status(sim: &RunningSim, token: &str) -> u16 {
    http().get(format!("{}/me", sim.graph_url())).bearer_auth(token).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn declined_expired_and_unknown_codes_stop_the_wait() {
    let clock = Clock::manual(chrono::Utc::now());
    let sim =
        start_sim_with_clock(signin_sim(Duration::from_secs(3600), Duration::from_secs(3600)), clock.clone()).await;
    let client = SignIn::new(authority(&sim)).unwrap();

    let code = client.device_code().await.unwrap();
    assert!(sim.sim.decline(&code.user_code));
    assert_eq!(client.wait_for_tokens(&code, |_| {}).await.unwrap_err(), SignInError::Declined);

    let code = client.device_code().await.unwrap();
    clock.advance(Duration::from_secs(901));
    assert_eq!(client.wait_for_tokens(&code, |_| {}).await.unwrap_err(), SignInError::Expired);

    let bogus: DeviceCode = serde_json::from_value(serde_json::json!({
        "device_code": "never-issued", "user_code": "AAAA", "verification_uri": "x", "expires_in": 900, "interval": 1
    }))
    .unwrap();
    assert_eq!(client.wait_for_tokens(&bogus, |_| {}).await.unwrap_err(), SignInError::BadCode);
}

#[tokio::test]
async fn slow_down_adds_five_seconds_to_the_interval() {
    let server = script_server().await;
    let pending = r#"{"error":"slow_down","error_description":"AADSTS70000: slow down"}"#;
    server.push(Scripted::new(
        200,
        r#"{"device_code":"D","user_code":"U","verification_uri":"https://x.example/device","expires_in":60,"interval":1}"#,
    ));
    server.push(Scripted::new(400, pending));
    server.push(Scripted::new(400, r#"{"error":"authorization_declined"}"#));
    let login_url = format!("http://{}", server.addr);
    let client = SignIn::new(Authority { login_url, tenant: "t".into(), client_id: "c".into() }).unwrap();
    let code = client.device_code().await.unwrap();
    let mut waits = Vec::new();
    let started = Instant::now();
    let result = client.wait_for_tokens(&code, |w| waits.push(w)).await;
    assert_eq!(result.unwrap_err(), SignInError::Declined);
    assert_eq!(waits, [Duration::from_secs(1), Duration::from_secs(6)]);
    assert!(started.elapsed() >= Duration::from_secs(7));
    let seen = server.seen();
    assert_eq!(seen[1].path_and_query, "/t/oauth2/v2.0/token");
    let form = String::from_utf8_lossy(&seen[1].body).to_string();
    assert!(
        form.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code")
            && form.contains("device_code=D"),
        "{form}"
    );
    let first = String::from_utf8_lossy(&seen[0].body).to_string();
    assert!(first.contains("scope=offline_access+Files.ReadWrite"), "{first}");
}

#[tokio::test]
async fn tokens_renew_before_they_expire_and_replace_the_refresh_token() {
    let sim = start_sim(signin_sim(Duration::ZERO, Duration::from_secs(3))).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("token.json");
    let mut first = sign_in(&sim).await;
    // A token that lives under a minute is taken to live a minute: renewed at 80 % of that, not
    // before every call.
    let life = first.expires_at - first.obtained_at;
    assert!(life >= chrono::Duration::seconds(60), "a 3 s token counts as living a minute: {life}");
    // Saved as if most of that minute had passed: the next use renews it.
    first.obtained_at = chrono::Utc::now() - chrono::Duration::seconds(58);
    first.expires_at = first.obtained_at + life;
    signin::save(&cache, &first).unwrap();
    let tokens = Tokens::cache(cache.clone());
    let a = first.access_token();
    let started = Instant::now();
    let mut renewed = None;
    while started.elapsed() < Duration::from_secs(10) {
        let t = tokens.get().await.unwrap();
        if t.secret != a {
            renewed = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let renewed = renewed.expect("the token was renewed");
    let on_disk = signin::load(&cache).unwrap().unwrap();
    assert_eq!(on_disk.access_token(), renewed.secret, "the cache holds the new token");
    // Judged by the times the tokens carry, not by how fast this machine polled: the renewal
    // came once 80 % of the first token's life had passed, and before it ran out.
    assert!(
        on_disk.obtained_at >= first.renew_at(),
        "renewed too early: {} < {}",
        on_disk.obtained_at,
        first.renew_at()
    );
    assert!(on_disk.obtained_at < first.expires_at, "renewed after the token expired");
    // The old refresh token was consumed: using the first sign-in again fails.
    let again = SignIn::new(authority(&sim)).unwrap().renew(&first).await;
    assert!(matches!(again, Err(SignInError::SignInRequired(_))));
}

async fn tracked(sim: &RunningSim, tokens: &Tokens) -> TrackedSession {
    let graph = LiveGraph::new(client(&sim.graph_url()), tokens.clone());
    let workbook = WorkbookRef::parse("me/drive/items/W1").unwrap();
    let report = ops::create(&*graph, &workbook, Mode::Persistent, &Clock::system()).await;
    TrackedSession::new("a".into(), workbook, report.new_session_id.unwrap(), Mode::Persistent, chrono::Utc::now())
}

#[tokio::test]
async fn a_401_renews_the_token_once_and_the_call_goes_through() {
    let config =
        SimConfig { token: Some("only-issued-tokens".into()), ..signin_sim(Duration::ZERO, Duration::from_secs(3600)) };
    let sim = start_sim(config).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("token.json");
    signin::save(&cache, &sign_in(&sim).await).unwrap();
    let tokens = Tokens::cache(cache.clone());
    let session = tracked(&sim, &tokens).await;
    let issued = sim.sim.stats().tokens_issued;

    sim.sim.expire_access_tokens();
    let graph = LiveGraph::new(client(&sim.graph_url()), tokens.clone());
    let clock = Clock::system();
    let report = ops::refresh(&*graph, &session, &clock).await;
    assert!(report.succeeded(), "{:?}", report.failure);
    assert_eq!(sim.sim.stats().tokens_issued, issued + 1, "exactly one renewal");

    // With the refresh token revoked too, the session shows `auth` and says what to do.
    sim.sim.expire_access_tokens();
    sim.sim.revoke_refresh_tokens();
    let report = ops::refresh(&*graph, &session, &clock).await;
    let last = report.outcomes.last().unwrap();
    assert_eq!(last.kind, OutcomeKind::Auth);
    assert!(report.failure.unwrap().to_string().contains("wbsessions login"));
    assert!(matches!(tokens.get().await, Err(AuthError::SignInRequired(_))));
    // A new sign-in written by another process is picked up without a restart.
    signin::save(&cache, &sign_in(&sim).await).unwrap();
    assert!(ops::refresh(&*graph, &session, &clock).await.succeeded());
}

#[test]
fn login_run_whoami_logout_through_the_binary() {
    let sim = SimThread::start(signin_sim(Duration::from_millis(200), Duration::from_secs(2)), Clock::system());
    let login_url = sim.url.trim_end_matches("/v1.0").to_string();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&sim.url, dir.path());
    let no_token = |args: &[&str]| {
        let mut command = cli.command(args);
        command.env_remove("WBSESSIONS_TOKEN");
        command.output().unwrap()
    };
    let out = no_token(&["login"]);
    assert_eq!(out.status.code(), Some(2), "no client id anywhere");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Files.ReadWrite"));

    let out = no_token(&["login", "--client-id", "X", "--login-url", &login_url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Simulated User"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("enter the code"));
    let cache = cli.home.join("data/wbsessions/token.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let whoami = no_token(&["whoami"]);
    let text = String::from_utf8_lossy(&whoami.stdout).to_string();
    assert!(text.contains("Simulated User") && text.contains("organizations"), "{text}");
    let token_text = std::fs::read_to_string(&cache).unwrap();
    let secret =
        |key: &str| token_text.split(&format!("\"{key}\": \"")).nth(1).unwrap().split('"').next().unwrap().to_string();
    assert!(!text.contains(&secret("access_token")));

    assert!(no_token(&["create", "a", "--workbook", "me/drive/items/W1", "--interval", "1s"]).status.success());
    let mut keeper = {
        let mut c = cli.command(&["run"]);
        c.env_remove("WBSESSIONS_TOKEN");
        c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap()
    };
    wait_for("two renewals", Duration::from_secs(10), || {
        log_text(&cli.home).matches("renewed the access token").count() >= 2
    });
    sigterm(&keeper);
    assert!(keeper.wait().unwrap().success());
    let log_text = log_text(&cli.home);
    let final_tokens = std::fs::read_to_string(&cache).unwrap();
    for (key, first) in [("access_token", secret("access_token")), ("refresh_token", secret("refresh_token"))] {
        assert!(!log_text.contains(&first), "the log holds a {key}");
        let now = final_tokens.split(&format!("\"{key}\": \"")).nth(1).unwrap().split('"').next().unwrap();
        assert!(!log_text.contains(now), "the log holds the current {key}");
    }
    assert!(!log_text.contains("simtok-") && !log_text.contains("simrefresh-"));
    let store_bytes = std::fs::read(&cli.store).unwrap();
    assert!(!store_bytes.windows(7).any(|w| w == b"simtok-"), "the store holds a token");

    assert!(no_token(&["logout"]).status.success());
    let out = no_token(&["refresh", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wbsessions login"));
}
