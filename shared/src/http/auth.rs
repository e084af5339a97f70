//! Signing in to the control room. The pages show commits and act on production, so only the
//! people in the configuration see them: the pipelines' approvers (who may act) and
//! `[[dashboard.viewers]]` (who may only look). Anonymous visitors get the sign-in page, never
//! run data.
//!
//! - A **sign-in link** (`/login/<token>`, from `slipway login-link --as alice`) is a token
//!   signed with the link-signing keys, like approval links: it names the person and expires.
//!   Opening it shows a button (GET changes nothing; link scanners open every URL); the button
//!   POSTs and sets the session cookie.
//! - The **session** is another signed token in an `HttpOnly`, `SameSite=Strict` cookie
//!   (`Secure` when `public_url` is https), valid for `[dashboard] session`. Nothing is stored
//!   per session: a person removed from the configuration is refused at their next request,
//!   and rotating the signing key (dropping the old one from `previous_keys`) ends every
//!   session and link it signed.
//! - Forms carry a **CSRF token** derived from the session (an HMAC of it under the signing
//!   key), checked in constant time.
//! - Scripts read the JSON API with `Authorization: Bearer <token>`, the value of
//!   `[dashboard] api_token`'s parameter; they may read, never act.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};
use jiff::{SignedDuration, Timestamp};
use secrecy::ExposeSecret;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::{ApiError, AppState, PageError, pages};
use crate::app::{App, EngineError};
use crate::approvals::{SignIn, SignInKind, TokenError};
use crate::config::{AuthMode, DashboardConfig, Role};
use crate::domain::ApproverId;

/// The session cookie's name.
pub const COOKIE: &str = "slipway_session";

/// How long a sign-in link works unless asked otherwise.
pub const SIGN_IN_LINK_VALIDITY: SignedDuration = SignedDuration::from_hours(24);

/// Why no sign-in link can be made.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(
        "{0} may not sign in: list them as an approver of a pipeline, or under [[dashboard.viewers]], in the configuration"
    )]
    NotAllowed(ApproverId),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A sign-in link for `who`, valid for `valid` from now.
pub async fn sign_in_link(app: &App, who: &ApproverId, valid: SignedDuration) -> Result<String, SignInError> {
    if app.config.role_of(who).is_none() {
        return Err(SignInError::NotAllowed(who.clone()));
    }
    let expires_at = app.clock.now().checked_add(valid).unwrap_or(Timestamp::MAX);
    let token = app.seal_token(&SignIn::link(who.clone(), expires_at)).await?;
    Ok(app.url(&["login", &token]).into())
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Who {
    /// A person from the configuration, signed in.
    Person(ApproverId),
    /// A script with the API token.
    ApiToken,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Person(id) => write!(f, "{id}"),
            Who::ApiToken => f.write_str("API token"),
        }
    }
}

/// Someone signed in, or a script with the API token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Who,
    pub role: Role,
    /// The token this session's forms carry (none for the API token: it may not act).
    pub csrf: Option<String>,
}

impl Caller {
    /// Checks a form's CSRF token against this session's, in constant time.
    pub fn csrf_matches(&self, sent: &str) -> bool {
        self.csrf
            .as_deref()
            .is_some_and(|ours| bool::from(ours.as_bytes().ct_eq(sent.as_bytes())))
    }
}

/// Who sent `headers` over a connection from `peer`: the API token, a person the
/// authenticating proxy names (with `[dashboard] auth = "proxy"`, on a connection from one of
/// its addresses only), or a valid session cookie. `None`: nobody we know.
pub async fn identify(app: &App, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<Option<Caller>, EngineError> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        let Some(param) = &app.config.dashboard.api_token else {
            return Ok(None);
        };
        let token = app.secret(param).await?;
        let (ours, sent) = (token.expose_secret().trim(), bearer.trim());
        // An empty token (a parameter left blank) matches nothing.
        let matches = !ours.is_empty() && bool::from(ours.as_bytes().ct_eq(sent.as_bytes()));
        return Ok(matches.then_some(Caller {
            who: Who::ApiToken,
            role: Role::Viewer,
            csrf: None,
        }));
    }
    if let Some(caller) = from_proxy(app, headers, peer).await? {
        return Ok(Some(caller));
    }
    let Some(session) = session_cookie(headers) else {
        return Ok(None);
    };
    let claim = match app.open_token::<SignIn>(&session).await? {
        Ok(claim) if claim.kind == SignInKind::Session && app.clock.now() < claim.expires_at => claim,
        _ => return Ok(None),
    };
    let Some(role) = app.config.role_of(&claim.who) else {
        return Ok(None);
    };
    Ok(Some(Caller {
        who: Who::Person(claim.who),
        role,
        csrf: Some(csrf_of(app, &session).await?),
    }))
}

/// The person an authenticating proxy names, if slipway trusts one and this request came
/// through it. A request with the header from any other address is treated as if it had none.
async fn from_proxy(app: &App, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<Option<Caller>, EngineError> {
    let dashboard = &app.config.dashboard;
    let (AuthMode::Proxy, Some(header)) = (dashboard.auth, dashboard.proxy_header.as_deref()) else {
        return Ok(None);
    };
    let Some(value) = headers.get(header).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if !peer.is_some_and(|ip| dashboard.proxy_addresses.contains(&ip)) {
        tracing::warn!(
            header,
            "the proxy's identity header came from an address that is not the proxy's; ignored"
        );
        return Ok(None);
    }
    let Some(who) = DashboardConfig::person_named(&app.config, value) else {
        return Ok(None);
    };
    let Some(role) = app.config.role_of(&who) else {
        return Ok(None);
    };
    let csrf = csrf_of(app, &format!("proxy.{}", who.as_str().to_ascii_lowercase())).await?;
    Ok(Some(Caller {
        who: Who::Person(who),
        role,
        csrf: Some(csrf),
    }))
}

/// The address a request came from, when the server knows it (`slipway serve`).
pub(super) fn peer_of(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_owned())
}

/// The CSRF token of a session: an HMAC of the session token under the signing key.
async fn csrf_of(app: &App, session: &str) -> Result<String, EngineError> {
    let key = app.secret(&app.config.approvals.signing_key).await?;
    let mac = crate::signature::hmac_sha256(key.expose_secret().as_bytes(), &[b"csrf.", session.as_bytes()]);
    Ok(URL_SAFE_NO_PAD.encode(mac))
}

/// A page only people who signed in may see; anyone else gets the sign-in page (401).
#[derive(Debug)]
pub struct SignedIn(pub Caller);

impl FromRequestParts<Arc<App>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        match identify(app, &parts.headers, peer_of(parts)).await {
            Ok(Some(caller)) => Ok(SignedIn(caller)),
            Ok(None) => Err(sign_in_required(app, parts.uri.path())),
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

/// A JSON answer only people who signed in, or scripts with the API token, may have.
#[derive(Debug)]
pub struct ApiCaller(pub Caller);

impl FromRequestParts<Arc<App>> for ApiCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        match identify(app, &parts.headers, peer_of(parts)).await {
            Ok(Some(caller)) => Ok(ApiCaller(caller)),
            Ok(None) => {
                let mut response = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "sign in first (open your sign-in link), or send the API token as `Authorization: Bearer <token>`",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Err(response)
            }
            Err(e) => Err(ApiError::from(e).into_response()),
        }
    }
}

/// The sign-in page, answered with 401 where a page needs a signed-in person. `path` is the
/// page asked for: a person who is signed in but whose cookie the browser held back (it does
/// on a link followed from another site: the cookie is `SameSite=Strict`) continues there.
pub(super) fn sign_in_required(app: &App, path: &str) -> Response {
    let page = pages::sign_in(&app.link(path));
    (StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response()
}

/// `GET /login`: how to sign in.
pub(super) async fn login_page(axum::extract::State(app): AppState) -> Html<String> {
    Html(pages::sign_in(&app.link("/")).into_string())
}

/// Checks a sign-in link: who it signs in, or the page saying why it cannot.
async fn open_link(app: &App, token: &str) -> Result<SignIn, PageError> {
    let claim = match app.open_token::<SignIn>(token).await? {
        Ok(claim) if claim.kind == SignInKind::Link => claim,
        Ok(_) | Err(TokenError::WrongAction { .. } | TokenError::Malformed) => {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "Not a sign-in link",
                "This is not a slipway sign-in link. Ask whoever runs slipway for one: slipway login-link --as <your id>.",
            ));
        }
        Err(e) => {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "Not a valid sign-in link",
                format!("{e}. Ask whoever runs slipway for a new one: slipway login-link --as <your id>."),
            ));
        }
    };
    if app.clock.now() >= claim.expires_at {
        return Err(PageError::new(
            StatusCode::GONE,
            "This sign-in link expired",
            format!(
                "It worked until {}. Ask whoever runs slipway for a new one: slipway login-link --as {}.",
                claim.expires_at, claim.who
            ),
        ));
    }
    if app.config.role_of(&claim.who).is_none() {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "You may not sign in",
            format!(
                "{} is no longer an approver or a viewer in slipway's configuration.",
                claim.who
            ),
        ));
    }
    Ok(claim)
}

/// `GET /login/{token}`: who the link signs in, and a button. Changes nothing.
pub(super) async fn confirm_login(
    axum::extract::State(app): AppState,
    Path(token): Path<String>,
) -> Result<Html<String>, PageError> {
    let claim = open_link(&app, &token).await?;
    Ok(Html(pages::confirm_sign_in(claim.who.as_str()).into_string()))
}

/// `POST /login/{token}`: starts a session and goes to the overview.
pub(super) async fn login(
    axum::extract::State(app): AppState,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let claim = open_link(&app, &token).await?;
    let expires_at = app
        .clock
        .now()
        .checked_add(app.config.dashboard.session)
        .unwrap_or(Timestamp::MAX);
    let session = app
        .seal_token(&SignIn {
            kind: SignInKind::Session,
            who: claim.who.clone(),
            expires_at,
        })
        .await?;
    tracing::info!(who = %claim.who, until = %expires_at, "signed in");
    let max_age = cookie::time::Duration::seconds(app.config.dashboard.session.as_secs());
    let cookie = session_cookie_for(&app, session).max_age(max_age).build();
    Ok(redirect_setting(&app.link("/"), &cookie))
}

#[derive(Debug, Deserialize)]
pub(super) struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session in this browser and shows the sign-in page.
pub(super) async fn logout(
    axum::extract::State(app): AppState,
    SignedIn(caller): SignedIn,
    axum::extract::Form(form): axum::extract::Form<SignOutForm>,
) -> Result<Response, PageError> {
    if !caller.csrf_matches(&form.csrf) {
        return Err(csrf_refused());
    }
    tracing::info!(who = %caller.who, "signed out");
    let cookie = session_cookie_for(&app, String::new()).removal().build();
    Ok(redirect_setting(&app.link("/login"), &cookie))
}

/// The page for a form whose CSRF token is missing or wrong.
pub(super) fn csrf_refused() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "This form is out of date",
        "The form was not sent from slipway's own page in this session (its security token is missing or wrong). \
         Nothing was changed: go back, reload the page and try again.",
    )
}

/// The session cookie, as every answer sets it: `HttpOnly`, `SameSite=Strict`, for the
/// paths under `public_url`, and `Secure` when `public_url` is https.
fn session_cookie_for(app: &App, value: String) -> cookie::CookieBuilder<'static> {
    let path = app.public_url.path().trim_end_matches('/');
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    };
    Cookie::build((COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(app.public_url.scheme() == "https")
        .path(path)
}

fn redirect_setting(to: &str, cookie: &Cookie<'_>) -> Response {
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
