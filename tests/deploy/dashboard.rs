//! deploy/grafana/dashboards/ordo.json: every query uses only metrics Ordo exports (the
//! names agreed in the team's briefing) and a data source Grafana is provisioned with.

use std::collections::BTreeSet;

use serde_json::Value;

/// Counters and gauges Ordo exports, by their Prometheus names.
// Kept here until the metrics code holds one list that both can use.
pub const SERIES: &[&str] = &[
    "http_requests_total",
    "ordo_commands_total",
    "ordo_events_appended_total",
    "ordo_projection_position",
    "ordo_projection_lag_events",
    "ordo_projection_lag_seconds",
    "ordo_relay_published_total",
    "ordo_relay_lag_events",
    "ordo_worker_processed_total",
    "ordo_worker_failed_total",
    "ordo_worker_dead_lettered_total",
    "ordo_db_pool_connections",
    "ordo_db_pool_max_connections",
    "ordo_rate_limited_total",
];

/// Histograms: queried through their `_bucket`, `_sum` and `_count` series.
pub const HISTOGRAMS: &[&str] = &[
    "http_request_duration_seconds",
    "ordo_command_duration_seconds",
    "ordo_worker_handler_duration_seconds",
];

/// Series Prometheus itself writes for every target.
const PROMETHEUS_SERIES: &[&str] = &["up"];

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
            for metric in metric_names(expr) {
                if let Some(problem) = unknown(&metric) {
                    problems.push(format!("panel {title:?}: {problem}"));
                }
                used.insert(metric);
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

fn unknown(metric: &str) -> Option<String> {
    if SERIES.contains(&metric) || PROMETHEUS_SERIES.contains(&metric) {
        return None;
    }
    if HISTOGRAMS.contains(&metric) {
        return Some(format!(
            "{metric} is a histogram: query its _bucket, _sum or _count series"
        ));
    }
    let histogram_series = ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| metric.strip_suffix(suffix))
        .any(|base| HISTOGRAMS.contains(&base));
    (!histogram_series).then(|| format!("{metric} is not a metric Ordo exports"))
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// keywords, label names, label values, durations or Grafana variables.
pub fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // Skips to just after the string starting at `i`.
    let skip_string = |mut i: usize| {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    // Skips to just after the `close` matching the `open` at `i`.
    let skip_group = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                '"' | '\'' | '`' => {
                    i = skip_string(i);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '$' || c.is_ascii_digit() {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(') || AGGREGATIONS.contains(&word.as_str());
            if GROUPING.contains(&word.as_str()) {
                if call {
                    i = skip_group(next, '(', ')');
                }
            } else if !call && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_told_apart_from_functions_labels_and_durations() {
    let expr = r#"max by (projection) (ordo_projection_lag_events) + histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!="/x", job=~"a|b"}[$__rate_interval]))) / on(instance) group_left up offset 5m"#;
    assert_eq!(
        metric_names(expr),
        [
            "ordo_projection_lag_events",
            "http_request_duration_seconds_bucket",
            "up"
        ]
    );
}
