//! Entering the console: the session cookie, the login link, an admin's Clerk session, CSRF.

use axum::{
    extract::{FromRequestParts, Query, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use granary_jobs::operator::console::{self, Session};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::views;
use crate::{AppState, auth::Admin};

/// The session cookie's name.
pub const COOKIE: &str = "granary_console";

/// A logged-in operator.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The live session.
    pub session: Session,
}

impl Operator {
    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), Refused> {
        if bool::from(token.as_bytes().ct_eq(self.session.csrf_token.as_bytes())) {
            Ok(())
        } else {
            Err(Refused {
                status: StatusCode::FORBIDDEN,
                title: "Refused",
                text: "This form did not come from your console session (its CSRF token is missing or stale). Reload the page and try again.".into(),
            })
        }
    }
}

/// A console request refused, shown as a page.
#[derive(Debug)]
pub struct Refused {
    /// The answer's status.
    pub status: StatusCode,
    /// The page's title.
    pub title: &'static str,
    /// What happened and what to do.
    pub text: String,
}

impl Refused {
    /// The database did not answer (logged; the page says to try again).
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "console request failed");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Unavailable",
            text: "The database did not answer. Try again.".into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.status, views::message(self.title, &self.text)).into_response()
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if let Some(token) = crate::auth::cookie(&parts.headers, COOKIE) {
            match console::session(&state.pool, token).await {
                Ok(Some(session)) => return Ok(Self { session }),
                Ok(None) => {}
                Err(e) => return Err(Refused::unavailable(e).into_response()),
            }
        }
        // An admin signed in to the dashboard with Clerk enters without a link.
        if crate::auth::session_token(parts).is_some()
            && Admin::from_request_parts(parts, state).await.is_ok()
        {
            let back = parts
                .uri
                .path_and_query()
                .map_or("/console/", |p| p.as_str());
            let to = format!("/console/login/clerk?next={}", urlencode(back));
            return Err(Redirect::to(&to).into_response());
        }
        Err(Redirect::to("/console/login-help").into_response())
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Only paths inside the console are followed after a login, and only those made of visible
/// ASCII: a CR or LF (`%0d%0a`) would split the redirect's header.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/console")
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/console/",
    }
}

fn session_cookie(state: &AppState, token: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.is_development() {
        ""
    } else {
        "; Secure"
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("hex token and fixed attributes make a valid header")
}

fn enter(state: &AppState, token: &str, session: &Session, next: &str) -> Response {
    let max_age = (session.expires_at - chrono::Utc::now())
        .num_seconds()
        .max(0);
    let mut r = Redirect::to(next).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(state, token, max_age));
    r
}

/// `?token=` of a login link.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

/// `GET /console/login?token=`: spends a one-time link and opens a session.
pub async fn login(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let Some(token) = q.token.filter(|t| !t.is_empty()) else {
        return Redirect::to("/console/login-help").into_response();
    };
    match console::redeem_login_link(&state.pool, &token).await {
        Ok(Some((cookie, session))) => enter(&state, &cookie, &session, "/console/"),
        Ok(None) => (
            StatusCode::UNAUTHORIZED,
            views::message(
                "This login link cannot be used",
                "It was already used, it expired, or it was never issued. Ask for a new one: granary-worker console login-link",
            ),
        )
            .into_response(),
        Err(e) => Refused::unavailable(e).into_response(),
    }
}

/// `?next=` after a login.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /console/login/clerk`: an admin's Clerk session opens a console session.
pub async fn login_clerk(
    State(state): State<AppState>,
    user: Result<Admin, crate::ApiError>,
    Query(q): Query<NextQuery>,
) -> Response {
    let Ok(Admin(user)) = user else {
        return Redirect::to("/console/login-help").into_response();
    };
    let next = safe_next(q.next.as_deref());
    match console::open_for_admin(&state.pool, &user.clerk_user_id).await {
        Ok((cookie, session)) => enter(&state, &cookie, &session, next),
        Err(e) => Refused::unavailable(e).into_response(),
    }
}

/// `GET /console/login-help`: how to log in.
pub async fn login_help() -> Response {
    views::login_help().into_response()
}

/// The CSRF field of a form.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /console/logout`: ends this session.
pub async fn logout(
    State(state): State<AppState>,
    op: Operator,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = op.check_csrf(&f.csrf) {
        return r.into_response();
    }
    if let Err(e) = console::end_sessions(&state.pool, Some(op.session.id), &op.session.actor).await
    {
        tracing::error!(error = %e, "console logout failed");
    }
    let mut r = Redirect::to("/console/login-help").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    r
}
