//! `/console/analytics` (the API's analysts): sales per day or hour per currency as charts,
//! the order funnel, cancellation and refund rates, over a date range. The numbers are
//! those `GET /v1/analytics/sales` and `/funnel` serve, from the same functions.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use maud::{html, Markup};
use ordo_workers::analytics;
use serde::Deserialize;

use super::chart;
use super::layout::{self, page, Nav};
use super::session::Signed;
use super::ConsoleError;
use crate::auth;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/console/analytics", get(show))
}

#[derive(Deserialize)]
struct Params {
    from: Option<String>,
    to: Option<String>,
    granularity: Option<String>,
}

/// The most buckets one chart draws (a month of hours).
const MAX_BUCKETS: i64 = 31 * 24;

fn date(raw: Option<&str>, default: NaiveDate) -> Result<NaiveDate, ConsoleError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| ConsoleError::BadInput("Dates look like 2026-01-31.".into())),
    }
}

async fn show(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Analysts>,
    Query(q): Query<Params>,
) -> Result<Markup, ConsoleError> {
    let today = Utc::now().date_naive();
    let to = date(q.to.as_deref(), today)?;
    let from = date(q.from.as_deref(), to - TimeDelta::days(6))?;
    let hourly = q.granularity.as_deref() == Some("hour");
    let step = if hourly {
        TimeDelta::hours(1)
    } else {
        TimeDelta::days(1)
    };
    let start = from
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default();
    let end = (to + TimeDelta::days(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default();
    let buckets = (end - start).num_seconds() / step.num_seconds();
    if from > to || buckets > MAX_BUCKETS {
        return Err(ConsoleError::BadInput(format!(
            "Choose a range from an earlier to a later date, at most {MAX_BUCKETS} {}.",
            if hourly { "hours" } else { "days" }
        )));
    }
    let report = analytics::sales_report(
        &app.pool,
        session.caller.scope(),
        start,
        end,
        if hourly { "hour" } else { "day" },
    )
    .await?;
    let funnel = analytics::funnel(&app.pool, session.caller.scope()).await?;
    // currency → bucket start → (orders, gross, paid, refunded)
    let mut per_currency: BTreeMap<String, BTreeMap<DateTime<Utc>, [i128; 4]>> = BTreeMap::new();
    for item in report.items {
        per_currency.entry(item.currency).or_default().insert(
            item.bucket,
            [item.orders.into(), item.gross, item.paid, item.refunded],
        );
    }
    let slots: Vec<DateTime<Utc>> = (0..buckets)
        .filter_map(|i| (start + step * i as i32).duration_trunc(step).ok())
        .collect();
    let label = |t: &DateTime<Utc>| {
        if hourly {
            t.format("%d %Hh").to_string()
        } else {
            t.format("%b %d").to_string()
        }
    };
    let every = (slots.len() / 8).max(1);
    let body = html! {
        form.inline method="get" {
            label for="from" { "From" } input #from type="date" name="from" value=(from);
            label for="to" { "to" } input #to type="date" name="to" value=(to);
            label for="granularity" { "per" }
            select #granularity name="granularity" {
                option value="day" selected[!hourly] { "day" }
                option value="hour" selected[hourly] { "hour" }
            }
            button type="submit" { "Show" }
        }
        h2 { "Sales (UTC " (if hourly { "hours" } else { "days" }) ")" }
        @if per_currency.is_empty() { (layout::none("sales in this range")) }
        @for (currency, by_bucket) in &per_currency {
            @let bars: Vec<(String, f64)> = slots.iter()
                .map(|t| (label(t), by_bucket.get(t).map_or(0, |v| v[1]) as f64)).collect();
            @let totals = by_bucket.values().fold([0i128; 4], |mut acc, v| { for i in 0..4 { acc[i] = acc[i].saturating_add(v[i]); } acc });
            h3 { (currency) }
            p { (totals[0]) " orders · gross " (layout::money(totals[1], currency))
                " · paid " (layout::money(totals[2], currency)) " · refunded " (layout::money(totals[3], currency)) }
            @let cur = currency.clone();
            (chart::bars(&format!("Gross sales in {currency}"), &bars, every, &move |v| layout::money(v as i128, &cur)))
        }
        h2 { "Funnel (all time)" }
        table.funnel {
            thead { tr { th { "Stage" } th { "Orders" } } }
            tbody { @for (stage, count) in funnel.stages() {
                tr { th scope="row" { (stage) } td.num { (count) } }
            } }
        }
        p { "Cancellation rate " strong { (layout::percent(funnel.cancellation_rate)) }
            " · refund rate " strong { (layout::percent(funnel.refund_rate)) } }
    };
    Ok(page(&session, "Analytics", Nav::Analytics, body))
}
