//! deploy/grafana/dashboards/ordo.json: every query uses only metrics Ordo exports and their
//! labels (as agreed in the team's briefing), from a data source Grafana is provisioned with.

use std::collections::BTreeSet;

use serde_json::Value;

/// Counters and gauges Ordo exports, by their Prometheus names, with their labels.
// Kept here until the metrics code holds one list that both can use.
pub const SERIES: &[(&str, &[&str])] = &[
    ("http_requests_total", &["method", "route", "status"]),
    ("ordo_commands_total", &["command", "outcome"]),
    ("ordo_events_appended_total", &["aggregate", "event_type"]),
    ("ordo_projection_position", &["projection"]),
    ("ordo_projection_lag_events", &["projection"]),
    ("ordo_projection_lag_seconds", &["projection"]),
    ("ordo_relay_published_total", &[]),
    ("ordo_relay_lag_events", &[]),
    ("ordo_worker_processed_total", &["worker"]),
    ("ordo_worker_failed_total", &["worker"]),
    ("ordo_worker_dead_lettered_total", &["worker"]),
    ("ordo_db_pool_connections", &["pool", "state"]),
    ("ordo_db_pool_max_connections", &["pool"]),
    ("ordo_rate_limited_total", &[]),
    ("ordo_webhook_queue_depth", &["endpoint"]),
    ("ordo_webhook_oldest_pending_seconds", &["endpoint"]),
    ("ordo_webhook_attempts_total", &["endpoint", "outcome"]),
    ("ordo_webhook_endpoint_state", &["endpoint", "state"]),
    ("ordo_webhook_endpoints", &["state"]),
    ("ordo_webhook_endpoints_auto_disabled_total", &[]),
    ("ordo_mail_queue_depth", &[]),
    ("ordo_mail_oldest_pending_seconds", &[]),
    ("ordo_mail_attempts_total", &["outcome"]),
    // Written by Prometheus itself for every target.
    ("up", &[]),
];

/// Histograms: queried through their `_bucket` (plus `le`), `_sum` and `_count` series.
pub const HISTOGRAMS: &[(&str, &[&str])] = &[
    (
        "http_request_duration_seconds",
        &["method", "route", "status"],
    ),
    ("ordo_command_duration_seconds", &["command"]),
    ("ordo_worker_handler_duration_seconds", &["worker"]),
    ("ordo_webhook_attempt_duration_seconds", &["endpoint"]),
];

/// Labels Prometheus adds to every series of a target (`role`: deploy/prometheus).
const TARGET_LABELS: &[&str] = &["instance", "job", "role", "__name__"];

/// Words of PromQL that are followed by a parenthesised list of label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Aggregation operators: functions, even when `by (…)` comes between them and `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// PromQL keywords that are neither functions nor metrics.
const KEYWORDS: &[&str] = &["bool", "offset", "and", "or", "unless", "inf", "nan"];

/// Checks the dashboard; returns the metric series its queries use.
pub fn check(json: &str, datasource_uids: &[&str]) -> Result<BTreeSet<String>, Vec<String>> {
    let dashboard: Value =
        serde_json::from_str(json).map_err(|e| vec![format!("not JSON: {e}")])?;
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    let mut panels = Vec::new();
    collect_panels(&dashboard, &mut panels);
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no query"));
        }
        for source in
            std::iter::once(&panel["datasource"]).chain(targets.iter().map(|t| &t["datasource"]))
        {
            if let Some(uid) = source["uid"].as_str() {
                if !datasource_uids.contains(&uid) {
                    problems.push(format!(
                        "panel {title:?} uses data source {uid:?}, which is not provisioned"
                    ));
                }
            }
        }
        for expr in targets.iter().filter_map(|t| t["expr"].as_str()) {
            let selected = parse(expr);
            let mut known_labels: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
            for metric in &selected.metrics {
                match labels_of(metric) {
                    Ok(labels) => known_labels.extend(labels),
                    Err(problem) => problems.push(format!("panel {title:?}: {problem}")),
                }
                used.insert(metric.clone());
            }
            for label in &selected.labels {
                if !known_labels.contains(label.as_str()) {
                    problems.push(format!(
                        "panel {title:?}: no series of `{expr}` has the label {label}"
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(used)
    } else {
        Err(problems)
    }
}

fn collect_panels<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    for panel in node["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        collect_panels(panel, out);
    }
}

/// The labels of a series Ordo exports, or why it is not one.
fn labels_of(metric: &str) -> Result<Vec<&'static str>, String> {
    let find = |table: &[(&'static str, &'static [&'static str])], name: &str| {
        table
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| l.to_vec())
    };
    if let Some(labels) = find(SERIES, metric) {
        return Ok(labels);
    }
    if find(HISTOGRAMS, metric).is_some() {
        return Err(format!(
            "{metric} is a histogram: query its _bucket, _sum or _count series"
        ));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(mut labels) = metric
            .strip_suffix(suffix)
            .and_then(|base| find(HISTOGRAMS, base))
        {
            if suffix == "_bucket" {
                labels.push("le");
            }
            return Ok(labels);
        }
    }
    Err(format!("{metric} is not a metric Ordo exports"))
}

/// What a PromQL expression refers to.
#[derive(Debug, Default, PartialEq)]
pub struct Selected {
    /// Identifiers that are not functions, keywords, label names or values, durations or
    /// Grafana variables.
    pub metrics: Vec<String>,
    /// Label names in matchers (`{route="/x"}`) and in `by`, `without`, `on`, … lists.
    pub labels: Vec<String>,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL lexer: enough to find metric and label names, not to validate syntax.
pub fn parse(expr: &str) -> Selected {
    let chars: Vec<char> = expr.chars().collect();
    let mut selected = Selected::default();
    // Just after the string starting at `i`.
    let skip_string = |mut i: usize| {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    // Just after the `close` matching the `open` at `i`, with the words inside it that
    // are not in strings.
    let group = |mut i: usize, open: char, close: char| {
        let (mut depth, mut words) = (0, Vec::new());
        while i < chars.len() {
            match chars[i] {
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return (i + 1, words);
                    }
                }
                '"' | '\'' | '`' => {
                    i = skip_string(i);
                    continue;
                }
                c if is_word_char(c) => {
                    let start = i;
                    while i < chars.len() && is_word_char(chars[i]) {
                        i += 1;
                    }
                    words.push(chars[start..i].iter().collect::<String>());
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        (i, words)
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            let (end, labels) = group(i, '{', '}');
            selected.labels.extend(labels);
            i = end;
        } else if c == '[' {
            i = group(i, '[', ']').0;
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '$' || c.is_ascii_digit() {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(') || AGGREGATIONS.contains(&word.as_str());
            if GROUPING.contains(&word.as_str()) {
                if chars.get(next) == Some(&'(') {
                    let (end, labels) = group(next, '(', ')');
                    selected.labels.extend(labels);
                    i = end;
                }
            } else if !call && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                selected.metrics.push(word);
            }
        } else {
            i += 1;
        }
    }
    selected
}

#[test]
fn the_lexer_tells_metrics_from_functions_labels_and_durations() {
    let expr = r#"max by (projection) (ordo_projection_lag_events) + histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!="/x", job=~"a|b"}[$__rate_interval]))) / on(instance) group_left up offset 5m"#;
    let selected = parse(expr);
    assert_eq!(
        selected.metrics,
        [
            "ordo_projection_lag_events",
            "http_request_duration_seconds_bucket",
            "up"
        ]
    );
    assert_eq!(
        selected.labels,
        ["projection", "le", "route", "route", "job", "instance"]
    );
}
