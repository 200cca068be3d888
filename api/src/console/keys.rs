//! `/console/keys` and `/console/sessions` (admins): API keys (list, create — the key shown
//! once — revoke) and the console's live sessions (list, revoke).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use ordo_commands::channels::ChannelId;
use sqlx::PgPool;
use uuid::Uuid;

use super::layout::{self, page, Nav};
use super::session::{self, Session, Signed};
use super::{see_other, ConsoleError, Form};
use crate::auth::{self, Role};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/keys", get(list).post(create))
        .route("/console/keys/{id}/revoke", post(revoke))
        .route("/console/sessions", get(sessions))
        .route("/console/sessions/{id}/revoke", post(revoke_session))
}

type KeyRow = (
    Uuid,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

async fn keys(pool: &PgPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, role, channel, created_at, revoked_at FROM auth.api_keys
          ORDER BY revoked_at IS NOT NULL, created_at DESC LIMIT 1000",
    )
    .fetch_all(pool)
    .await
}

fn id_param(raw: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(raw).map_err(|_| ConsoleError::NotFound("not an id".into()))
}

async fn render(
    app: &AppState,
    session: &Session,
    created: Option<(Role, String)>,
) -> Result<Markup, ConsoleError> {
    let rows = keys(&app.pool).await?;
    let channels = ordo_commands::channels::list(&app.pool).await?;
    let body = html! {
        @if let Some((role, secret)) = &created {
            div.created role="status" {
                p { "New " (role) " key — copy it now, it is not shown again:" }
                input #new-key type="text" readonly value=(secret) aria-label="The new key";
            }
        }
        form.inline method="post" action="/console/keys" {
            (layout::csrf(session))
            label for="key-name" { "Name" }
            input #key-name type="text" name="name" required maxlength="100";
            label for="key-role" { "Role" }
            select #key-role name="role" { @for role in Role::ALL { option value=(role) { (role) } } }
            label for="key-channel" { "Channel" }
            select #key-channel name="channel" {
                option value="" { "global (storefront: default)" }
                @for c in &channels { option value=(c.id) { (c.id) " — " (c.name) } }
            }
            button type="submit" { "Create key" }
        }
        table {
            thead { tr { th { "Name" } th { "Role" } th { "Channel" } th { "Created" } th { "State" } th {} } }
            tbody { @for (id, name, role, channel, created_at, revoked_at) in &rows { tr {
                td { (name) } td { (role) }
                td.channel { @if let Some(c) = channel { (c) } @else { em { "global" } } }
                td { (layout::time(created_at)) }
                td { @if let Some(at) = revoked_at { "revoked " (layout::time(at)) } @else { "active" } }
                td { @if revoked_at.is_none() && *id != session.caller.key_id {
                    form method="post" action=(format!("/console/keys/{id}/revoke")) {
                        (layout::csrf(session))
                        button type="submit" aria-label=(format!("Revoke {name}")) { "Revoke" }
                    }
                } }
            } } }
        }
        p { a href="/console/sessions" { "Console sessions" } }
    };
    Ok(page(session, "API keys", Nav::Keys, body))
}

async fn list(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
) -> Result<Markup, ConsoleError> {
    render(&app, &session, None).await
}

/// Create a key and show it once, on this response only (never stored but hashed).
async fn create(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    let name = form
        .text("name")
        .filter(|n| n.chars().count() <= 100 && !n.contains('\0'))
        .ok_or_else(|| {
            ConsoleError::BadInput("Give the key a name of at most 100 characters.".into())
        })?;
    let role: Role = form
        .get("role")
        .unwrap_or("")
        .parse()
        .map_err(ConsoleError::BadInput)?;
    // Empty: the role's default (`default` for a storefront key, global for the others).
    let channel = match form.text("channel") {
        None => None,
        Some(raw) => {
            let id = ChannelId::parse(raw).map_err(ConsoleError::BadInput)?;
            if !ordo_commands::channels::exists(&app.pool, id.as_str()).await? {
                return Err(ConsoleError::BadInput(format!(
                    "There is no channel `{}`.",
                    id.as_str()
                )));
            }
            Some(id)
        }
    };
    let secret = auth::create_key_in(
        &app.pool,
        role,
        name,
        channel.as_ref().map(ChannelId::as_str),
    )
    .await?;
    tracing::info!(key.role = %role, key.channel = ?channel.as_ref().map(ChannelId::as_str),
        by = %session.caller.key_id, "console created an API key");
    Ok(render(&app, &session, Some((role, secret)))
        .await?
        .into_response())
}

async fn revoke(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    let id = id_param(&id)?;
    let done = sqlx::query(
        "UPDATE auth.api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(&app.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ConsoleError::NotFound("No active key has this id.".into()));
    }
    crate::keys::announce_revoked(&app.pool, id).await?;
    tracing::info!(key.id = %id, by = %session.caller.key_id, "console revoked an API key");
    Ok(see_other("/console/keys"))
}

async fn sessions(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
) -> Result<Markup, ConsoleError> {
    let rows = session::list(&app.pool).await?;
    let body = html! {
        table {
            thead { tr { th { "Key" } th { "Role" } th { "Browser" } th { "Signed in" } th { "Last seen" } th { "Expires" } th {} } }
            tbody { @for s in &rows { tr {
                td { (s.key_name) } td { (s.role) } td { (s.user_agent.clone().unwrap_or_default()) }
                td { (layout::time(&s.created_at)) } td { (layout::time(&s.last_seen_at)) } td { (layout::time(&s.expires_at)) }
                td { @if s.id == session.id { "this session" } @else {
                    form method="post" action=(format!("/console/sessions/{}/revoke", s.id)) {
                        (layout::csrf(&session))
                        button type="submit" { "End" }
                    }
                } }
            } } }
        }
    };
    Ok(page(&session, "Console sessions", Nav::Keys, body))
}

async fn revoke_session(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    session::revoke(&app.pool, id_param(&id)?).await?;
    Ok(see_other("/console/sessions"))
}
