//! The simulator's sign-in endpoints: the device code flow and refresh-token grants (docs/graph.md, "Sign-in").

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::Sim;
use super::graph::SimResponse;

const DEVICE_CODE_LIFETIME_SECS: i64 = 900;
const POLL_INTERVAL_SECS: i64 = 1;

#[derive(Debug)]
struct DeviceCode {
    user_code: String,
    issued: DateTime<Utc>,
    last_poll: Option<DateTime<Utc>>,
    declined: bool,
    redeemed: bool,
}

#[derive(Default)]
pub(super) struct SignInState {
    device_codes: HashMap<String, DeviceCode>,
    /// access token → expiry
    access_tokens: HashMap<String, DateTime<Utc>>,
    refresh_tokens: HashMap<String, ()>,
}

fn oauth_error(code: &str, description: &str) -> SimResponse {
    SimResponse {
        status: StatusCode::BAD_REQUEST,
        headers: Vec::new(),
        body: Some(json!({
            "error": code,
            "error_description": description,
            "error_codes": [],
            "timestamp": Utc::now().to_rfc3339(),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        })),
    }
}

pub(super) fn handle(sim: &Sim, method: &Method, path: &str, body: &[u8]) -> SimResponse {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let endpoint = match parts.as_slice() {
        [_tenant, "oauth2", "v2.0", endpoint] if method == Method::POST => *endpoint,
        ["devicelogin"] => {
            return SimResponse {
                status: StatusCode::OK,
                headers: Vec::new(),
                body: Some(json!({ "message": "Simulated sign-in page: codes are approved automatically." })),
            };
        }
        _ => {
            return SimResponse {
                status: StatusCode::NOT_FOUND,
                headers: Vec::new(),
                body: Some(json!({ "error": "not_found", "error_description": format!("nothing at {path}") })),
            };
        }
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("client_id").is_none_or(|c| c.is_empty()) {
        return oauth_error(
            "invalid_request",
            "AADSTS900144: The request body must contain the parameter 'client_id'.",
        );
    }
    match endpoint {
        "devicecode" => sim.issue_device_code(),
        "token" => match form.get("grant_type").map(String::as_str) {
            Some("urn:ietf:params:oauth:grant-type:device_code") => {
                sim.redeem_device_code(form.get("device_code").map(String::as_str).unwrap_or_default())
            }
            Some("refresh_token") => {
                sim.redeem_refresh_token(form.get("refresh_token").map(String::as_str).unwrap_or_default())
            }
            _ => oauth_error("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type."),
        },
        _ => oauth_error("invalid_request", "Unknown endpoint."),
    }
}

impl Sim {
    fn issue_device_code(&self) -> SimResponse {
        let device_code = self.random_text(64);
        let user_code: String = self.random_text(40).chars().filter(char::is_ascii_uppercase).take(8).collect();
        let user_code = format!("{user_code:A<8}");
        let now = self.clock.now();
        self.state().signin.device_codes.insert(
            device_code.clone(),
            DeviceCode { user_code: user_code.clone(), issued: now, last_poll: None, declined: false, redeemed: false },
        );
        let verification_uri = format!("{}/devicelogin", self.base_url());
        SimResponse {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Some(json!({
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": verification_uri,
                "expires_in": DEVICE_CODE_LIFETIME_SECS,
                "interval": POLL_INTERVAL_SECS,
                "message": format!("To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate."),
            })),
        }
    }

    fn redeem_device_code(&self, device_code: &str) -> SimResponse {
        let now = self.clock.now();
        let approve_after = chrono::Duration::from_std(self.config.approve_after).unwrap_or(chrono::Duration::zero());
        {
            let mut state = self.state();
            let Some(code) = state.signin.device_codes.get_mut(device_code) else {
                return oauth_error("bad_verification_code", "AADSTS70019: The device code is unknown.");
            };
            if code.redeemed || now - code.issued >= chrono::Duration::seconds(DEVICE_CODE_LIFETIME_SECS) {
                return oauth_error("expired_token", "AADSTS70020: The device code has expired.");
            }
            if code.declined {
                return oauth_error("authorization_declined", "AADSTS70016: The user declined the sign-in.");
            }
            let too_soon = code
                .last_poll
                .is_some_and(|t| now - t < chrono::Duration::milliseconds(POLL_INTERVAL_SECS * 1000 - 200));
            code.last_poll = Some(now);
            if too_soon {
                return oauth_error("slow_down", "AADSTS70000: Polling too fast; slow down.");
            }
            if now - code.issued < approve_after {
                return oauth_error("authorization_pending", "AADSTS70016: The user has not yet finished signing in.");
            }
            code.redeemed = true;
        }
        self.grant_tokens()
    }

    fn redeem_refresh_token(&self, refresh_token: &str) -> SimResponse {
        if self.state().signin.refresh_tokens.remove(refresh_token).is_none() {
            return oauth_error("invalid_grant", "AADSTS70008: The refresh token has expired or was revoked.");
        }
        self.grant_tokens()
    }

    fn grant_tokens(&self) -> SimResponse {
        let access = format!("simtok-{}", self.random_text(48));
        let refresh = format!("simrefresh-{}", self.random_text(48));
        let lifetime = self.config.token_lifetime;
        let expires = self.clock.now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1));
        {
            let mut state = self.state();
            state.signin.access_tokens.insert(access.clone(), expires);
            state.signin.refresh_tokens.insert(refresh.clone(), ());
            state.stats.tokens_issued += 1;
        }
        SimResponse {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Some(json!({
                "token_type": "Bearer",
                "scope": "Files.ReadWrite",
                "expires_in": lifetime.as_secs().max(1),
                "ext_expires_in": lifetime.as_secs().max(1),
                "access_token": access,
                "refresh_token": refresh,
            })),
        }
    }

    /// Whether a bearer token opens the Graph endpoints: `--token`, a live token this simulator
    /// issued, or (with no `--token`) any other non-empty token.
    pub(super) fn accepts_token(&self, token: &str) -> bool {
        if token.is_empty() {
            return false;
        }
        if self.config.token.as_deref() == Some(token) {
            return true;
        }
        match self.state().signin.access_tokens.get(token) {
            Some(expires) => *expires > self.clock.now(),
            None => self.config.token.is_none(),
        }
    }

    /// The user declines the sign-in that showed this code.
    pub fn decline(&self, user_code: &str) -> bool {
        let mut state = self.state();
        let code = state.signin.device_codes.values_mut().find(|c| c.user_code == user_code);
        code.map(|c| c.declined = true).is_some()
    }

    /// Every access token issued so far expires now: the next call with one gets a 401.
    pub fn expire_access_tokens(&self) {
        let now = self.clock.now();
        for expiry in self.state().signin.access_tokens.values_mut() {
            *expiry = now;
        }
    }

    /// Every refresh token stops working, as after a password change.
    pub fn revoke_refresh_tokens(&self) {
        self.state().signin.refresh_tokens.clear();
    }
}
