//! The HTTP client webhooks are delivered with.

use std::sync::OnceLock;
use std::time::Duration;

use crate::tls::TrustRoots;

/// How long one webhook request may take by default (`DeliveryConfig::timeout` sets it per
/// request).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook client: https through rustls (webpki roots, plus `roots` when given, the
/// certificates of `ORDO_TLS_CA_FILE`), no redirects, [`TIMEOUT`] per request.
pub fn client_with(roots: Option<&TrustRoots>) -> Result<reqwest::Client, String> {
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
    builder
        .build()
        .map_err(|e| format!("cannot build the webhook client: {e}"))
}

/// The webhook client without `ORDO_TLS_CA_FILE`: the webpki roots only.
pub fn default_client() -> reqwest::Client {
    static DEFAULT: OnceLock<reqwest::Client> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            client_with(None).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "webhook client settings refused; using defaults");
                reqwest::Client::new()
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
