//! The page frame (navigation by role), and the small pieces every page shows the same way:
//! times (UTC in the page, the browser's zone once the script ran, UTC on hover), money in
//! major units with its currency, ids, JSON.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::session::Session;
use crate::auth;

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Search,
    Projections,
    Workers,
    Webhooks,
    Analytics,
    Keys,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Ordo console" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/console.js" defer {}
        }
    }
}

/// A whole page for a signed-in session: the links its role may follow, then `body`.
pub fn page(session: &Session, title: &str, current: Nav, body: Markup) -> Markup {
    let links = [
        (
            Nav::Search,
            "/console",
            "Search",
            session.may::<auth::Auditors>(),
        ),
        (
            Nav::Projections,
            "/console/projections",
            "Projections",
            session.may::<auth::ProjectionReaders>(),
        ),
        (
            Nav::Workers,
            "/console/workers",
            "Workers",
            session.may::<auth::Admins>(),
        ),
        (
            Nav::Webhooks,
            "/console/webhooks",
            "Webhooks",
            session.may::<auth::WebhookAdmins>(),
        ),
        (
            Nav::Analytics,
            "/console/analytics",
            "Analytics",
            session.may::<auth::Analysts>(),
        ),
        (
            Nav::Keys,
            "/console/keys",
            "Keys",
            session.may::<auth::Admins>(),
        ),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/console" { "Ordo" }
                    nav aria-label="Console" {
                        @for (nav, href, label, allowed) in links {
                            @if allowed {
                                a href=(href) aria-current=[(nav == current).then_some("page")] { (label) }
                            }
                        }
                    }
                    div.who {
                        span { (session.caller.name) " (" (session.caller.role)
                            @if let Some(channel) = session.caller.scope() { ", " (channel) } ")" }
                        form method="post" action="/console/sign-out" {
                            (csrf(session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page outside a session: sign-in, errors.
pub fn bare(title: &str, detail: &str) -> Markup {
    page_without_session(
        title,
        html! { p.detail { (detail) } p { a href="/console" { "Back to the console" } } },
    )
}

pub fn page_without_session(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/console" { "Ordo" } }
                main id="main" { h1 { (title) } (body) }
            }
        }
    }
}

/// The hidden field every form of the session carries.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A time: UTC as written, replaced by the browser's local time by the script; UTC on hover.
pub fn time(t: &DateTime<Utc>) -> Markup {
    let utc = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(t.to_rfc3339()) title=(utc) { (utc) } }
}

/// A time from JSON (RFC 3339), or the raw value when it is not one.
pub fn time_value(v: &Value) -> Markup {
    match v
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    {
        Some(t) => time(&t.with_timezone(&Utc)),
        None => html! { (text(v)) },
    }
}

/// Minor units as major units with the currency: `2999`, `EUR` → `29.99 EUR`.
pub fn money(amount: impl Into<i128>, currency: &str) -> String {
    let amount: i128 = amount.into();
    match ordo_domain::money::Currency::parse(currency) {
        Ok(c) => c.format_minor(amount),
        Err(_) => format!("{amount} {currency}"),
    }
}

/// A JSON value as plain text (strings without quotes, `—` for null).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON document, pretty-printed in a `<pre>` (auto-escaped).
pub fn json(v: &Value) -> Markup {
    let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre.json { (pretty) } }
}

/// A flat JSON object as a definition list.
pub fn fields(v: &Value) -> Markup {
    html! {
        dl.fields {
            @if let Some(o) = v.as_object() {
                @for (k, v) in o {
                    dt { (k) }
                    dd { @if v.is_object() || v.is_array() { (json(v)) } @else { (text(v)) } }
                }
            }
        }
    }
}

/// A percentage with one decimal, from a ratio.
pub fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

/// An empty-state line, when a list has nothing in it.
pub fn none(what: &str) -> Markup {
    html! { p.empty { "No " (what) " yet." } }
}
