//! The HTTP client webhooks are delivered with.

use std::sync::OnceLock;
use std::time::Duration;

use crate::egress::WebhookClient;
use crate::tls::TrustRoots;

/// How long one webhook request may take by default (`DeliveryConfig::timeout` sets it per
/// request).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook client: https through rustls (webpki roots, plus `roots` when given, the
/// certificates of `ORDO_TLS_CA_FILE`), no redirects, [`TIMEOUT`] per request, and only to
/// public addresses unless `allow_private` (see [`crate::egress`]).
pub fn client_with(
    roots: Option<&TrustRoots>,
    allow_private: bool,
) -> Result<WebhookClient, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ordo-webhooks/", env!("CARGO_PKG_VERSION")));
    for cert in roots.map(TrustRoots::certificates).unwrap_or_default() {
        let cert = reqwest::Certificate::from_der(cert)
            .map_err(|e| format!("a CA certificate refused by the webhook client: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    WebhookClient::build(builder, allow_private)
        .map_err(|e| format!("cannot build the webhook client: {e}"))
}

/// The webhook client without `ORDO_TLS_CA_FILE`: the webpki roots only, public addresses
/// only.
pub fn default_client() -> WebhookClient {
    static DEFAULT: OnceLock<WebhookClient> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            client_with(None, false).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "webhook client settings refused; using defaults");
                // As `reqwest::Client::new()`, which panics when no TLS backend loads.
                WebhookClient::build(reqwest::Client::builder(), false)
                    .expect("a TLS backend for the webhook client")
            })
        })
        .clone()
}

/// reqwest's error with its sources ("error sending request: connection refused").
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
