//! `/console/projections` (the API's projection readers): each read model's state, position,
//! last error and lag over recent minutes; rebuild (rebuilders) with live progress. The
//! status part is a fragment the page's script polls, so progress shows without a reload.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use ordo_projections::status::{self, ProjectionStatus};
use ordo_projections::Projection;
use sqlx::PgPool;

use super::chart::{self, Series};
use super::layout::{self, page, Nav};
use super::session::{Session, Signed};
use super::{see_other, ConsoleError, Form};
use crate::auth;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/projections", get(show))
        .route("/console/projections/live", get(live))
        .route("/console/projections/{name}/rebuild", post(rebuild))
}

/// How often the lag is sampled, and how much of it the chart shows.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const KEEP: usize = 90;

/// Lag samples of every projection over the last [`KEEP`] × [`SAMPLE_EVERY`], taken by this
/// process while it serves the console (the log has no history of lag to read back).
#[derive(Default)]
pub struct LagHistory {
    samples: Mutex<VecDeque<Sample>>,
}

/// When, and each projection's lag in events then.
type Sample = (DateTime<Utc>, Vec<(String, i64)>);

impl LagHistory {
    /// Start sampling; the task ends once the router holding the history is dropped.
    pub fn start(pool: PgPool) -> Arc<Self> {
        let history = Arc::new(Self::default());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Self> = Arc::downgrade(&history);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                loop {
                    tick.tick().await;
                    let Some(history) = weak.upgrade() else {
                        return;
                    };
                    match status::all(&pool).await {
                        Ok(all) => history.record(Utc::now(), &all),
                        Err(e) => tracing::debug!(error = %e, "console lag sample skipped"),
                    }
                }
            });
        }
        history
    }

    fn record(&self, at: DateTime<Utc>, all: &[ProjectionStatus]) {
        let sample = all.iter().map(|p| (p.name.clone(), p.lag_events)).collect();
        if let Ok(mut samples) = self.samples.lock() {
            samples.push_back((at, sample));
            while samples.len() > KEEP {
                samples.pop_front();
            }
        }
    }

    /// One series per projection, `x` in seconds before `now`, ending at `now`'s status.
    fn series(&self, now: DateTime<Utc>, current: &[ProjectionStatus]) -> Vec<Series> {
        let samples: Vec<_> = self
            .samples
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        current
            .iter()
            .map(|p| {
                let mut points: Vec<(f64, f64)> = samples
                    .iter()
                    .filter_map(|(at, sample)| {
                        let lag = sample.iter().find(|(n, _)| *n == p.name)?.1;
                        Some(((*at - now).num_milliseconds() as f64 / 1000.0, lag as f64))
                    })
                    .collect();
                points.push((0.0, p.lag_events as f64));
                Series {
                    name: p.name.clone(),
                    points,
                }
            })
            .collect()
    }
}

async fn show(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::ProjectionReaders>,
    Extension(lag): Extension<Arc<LagHistory>>,
) -> Result<Markup, ConsoleError> {
    let body = html! {
        div #projections data-poll="/console/projections/live" data-poll-ms="2000" aria-live="polite" {
            (fragment(&app, &session, &lag).await?)
        }
    };
    Ok(page(&session, "Projections", Nav::Projections, body))
}

async fn live(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::ProjectionReaders>,
    Extension(lag): Extension<Arc<LagHistory>>,
) -> Result<Markup, ConsoleError> {
    fragment(&app, &session, &lag).await
}

async fn fragment(
    app: &AppState,
    session: &Session,
    lag: &LagHistory,
) -> Result<Markup, ConsoleError> {
    let all = status::all(&app.pool).await?;
    let finished = finished(app).await?;
    let now = Utc::now();
    let span = (KEEP as u64 * SAMPLE_EVERY.as_secs()) as f64;
    let ticks: Vec<(f64, String)> = [-span, -span * 2.0 / 3.0, -span / 3.0, 0.0]
        .into_iter()
        .map(|x| {
            (
                x,
                if x == 0.0 {
                    "now".into()
                } else {
                    format!("{} min", (x / 60.0).round())
                },
            )
        })
        .collect();
    Ok(html! {
        table.projections {
            thead { tr { th { "Projection" } th { "State" } th { "Position" } th { "Lag" } th { "Last error" } th { "Rebuild" } } }
            tbody { @for p in &all { tr data-projection=(p.name) {
                th scope="row" { (p.name) }
                td.state { (p.state) }
                td.num { (p.position) }
                td.num { (p.lag_events) " events · " (format!("{:.1}", p.lag_seconds)) " s" }
                td { @if let Some(e) = &p.last_error { span.error { (e) } @if let Some(at) = p.error_position { " at position " (at) } } @else { "—" } }
                td { (rebuild_cell(session, p, &finished)) }
            } } }
        }
        h2 { "Lag (events), last " (span as u64 / 60) " minutes" }
        (chart::lines("Projection lag in events", &lag.series(now, &all), (-span, 0.0), &ticks, &|v| format!("{v:.0}")))
    })
}

/// A rebuild that finished: when it started, how many events it applied.
type Finished = (String, DateTime<Utc>, i64, f64);

/// The last finished rebuild of each projection (the runner keeps its figures after the swap).
async fn finished(app: &AppState) -> Result<Vec<Finished>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, rebuild_started_at, rebuild_done, rebuild_eps FROM projections.checkpoints
          WHERE rebuild_state IS NULL AND rebuild_started_at IS NOT NULL",
    )
    .fetch_all(&app.pool)
    .await
}

fn rebuild_cell(session: &Session, p: &ProjectionStatus, finished: &[Finished]) -> Markup {
    let last = finished.iter().find(|f| f.0 == p.name);
    html! {
        @if let (None, Some((_, started, done, eps))) = (&p.rebuild, last) {
            div.rebuild.done {
                progress max="100" value="100" aria-label=(format!("{} rebuild", p.name)) {}
                span.progress { "100 %" }
                " swapped in · " (done) " events at " (format!("{eps:.0}")) " events/s · started " (layout::time(started))
            }
        }
        @if let Some(r) = &p.rebuild {
            @let pct = if r.total > 0 { (r.done as f64 / r.total as f64 * 100.0).min(100.0) } else { 100.0 };
            div.rebuild {
                progress max="100" value=(format!("{pct:.0}")) aria-label=(format!("{} rebuild", p.name)) {}
                span.progress { (format!("{pct:.0} %")) }
                " " (r.state) " · " (r.done) "/" (r.total) " · " (format!("{:.0}", r.events_per_second)) " events/s"
                @if let Some(eta) = r.eta_seconds { " · ETA " (format!("{eta:.0}")) " s" }
            }
        }
        @if session.may::<auth::Rebuilders>() {
            form method="post" action=(format!("/console/projections/{}/rebuild", p.name)) {
                (layout::csrf(session))
                button type="submit" aria-label=(format!("Rebuild {}", p.name)) { "Rebuild" }
            }
        }
    }
}

/// Ask the active runner to rebuild, as `POST /v1/projections/{name}/rebuild` does.
async fn rebuild(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Rebuilders>,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    let projection = Projection::from_name(&name)
        .ok_or_else(|| ConsoleError::NotFound(format!("No projection is called {name}.")))?;
    status::request_rebuild(&app.pool, projection).await?;
    tracing::info!(projection = projection.name(), key.id = %session.caller.key_id, "console rebuild");
    Ok(see_other("/console/projections"))
}
