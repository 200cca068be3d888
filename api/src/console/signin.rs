//! Sign-in with an API key (pasted once; only the session's token lives in the browser),
//! and sign-out.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;

use super::layout::page_without_session;
use super::session::{self, Signed, SESSION_COOKIE, SIGNIN_COOKIE};
use super::{see_other, ConsoleError, Form};
use crate::auth;
use crate::{ApiError, AppState, Caller};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/sign-in", get(form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
}

fn secure(app: &AppState) -> bool {
    app.config.console_secure_cookie
}

/// The sign-in form. Its CSRF token is also set as a short-lived cookie (double submit):
/// a sign-in posted from another site carries neither.
async fn form(State(app): State<AppState>) -> Response {
    render(&app, StatusCode::OK, None)
}

fn render(app: &AppState, status: StatusCode, problem: Option<&str>) -> Response {
    let token = session::random_token();
    let body = html! {
        @if let Some(problem) = problem { p.problem role="alert" { (problem) } }
        form.signin method="post" action="/console/sign-in" {
            input type="hidden" name="csrf" value=(token);
            label for="key" { "API key" }
            input #key type="password" name="key" autocomplete="off" required autofocus;
            p.hint { "The key is checked once; the console then keeps a session of its own, which ends after "
                (session::SESSION_TTL.num_hours()) " hours or when you sign out." }
            button type="submit" { "Sign in" }
        }
    };
    let cookie = session::set_cookie(SIGNIN_COOKIE, &token, 900, secure(app));
    (
        status,
        [(SET_COOKIE, cookie)],
        page_without_session("Sign in", body),
    )
        .into_response()
}

async fn sign_in(State(app): State<AppState>, request: Request) -> Result<Response, ConsoleError> {
    let (parts, body) = request.into_parts();
    let expected = session::cookie(&parts, SIGNIN_COOKIE).map(str::to_owned);
    let user_agent = session::user_agent(&parts).map(str::to_owned);
    let form = <Form as axum::extract::FromRequest<AppState>>::from_request(
        Request::from_parts(parts, body),
        &app,
    )
    .await?;
    match (expected, form.get("csrf")) {
        (Some(e), Some(got)) if session::same(e.as_bytes(), got.as_bytes()) => {}
        _ => return Err(ConsoleError::Csrf),
    }
    let Some(key) = form.text("key") else {
        return Ok(render(
            &app,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Paste an API key."),
        ));
    };
    let caller = match authenticate(&app, key).await {
        Ok(caller) => caller,
        Err(ApiError::Unauthorized) => {
            return Ok(render(
                &app,
                StatusCode::UNAUTHORIZED,
                Some("This key is unknown or revoked."),
            ))
        }
        Err(err) => return Err(err.into()),
    };
    let token = session::create(&app.pool, &caller, user_agent.as_deref()).await?;
    tracing::info!(key.id = %caller.key_id, role = %caller.role, "console sign-in");
    let max_age = session::SESSION_TTL.num_seconds();
    let mut response = see_other("/console");
    let headers = response.headers_mut();
    for cookie in [
        session::set_cookie(SESSION_COOKIE, &token, max_age, secure(&app)),
        session::set_cookie(SIGNIN_COOKIE, "", 0, secure(&app)),
    ] {
        if let Ok(value) = cookie.parse() {
            headers.append(SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// The key checked exactly as the API checks a `Bearer` key.
async fn authenticate(app: &AppState, key: &str) -> Result<Caller, ApiError> {
    let request = Request::builder()
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .body(())
        .map_err(|_| ApiError::Unauthorized)?;
    let (parts, ()): (Parts, ()) = request.into_parts();
    Caller::authenticate(&parts, app).await
}

async fn sign_out(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Readers>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    session::revoke(&app.pool, session.id).await?;
    let mut response = see_other("/console/sign-in");
    if let Ok(value) = session::set_cookie(SESSION_COOKIE, "", 0, secure(&app)).parse() {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    Ok(response)
}

/// Shown to a signed-in role with no console page of its own (storefront keys).
pub fn nothing_here() -> maud::Markup {
    html! {
        p { "This key's role has no console pages. The console shows what a key may read or do through the API; sign in with a support, analyst or admin key." }
    }
}
