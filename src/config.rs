//! Configuration from the environment; every variable is also a flag, and every setting has
//! its default in one place, the flag's `default_value`.

use std::net::SocketAddr;
use std::path::PathBuf;

use ordo_commands::checkpoint::{self, AuditKeys, Signer};
use ordo_commands::privacy::{MasterKey, MasterKeys};
use ordo_workers::{nats, NatsSettings, RelayConfig, WorkerConfig};

/// What a process runs: `ordo serve --roles …`. A process role, not an API key's role
/// (`ordo_api::Role`, who may call what).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProcessRole {
    /// The HTTP API: commands, reads, admin.
    Api,
    /// The projection runners (one active per projection across processes).
    Projector,
    /// The order ⇄ payment process manager (processes take turns on its checkpoint).
    ProcessManager,
    /// The relay from the event log to JetStream.
    Relay,
    /// The JetStream workers named by `--workers`.
    Workers,
}

/// A URL that may hold a password: its `Debug` masks the credentials, and only
/// [`expose`](Self::expose) gives them, to the client that needs them.
macro_rules! secret_url {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn new(url: impl Into<String>) -> Self {
                Self(url.into())
            }

            /// The URL with its credentials, for the client only.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&ordo_workers::notification::redact_url(&self.0))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self(s.to_owned()))
            }
        }

        impl From<String> for $name {
            fn from(url: String) -> Self {
                Self(url)
            }
        }
    };
}

secret_url!(
    /// `ORDO_SMTP_URL`'s value, which may hold a password.
    SmtpUrl
);
secret_url!(
    /// `DATABASE_URL`'s value, which may hold a password.
    DatabaseUrl
);

/// `ORDO_AUDIT_SIGNING_KEY`'s text; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyText(String);

impl std::fmt::Debug for SigningKeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for SigningKeyText {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<String> for SigningKeyText {
    fn from(text: String) -> Self {
        Self(text)
    }
}

/// A secret setting's value: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// PostgreSQL; the database is created and migrated on start. `--help` never shows the
    /// variable's value (it may hold a password).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/ordo"
    )]
    pub database_url: DatabaseUrl,

    /// NATS with JetStream (used by the relay and workers).
    #[arg(long, env = "NATS_URL", default_value = nats::DEFAULT_URL)]
    pub nats_url: String,

    /// The JetStream stream the relay publishes to.
    #[arg(long, env = "ORDO_NATS_STREAM", default_value = nats::DEFAULT_STREAM)]
    pub nats_stream: String,

    /// Subjects are `<prefix>.<aggregate>.<event>`.
    #[arg(long, env = "ORDO_NATS_SUBJECT_PREFIX", default_value = nats::DEFAULT_SUBJECT_PREFIX)]
    pub nats_subject_prefix: String,

    /// The JetStream stream that keeps the workers' dead letters.
    #[arg(long, env = "ORDO_NATS_DLQ_STREAM", default_value = nats::DEFAULT_DLQ_STREAM)]
    pub nats_dlq_stream: String,

    /// Dead letters are published to `<prefix>.<worker>`.
    #[arg(
        long,
        env = "ORDO_NATS_DLQ_SUBJECT_PREFIX",
        default_value = nats::DEFAULT_DLQ_SUBJECT_PREFIX
    )]
    pub nats_dlq_subject_prefix: String,

    /// Where the HTTP API listens.
    #[arg(long, env = "ORDO_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Where `/metrics` listens, on a listener of its own (then `ORDO_HTTP_ADDR` does not
    /// serve it), e.g. to keep it off the public address. Unset: on `ORDO_HTTP_ADDR`.
    #[arg(long, env = "ORDO_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Size of the main PostgreSQL pool (commands, reads, runners). The idempotency-lock
    /// pool adds half as many, and each led projection one more for its lock.
    #[arg(long, env = "ORDO_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,

    /// Seconds a starting process keeps trying to reach PostgreSQL (unreachable, or out of
    /// connections), with backoff, before it gives up.
    #[arg(long, env = "ORDO_DB_START_TIMEOUT_SECS", default_value_t = 60)]
    pub db_start_timeout_secs: u64,

    /// Seconds a request waits for a database connection before answering 503.
    #[arg(long, env = "ORDO_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 3)]
    pub db_acquire_timeout_secs: u64,

    /// Largest accepted request body in bytes; larger ones get 413.
    #[arg(long, env = "ORDO_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Roles `ordo serve` runs, comma separated.
    #[arg(
        long,
        env = "ORDO_ROLES",
        value_delimiter = ',',
        default_value = "api,projector,process-manager,relay,workers"
    )]
    pub roles: Vec<ProcessRole>,

    /// Which workers the `workers` role runs, comma separated.
    #[arg(
        id = "workers",
        long = "workers",
        env = "ORDO_WORKERS",
        value_delimiter = ',',
        default_value = "notification,analytics,integration"
    )]
    pub worker_names: Vec<String>,

    /// Seconds a read with `min_position` waits for its projection before answering 503.
    #[arg(long, env = "ORDO_READ_WAIT_SECS", default_value_t = 5)]
    pub read_wait_secs: u64,

    /// SMTP server the notification worker sends through: `smtp://host[:port]` (plain),
    /// `smtp://host[:port]?tls=required` (STARTTLS) or `smtps://host[:port]` (implicit
    /// TLS), each with optional `user:password@`; without it notifications are only
    /// recorded.
    #[arg(long, env = "ORDO_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SmtpUrl>,

    /// A PEM file of one or more CA certificates the webhook and SMTP clients trust besides
    /// the webpki (Mozilla) roots, for servers with a private CA.
    #[arg(long, env = "ORDO_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// Let webhooks go to loopback, private, link-local, ULA and other non-public addresses
    /// (refused by default, at registration and at connect time: an admin key must not turn
    /// the integration worker into a scanner of the internal network). For tests and
    /// single-host setups whose receivers run beside Ordo.
    #[arg(long, env = "ORDO_WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,

    /// Sender of the notification e-mails.
    #[arg(long, env = "ORDO_SMTP_FROM", default_value = "orders@ordo.invalid")]
    pub smtp_from: String,

    /// Seconds one webhook request may take (connecting included) before it counts as a
    /// failed attempt.
    #[arg(long, env = "ORDO_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,

    /// Webhook requests in flight at once per process (each endpoint gets at most
    /// `ORDO_WEBHOOK_ENDPOINT_CONCURRENCY`).
    #[arg(long, env = "ORDO_WEBHOOK_CONCURRENCY", default_value_t = 32)]
    pub webhook_concurrency: usize,

    /// Webhook requests in flight at once to one endpoint, per process.
    #[arg(long, env = "ORDO_WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = 4)]
    pub webhook_endpoint_concurrency: usize,

    /// Days delivered webhooks (with their attempts) and the attempts of sent e-mail are
    /// kept; older ones are deleted in the background, in batches. 0 keeps them forever.
    #[arg(long, env = "ORDO_DELIVERY_RETENTION_DAYS", default_value_t = 30)]
    pub delivery_retention_days: u32,

    /// Seconds an endpoint may keep failing (no success since its first failure) before
    /// it is disabled automatically; 432000 = five days.
    #[arg(
        long,
        env = "ORDO_WEBHOOK_DISABLE_AFTER_SECS",
        default_value_t = 432_000
    )]
    pub webhook_disable_after_secs: u64,

    /// Seconds before a failed webhook delivery's first retry; each later delay is three
    /// times the one before (each plus up to as much again of jitter), up to
    /// `ORDO_WEBHOOK_RETRY_MAX_SECS`.
    #[arg(long, env = "ORDO_WEBHOOK_RETRY_FIRST_SECS", default_value_t = 5)]
    pub webhook_retry_first_secs: u64,

    /// The longest delay between two attempts at a webhook delivery (before jitter).
    #[arg(long, env = "ORDO_WEBHOOK_RETRY_MAX_SECS", default_value_t = 36_000)]
    pub webhook_retry_max_secs: u64,

    /// Attempts at a webhook delivery in all; after the last it has failed (an admin may
    /// retry it).
    #[arg(long, env = "ORDO_WEBHOOK_RETRY_ATTEMPTS", default_value_t = 10)]
    pub webhook_retry_attempts: u32,

    /// E-mails sent at once per process.
    #[arg(long, env = "ORDO_SMTP_CONCURRENCY", default_value_t = 4)]
    pub smtp_concurrency: usize,

    /// Requests each API key may make per window (a token bucket refilled continuously);
    /// 0 disables limiting. Per process: each API replica counts on its own.
    #[arg(long, env = "ORDO_RATE_LIMIT", default_value_t = 600_000)]
    pub rate_limit: u32,

    /// The rate limit's window in seconds; 0 disables limiting.
    #[arg(long, env = "ORDO_RATE_LIMIT_WINDOW_SECS", default_value_t = 60)]
    pub rate_limit_window_secs: u64,

    /// Requests without a valid API key each client address may make per
    /// `ORDO_RATE_LIMIT_WINDOW_SECS` (counted before the key is looked up); 0 disables it.
    #[arg(long, env = "ORDO_ANONYMOUS_RATE_LIMIT", default_value_t = 120)]
    pub anonymous_rate_limit: u32,

    /// Seconds a request may take, body included; then 408. Keep it above
    /// `ORDO_READ_WAIT_SECS`.
    #[arg(long, env = "ORDO_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Requests one process handles at once; more are answered 503 at once.
    #[arg(long, env = "ORDO_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Seconds a client may take to send a request's headers; then the connection is
    /// closed (a client trickling them, "slowloris", cannot hold it).
    #[arg(long, env = "ORDO_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// HTTP connections open at once; more are closed as they are accepted.
    #[arg(long, env = "ORDO_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,
    /// Mark the console's cookies `Secure` (set it when browsers reach Ordo over https).
    #[arg(long, env = "ORDO_CONSOLE_SECURE_COOKIE", default_value_t = false)]
    pub console_secure_cookie: bool,

    /// Seconds a SIGTERM or Ctrl-C gives in-flight requests and batches to finish before
    /// the process exits anyway.
    #[arg(long, env = "ORDO_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,

    /// The master key that wraps customers' data keys (ADR 0020): base64 of 32 random bytes
    /// (`openssl rand -base64 32`). Unset (and no `ORDO_MASTER_KEY_FILE`): new personal data
    /// is stored in clear, with a warning at every start and in `/readyz`.
    #[arg(long, env = "ORDO_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<Secret>,

    /// A file holding the master key (base64), instead of `ORDO_MASTER_KEY`.
    #[arg(long, env = "ORDO_MASTER_KEY_FILE", conflicts_with = "master_key")]
    pub master_key_file: Option<PathBuf>,

    /// The master key's version, recorded beside each key it wraps. Rotate by giving a new
    /// key with a higher version and the old one in `ORDO_PREVIOUS_MASTER_KEYS`, then run
    /// `ordo privacy rewrap`.
    #[arg(long, env = "ORDO_MASTER_KEY_VERSION", default_value_t = 1)]
    pub master_key_version: i32,

    /// Older master keys still accepted to unwrap data keys during a rotation:
    /// `VERSION:BASE64[,VERSION:BASE64…]`.
    #[arg(long, env = "ORDO_PREVIOUS_MASTER_KEYS", hide_env_values = true)]
    pub previous_master_keys: Option<Secret>,

    /// The Ed25519 key that signs checkpoints of the hash chain: base64 of a 32-byte seed
    /// (`head -c 32 /dev/urandom | base64`). Keep it outside the database. Unset (and no
    /// `ORDO_AUDIT_SIGNING_KEY_FILE`): checkpoints are not signed.
    #[arg(long, env = "ORDO_AUDIT_SIGNING_KEY", hide_env_values = true)]
    pub audit_signing_key: Option<SigningKeyText>,

    /// A file holding `ORDO_AUDIT_SIGNING_KEY`'s text instead (e.g. a mounted secret).
    #[arg(long, env = "ORDO_AUDIT_SIGNING_KEY_FILE")]
    pub audit_signing_key_file: Option<PathBuf>,

    /// The Ed25519 public keys verification trusts, so an auditor can verify without the
    /// signing key: comma-separated, each base64 or `name=base64` (a retired key beside the
    /// current one keeps its checkpoints verifiable). Unset: the signing key's own.
    #[arg(long, visible_alias = "public-key", env = "ORDO_AUDIT_PUBLIC_KEY")]
    pub audit_public_key: Option<String>,

    /// A file outside the database that every checkpoint this process signs is appended
    /// to, one JSON line each (the witness): `ordo audit verify --witness FILE` then catches
    /// checkpoint rows deleted from the database. Unset: no witness is written.
    #[arg(long, env = "ORDO_AUDIT_WITNESS_FILE")]
    pub audit_witness_file: Option<PathBuf>,

    /// Seconds between signed checkpoints (skipped when nothing was appended); 0 signs
    /// only on demand (`ordo audit checkpoint`, `POST /v1/audit/checkpoints`).
    #[arg(long, env = "ORDO_AUDIT_CHECKPOINT_SECS", default_value_t = 300)]
    pub audit_checkpoint_secs: u64,

    /// Test-only fault injection: abort right after a command with an Idempotency-Key
    /// commits, before its answer is stored or sent. Debug builds only: a release build
    /// has neither the setting nor the hook.
    #[cfg(debug_assertions)]
    #[arg(
        long,
        env = "ORDO_TEST_CRASH_AFTER_COMMIT",
        hide = true,
        default_value_t = false
    )]
    pub crash_after_commit: bool,
}

impl Config {
    /// The defaults, as if no variable were set and no flag given (tests start from here).
    /// Read from the flags' own `default_value`s, so each default is spelled once.
    pub fn defaults() -> Self {
        use clap::{Args, FromArgMatches};
        let command = Self::augment_args(clap::Command::new("ordo")).mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["ordo"]);
        Self::from_arg_matches(&matches).expect("every setting has a default")
    }

    /// The NATS server and events stream the relay and the workers share.
    pub fn nats(&self) -> NatsSettings {
        NatsSettings {
            url: self.nats_url.clone(),
            stream: self.nats_stream.clone(),
            subject_prefix: self.nats_subject_prefix.clone(),
        }
    }

    /// The relay's settings.
    pub fn relay(&self) -> RelayConfig {
        RelayConfig::over(&self.nats())
    }

    /// The master keys from `ORDO_MASTER_KEY` (or `ORDO_MASTER_KEY_FILE`),
    /// `ORDO_MASTER_KEY_VERSION` and `ORDO_PREVIOUS_MASTER_KEYS`; `None` when no master key is
    /// set (encryption of new personal data off).
    pub fn master_keys(&self) -> anyhow::Result<Option<MasterKeys>> {
        let text = match (&self.master_key, &self.master_key_file) {
            (Some(key), _) => key.expose().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("ORDO_MASTER_KEY_FILE {}: {e}", path.display()))?,
            (None, None) => return Ok(None),
        };
        let current = MasterKey::parse(self.master_key_version, &text)
            .map_err(|e| anyhow::anyhow!("ORDO_MASTER_KEY: {e}"))?;
        let previous = self
            .previous_master_keys
            .as_ref()
            .map(|list| MasterKeys::parse_previous(list.expose()))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .unwrap_or_default();
        MasterKeys::new(current, previous)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("ORDO_PREVIOUS_MASTER_KEYS: {e}"))
    }

    /// The audit signing key and the public key verification trusts.
    pub fn audit_keys(&self) -> anyhow::Result<AuditKeys> {
        let text = match (&self.audit_signing_key, &self.audit_signing_key_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set ORDO_AUDIT_SIGNING_KEY or ORDO_AUDIT_SIGNING_KEY_FILE, not both")
            }
            (Some(key), None) => Some(key.0.clone()),
            (None, Some(file)) => Some(std::fs::read_to_string(file).map_err(|e| {
                anyhow::anyhow!("ORDO_AUDIT_SIGNING_KEY_FILE {}: {e}", file.display())
            })?),
            (None, None) => None,
        };
        let signer = text
            .map(|t| Signer::from_base64(&t))
            .transpose()
            .map_err(|e| anyhow::anyhow!("ORDO_AUDIT_SIGNING_KEY: {e}"))?
            .map(|s| match &self.audit_witness_file {
                Some(path) => s.witnessed_in(path),
                None => s,
            });
        let public = self
            .audit_public_key
            .as_deref()
            .map(checkpoint::trusted_keys)
            .transpose()
            .map_err(|e| anyhow::anyhow!("ORDO_AUDIT_PUBLIC_KEY: {e}"))?
            .unwrap_or_default();
        Ok(AuditKeys::new(signer, public))
    }

    /// The JetStream workers' settings (which workers run is [`Config::worker_names`]).
    pub fn workers(&self) -> WorkerConfig {
        WorkerConfig {
            dlq_stream: self.nats_dlq_stream.clone(),
            dlq_prefix: self.nats_dlq_subject_prefix.clone(),
            ..WorkerConfig::over(&self.nats())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_flags_defaults() {
        let config = Config::defaults();
        assert_eq!(config.nats(), NatsSettings::default());
        assert_eq!(config.roles.len(), 5);
        assert_eq!(
            config.worker_names,
            ["notification", "analytics", "integration"]
        );
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert!(config.smtp_url.is_none());
        let workers = config.workers();
        assert_eq!(
            (workers.dlq_stream.as_str(), workers.dlq_prefix.as_str()),
            ("ORDO_DLQ", "ordo.dlq")
        );
    }

    #[test]
    fn the_workers_dead_letters_go_where_the_configuration_says() {
        let config = Config {
            nats_dlq_stream: "SHOP2_DLQ".into(),
            nats_dlq_subject_prefix: "shop2.dlq".into(),
            ..Config::defaults()
        };
        let workers = config.workers();
        assert_eq!(workers.dlq_stream, "SHOP2_DLQ");
        assert_eq!(workers.dlq_prefix, "shop2.dlq");
        assert_eq!(
            workers.stream, "ORDO_EVENTS",
            "the events stream is its own setting"
        );
    }

    #[test]
    fn the_configuration_s_debug_output_hides_the_smtp_password() {
        let config = Config {
            smtp_url: Some(SmtpUrl::new("smtps://orders:hunter2@mail.example.com")),
            ..Config::defaults()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("smtps://***@mail.example.com"), "{debug}");
    }

    #[test]
    fn the_configuration_s_debug_output_hides_the_master_keys() {
        let key = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
        let config = Config {
            master_key: Some(Secret::new(key)),
            previous_master_keys: Some(Secret::new(format!("1:{key}"))),
            master_key_version: 2,
            ..Config::defaults()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains(key), "{debug}");
        let keys = config.master_keys().unwrap().unwrap();
        assert_eq!(keys.current().version(), 2);
        assert!(keys.get(1).is_some());
        assert!(Config::defaults().master_keys().unwrap().is_none());
    }

    #[test]
    fn a_master_key_of_the_wrong_size_stops_the_start() {
        let config = Config {
            master_key: Some(Secret::new("c2hvcnQ=")),
            ..Config::defaults()
        };
        let error = config.master_keys().unwrap_err().to_string();
        assert!(
            error.contains("ORDO_MASTER_KEY") && error.contains("32"),
            "{error}"
        );
    }

    #[test]
    fn the_configuration_s_debug_output_hides_the_audit_signing_key() {
        let config = Config {
            audit_signing_key: Some(
                "c2lnbmluZy1rZXktc2VjcmV0LXNlZWQtMzItYnl0ZXM="
                    .to_owned()
                    .into(),
            ),
            ..Config::defaults()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("c2lnbmluZy1rZXktc2VjcmV0"), "{debug}");
        assert!(config.audit_keys().unwrap().signer.is_some());
        assert!(Config::defaults().audit_keys().unwrap().signer.is_none());
    }

    #[test]
    fn the_configuration_s_debug_output_hides_the_database_password() {
        let config = Config {
            database_url: DatabaseUrl::new("postgres://ordo:s3cret-pw@db.internal:5432/ordo"),
            ..Config::defaults()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret-pw"), "{debug}");
        assert!(
            debug.contains("postgres://***@db.internal:5432/ordo"),
            "{debug}"
        );
    }
}
