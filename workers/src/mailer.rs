//! The SMTP client the notification worker's mail goes out through, and the parsing of
//! `ORDO_SMTP_URL` (whose password is never repeated in errors, `Debug` or logs).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use url::Url;

use crate::tls::TrustRoots;

/// The sender used when `ORDO_SMTP_FROM` is not set.
pub const DEFAULT_FROM: &str = "orders@ordo.invalid";

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtp://`: plain SMTP, no TLS.
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, and no mail without it.
    StartTls,
    /// `smtp://…?tls=opportunistic`: STARTTLS when the server offers it.
    Opportunistic,
    /// `smtps://`: TLS from the first byte (implicit TLS).
    Wrapper,
}

/// What an SMTP URL says. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
struct SmtpTarget {
    host: String,
    port: u16,
    security: Security,
    /// `user:password@`, percent-decoded.
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// An SMTP client, one connection per mail: plain `smtp://host[:port]`, STARTTLS with
/// `smtp://host[:port]?tls=required` (or `opportunistic`), implicit TLS with
/// `smtps://host[:port]`, each with optional `user:password@` (AUTH PLAIN or LOGIN). TLS
/// trusts the webpki roots and the extra roots given (`ORDO_TLS_CA_FILE`).
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The URL without its credentials, for `Debug`.
    server: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// `url` like `smtp://127.0.0.1:2525` (see [`Mailer`]); `from` an e-mail address,
    /// optionally with a name (`Ordo <orders@example.com>`). TLS trusts the webpki roots.
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        Self::with_roots(url, from, None)
    }

    /// As [`Mailer::new`], TLS trusting `roots` too. Errors never repeat a password.
    pub fn with_roots(url: &str, from: &str, roots: Option<&TrustRoots>) -> Result<Self, String> {
        let target = parse_smtp_url(url)?;
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("`{from}` is not a sender address: {e}"))?;
        let tls = || {
            let mut params = TlsParameters::builder(target.host.clone());
            for cert in roots.map(TrustRoots::certificates).unwrap_or_default() {
                let cert = Certificate::from_der(cert.to_vec())
                    .map_err(|e| format!("a CA certificate refused by the SMTP client: {e}"))?;
                params = params.add_root_certificate(cert);
            }
            params
                .build_rustls()
                .map_err(|e| format!("cannot set up TLS for SMTP: {e}"))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
            .port(target.port)
            .timeout(Some(Duration::from_secs(10)));
        builder = match target.security {
            Security::Plain => builder,
            Security::StartTls => builder.tls(Tls::Required(tls()?)),
            Security::Opportunistic => builder.tls(Tls::Opportunistic(tls()?)),
            Security::Wrapper => builder.tls(Tls::Wrapper(tls()?)),
        };
        if let Some((user, password)) = &target.credentials {
            // Opportunistic STARTTLS falls back to plain text when the server (or anyone on
            // the path stripping its STARTTLS offer) says so: AUTH would then go in clear.
            if target.security == Security::Opportunistic {
                return Err(format!(
                    "`{}`: SMTP credentials are refused with ?tls=opportunistic (a downgrade \
                     would send them unencrypted); use ?tls=required or smtps://",
                    redact_url(url)
                ));
            }
            if target.security == Security::Plain {
                tracing::warn!(
                    server = %redact_url(url),
                    "SMTP credentials over plain smtp:// travel unencrypted; use smtps:// or ?tls=required"
                );
            }
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            server: redact_url(url),
        })
    }

    /// The `Message-ID` of the mail of `kind` for `event`: the same on every attempt, so a
    /// mail sent twice (a crash between the send and its record) can be recognised as one.
    pub fn message_id(&self, event: uuid::Uuid, kind: &str) -> String {
        format!("<{event}.{kind}@{}>", self.from.email.domain())
    }

    /// Send a mail from `from` (`None`: the configured sender).
    pub(crate) async fn send(
        &self,
        from: Option<&Mailbox>,
        to: Mailbox,
        subject: &str,
        body: &str,
        message_id: &str,
    ) -> Result<(), String> {
        let message = Message::builder()
            .from(from.unwrap_or(&self.from).clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.to_owned()))
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("smtp: {}", error_chain(&e)))
    }
}

/// lettre's error with its sources ("Connection error: invalid peer certificate: …").
fn error_chain(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `url` with anything between `://` and the last `@` (the credentials) masked; a text
/// that is no URL but holds an `@` is not repeated at all.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
            None => url.to_owned(),
        },
        None if url.contains('@') => "(a text with `@`, not repeated)".to_owned(),
        None => url.to_owned(),
    }
}

fn parse_smtp_url(url: &str) -> Result<SmtpTarget, String> {
    let shown = redact_url(url);
    let invalid = |why: &str| {
        format!(
            "`{shown}` is not an SMTP URL ({why}); expected smtp://host[:port], \
             smtp://host[:port]?tls=required or smtps://host[:port], each with optional user:password@"
        )
    };
    // The parser's messages never quote the input.
    let parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let (security, default_port) = match (parsed.scheme(), tls.as_deref()) {
        ("smtp", None) => (Security::Plain, 25),
        ("smtp", Some("required")) => (Security::StartTls, 587),
        ("smtp", Some("opportunistic")) => (Security::Opportunistic, 587),
        ("smtps", None) => (Security::Wrapper, 465),
        ("smtp" | "smtps", Some(_)) => {
            return Err(invalid(
                "tls= is `required` or `opportunistic`, with smtp:// only",
            ))
        }
        _ => return Err(invalid("the scheme is smtp or smtps")),
    };
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(invalid("no host")),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| invalid("the credentials are not UTF-8"))
    };
    let credentials = match (parsed.username(), parsed.password()) {
        ("", None) => None,
        (user, Some(password)) => Some((decode(user)?, decode(password)?)),
        (_, None) => return Err(invalid("a user without a password")),
    };
    Ok(SmtpTarget {
        host,
        port: parsed.port().unwrap_or(default_port),
        security,
        credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        host: &str,
        port: u16,
        security: Security,
        credentials: Option<(&str, &str)>,
    ) -> SmtpTarget {
        SmtpTarget {
            host: host.into(),
            port,
            security,
            credentials: credentials.map(|(u, p)| (u.into(), p.into())),
        }
    }

    #[test]
    fn smtp_urls_give_host_port_security_and_credentials() {
        use Security::*;
        let cases = [
            (
                "smtp://127.0.0.1:2525",
                target("127.0.0.1", 2525, Plain, None),
            ),
            (
                "smtp://mail.example.com",
                target("mail.example.com", 25, Plain, None),
            ),
            ("smtp://[::1]:25", target("::1", 25, Plain, None)),
            (
                "smtp://mail.example.com?tls=required",
                target("mail.example.com", 587, StartTls, None),
            ),
            (
                "smtp://u:p@mail.example.com:2587?tls=opportunistic",
                target("mail.example.com", 2587, Opportunistic, Some(("u", "p"))),
            ),
            (
                "smtps://mail.example.com",
                target("mail.example.com", 465, Wrapper, None),
            ),
            (
                "smtps://orders%40shop.example:p%40ss%2Fw@mail.example.com:1465",
                target(
                    "mail.example.com",
                    1465,
                    Wrapper,
                    Some(("orders@shop.example", "p@ss/w")),
                ),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(parse_smtp_url(url), Ok(expected), "{url}");
        }
        for bad in [
            "http://x:25",
            "smtp://x:port",
            "smtp://",
            "smtp://x?tls=maybe",
            "smtps://x?tls=required",
            "smtp://user@x",
            "mail.example.com",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_password_is_never_repeated_in_errors_or_debug_output() {
        let password = "s3cr3t-pw";
        for url in [
            format!("smtp://user:{password}@x:port"),
            format!("smtp://user:{password}@x?tls=maybe"),
            format!("http://user:{password}@x"),
            format!("user:{password}@x"),
        ] {
            let error = Mailer::new(&url, "orders@ordo.invalid").unwrap_err();
            assert!(!error.contains(password), "{error}");
            assert!(error.contains("not an SMTP URL"), "{error}");
        }
        let url = format!("smtps://user:{password}@mail.example.com");
        let mailer = Mailer::new(&url, "orders@ordo.invalid").unwrap();
        let debug = format!("{mailer:?} {:?}", parse_smtp_url(&url));
        assert!(!debug.contains(password), "{debug}");
        assert!(debug.contains("smtps://***@mail.example.com"), "{debug}");
        assert!(!debug.contains("user"), "{debug}");
    }

    #[test]
    fn a_bad_sender_is_a_clear_error() {
        let error = Mailer::new("smtp://x", "not an address").unwrap_err();
        assert!(error.contains("not a sender address"), "{error}");
    }
}
