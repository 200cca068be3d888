//! `/console/workers` (admins): each worker's lag and state, dead letters with their payload
//! and last error (redrive one or all), and replay from a position or a time. The status
//! part is a polled fragment. Every action goes through `ordo_workers::ops`, as the API's.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup};
use ordo_workers::ops::{DeadLetter, ReplayFrom};
use serde_json::Value;
use uuid::Uuid;

use super::layout::{self, page, Nav};
use super::session::{Session, Signed};
use super::{see_other, ConsoleError, Form};
use crate::auth;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/workers", get(show))
        .route("/console/workers/live", get(live))
        .route("/console/workers/{name}/replay", post(replay))
        .route("/console/dead-letters/{id}/redrive", post(redrive))
        .route("/console/dead-letters/redrive", post(redrive_all))
}

const WORKERS: [&str; 3] = ["notification", "analytics", "integration"];

/// Dead letters one "redrive all" press publishes (as the API's default); press again for
/// the rest.
const REDRIVE_BATCH: i64 = 100;

async fn show(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
) -> Result<Markup, ConsoleError> {
    let body = html! {
        div #workers data-poll="/console/workers/live" data-poll-ms="3000" aria-live="polite" {
            (fragment(&app, &session).await?)
        }
        section aria-labelledby="rp" {
            h2 #rp { "Replay" }
            form.replay method="post" action="/console/workers/notification/replay" data-worker-action {
                (layout::csrf(&session))
                label for="rp-worker" { "Worker" }
                select #rp-worker name="worker" { @for w in WORKERS { option value=(w) { (w) } } }
                label for="rp-pos" { "From position" }
                input #rp-pos type="number" name="from_position" min="1";
                label for="rp-time" { "or from time (UTC)" }
                input #rp-time type="datetime-local" name="from_time" step="1";
                label.check { input type="checkbox" name="reprocess" value="true"; " repeat side effects (e-mails, webhooks)" }
                button type="submit" { "Replay" }
            }
        }
    };
    Ok(page(&session, "Workers", Nav::Workers, body))
}

async fn live(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
) -> Result<Markup, ConsoleError> {
    fragment(&app, &session).await
}

async fn fragment(app: &AppState, session: &Session) -> Result<Markup, ConsoleError> {
    let status = app.workers.status(&app.pool).await.map_err(ApiError::from);
    let letters = app
        .workers
        .dead_letters(&app.pool, None)
        .await
        .map_err(ApiError::from)?;
    let letters = letters.items;
    let ids: Vec<Uuid> = letters.iter().map(|l| l.id).collect();
    let bodies: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
        "SELECT id, body FROM workers.dead_letters WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&app.pool)
    .await?
    .into_iter()
    .collect();
    Ok(html! {
        section aria-labelledby="ws" {
            h2 #ws { "Workers" }
            @match &status {
                Ok(workers) => table {
                    thead { tr { th { "Worker" } th { "Pending" } th { "In flight" } th { "Redelivered" } th { "Dead letters" } th { "Last error" } th { "Redrive" } } }
                    tbody { @for w in workers { tr {
                        th scope="row" { (w.name) }
                        td.num { (opt(w.pending)) } td.num { (opt(w.in_flight)) } td.num { (opt(w.redelivered)) }
                        td.num { (w.dead_letters) }
                        td { span.error { (w.last_error.clone().unwrap_or_else(|| "—".into())) } }
                        td { @if w.dead_letters > 0 {
                            form method="post" action="/console/dead-letters/redrive" {
                                (layout::csrf(session))
                                input type="hidden" name="worker" value=(w.name);
                                button type="submit" {
                                    @if w.dead_letters > REDRIVE_BATCH { "Redrive " (REDRIVE_BATCH) " oldest of " (w.dead_letters) }
                                    @else { "Redrive all " (w.dead_letters) }
                                }
                            }
                        } }
                    } } }
                },
                Err(_) => p.problem { "Worker status is unavailable (NATS cannot be reached); dead letters below come from the database." },
            }
        }
        section aria-labelledby="dl" {
            h2 #dl { "Dead letters" }
            @if letters.is_empty() { (layout::none("dead letters")) }
            @for l in &letters { (letter(session, l, &bodies)) }
        }
    })
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "—".into(), |v| v.to_string())
}

fn letter(session: &Session, l: &DeadLetter, bodies: &HashMap<Uuid, String>) -> Markup {
    let id = l.id;
    let body = bodies.get(&id);
    let pretty = body
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .map_or_else(
            || body.cloned().unwrap_or_default(),
            |v| serde_json::to_string_pretty(&v).unwrap_or_default(),
        );
    html! {
        article.letter data-dead-letter=(id) {
            h3 { (l.worker) " · " code { (l.subject) } }
            p { "Attempts " (l.attempts) " · " (layout::time(&l.created_at))
                @if let Some(at) = &l.redriven_at { " · redriven " (layout::time(at)) } }
            p.error { (l.error) }
            details { summary { "Payload" } pre.json { (pretty) } }
            @if l.redriven_at.is_none() {
                form method="post" action=(format!("/console/dead-letters/{id}/redrive")) {
                    (layout::csrf(session))
                    button type="submit" { "Redrive" }
                }
            }
        }
    }
}

async fn redrive(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    let id =
        Uuid::parse_str(&id).map_err(|_| ConsoleError::NotFound("not a dead letter id".into()))?;
    if !app
        .workers
        .redrive(&app.pool, id)
        .await
        .map_err(ApiError::from)?
    {
        return Err(ConsoleError::NotFound(
            "No dead letter waits with this id.".into(),
        ));
    }
    Ok(see_other("/console/workers"))
}

async fn redrive_all(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    let worker = form
        .text("worker")
        .ok_or_else(|| ConsoleError::BadInput("Choose a worker.".into()))?;
    app.workers
        .redrive_all(&app.pool, worker, REDRIVE_BATCH)
        .await
        .map_err(ApiError::from)?;
    Ok(see_other("/console/workers"))
}

fn replay_from(form: &Form) -> Result<ReplayFrom, ConsoleError> {
    match (form.text("from_position"), form.text("from_time")) {
        (Some(p), None) => p
            .parse()
            .map(ReplayFrom::Position)
            .map_err(|_| ConsoleError::BadInput("The position must be a whole number.".into())),
        (None, Some(t)) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc()))
            .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M").map(|t| t.and_utc()))
            .map(ReplayFrom::Time)
            .map_err(|_| ConsoleError::BadInput("The time must be like 2026-01-31T12:00.".into())),
        _ => Err(ConsoleError::BadInput(
            "Give either a position or a time.".into(),
        )),
    }
}

async fn replay(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Admins>,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    // The form names its worker in a field (a select); the path's is the default.
    let worker = form.text("worker").unwrap_or(&name).to_owned();
    let from = replay_from(&form)?;
    let reprocess = form.get("reprocess") == Some("true");
    app.workers
        .replay(&app.pool, &worker, from, reprocess)
        .await
        .map_err(ApiError::from)?;
    Ok(see_other("/console/workers"))
}
