//! What crosses process boundaries for tracing, and what must never reach a log.
//!
//! One trace runs from a storefront's request to the webhook it causes: the API stores a W3C
//! `traceparent` in each event's metadata, the relay sends it as a NATS header, and each
//! worker's handler span takes it as its remote parent. With an OpenTelemetry layer installed
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` set) the traceparent passed on is the current span's, so the
//! exported spans chain; without one the incoming traceparent is passed on unchanged (and a
//! fresh span id for outgoing calls), so the trace id still runs end to end.

use std::borrow::Cow;
use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

/// Make `traceparent` (W3C, `00-<trace id>-<parent id>-<flags>`) the remote parent of
/// `span`. Call it before the span is first entered. A malformed value is ignored: the span
/// then starts a trace of its own.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    // A span no subscriber records (its level filtered out) has no parent to set.
    if span.is_disabled() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: then there is nothing to chain.
        let _ = span.set_parent(cx);
    }
}

/// The traceparent naming `span`, when an OpenTelemetry layer gives it one.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The traceparent to pass on from inside the current span: the span's own when traces are
/// exported, else `fallback` (the traceparent this work arrived with).
pub fn current_traceparent(fallback: &str) -> String {
    traceparent_of(&tracing::Span::current()).unwrap_or_else(|| fallback.to_owned())
}

/// The traceparent for a call made from within the current span: the span's own when traces
/// are exported; else `incoming`'s trace id with a fresh parent id.
pub fn outgoing_traceparent(incoming: Option<&str>) -> Option<String> {
    if let Some(own) = traceparent_of(&tracing::Span::current()) {
        return Some(own);
    }
    let parts: Vec<&str> = incoming?.split('-').collect();
    match parts.as_slice() {
        ["00", trace_id, _, flags] if trace_id.len() == 32 && flags.len() == 2 => {
            let span_id = Uuid::new_v4().simple().to_string();
            Some(format!("00-{trace_id}-{}-{flags}", &span_id[..16]))
        }
        _ => None,
    }
}

/// `text` with anything shaped like an e-mail address replaced by `<redacted>`: for error
/// messages that may quote input (a refused recipient, an SMTP server's answer, a
/// deserialisation error) before they are logged.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let is_addr = |c: char| c.is_alphanumeric() || "._%+-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let start = rest[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_addr(*c))
            .last()
            .map_or(at, |(i, _)| i);
        let after = &rest[at + 1..];
        let end = after
            .char_indices()
            .find(|(_, c)| !is_addr(*c))
            .map_or(after.len(), |(i, _)| i);
        if start < at && end > 0 {
            out.push_str(&rest[..start]);
            out.push_str("<redacted>");
        } else {
            out.push_str(&rest[..=at]);
            if end == 0 {
                rest = after;
                continue;
            }
            out.push_str(&after[..end]);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact("recipient `ada@example.com` refused"),
            "recipient `<redacted>` refused"
        );
        assert_eq!(redact("550 <a.b+c@x.io>: no"), "550 <<redacted>>: no");
        assert_eq!(redact("no address here"), "no address here");
        assert_eq!(redact("a lone @ sign"), "a lone @ sign");
        assert_eq!(redact("x@"), "x@");
        assert_eq!(redact("two a@b.c, d@e.f"), "two <redacted>, <redacted>");
    }

    #[test]
    fn an_outgoing_call_keeps_the_trace_id_with_a_new_parent() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let out = outgoing_traceparent(Some(incoming)).unwrap_or_default();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"));
        assert_ne!(out, incoming);
        assert_eq!(outgoing_traceparent(Some("garbage")), None);
        assert_eq!(outgoing_traceparent(None), None);
    }
}
