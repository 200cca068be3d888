//! Liveness and readiness; no API key needed, never rate limited.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use ordo_runtime::process::ProcessRoleState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
}

/// Alive: the process answers and no role has stayed down (failing, and restarted without
/// running stably) for a minute. 503 names the roles that have: restart the process.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health),
        (status = 503, description = "A role stays down: `down` names it", body = Health)))]
async fn live(State(app): State<AppState>) -> Response {
    let down = app.readiness.roles.down();
    if down.is_empty() {
        return Json(Health {
            status: "ok",
            down: None,
        })
        .into_response();
    }
    let body = Health {
        status: "down",
        down: Some(down),
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// The answer of `/healthz`.
#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok`, or `down` when a role stays down.
    #[schema(example = "ok")]
    status: &'static str,
    /// The roles that stay down (only with `down`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    down: Option<Vec<String>>,
}

/// `status` is `ready` or `not_ready`; `checks` says what was checked; `roles` maps each
/// role of the process (`api`, `projector.orders`, `relay`, `worker.analytics`, …) to
/// `starting`, `running`, `stopping`, `stopped` or `failed`.
#[derive(Serialize, ToSchema)]
struct Readiness {
    #[schema(example = "ready")]
    status: &'static str,
    checks: ReadinessChecks,
    #[schema(value_type = BTreeMap<String, String>)]
    roles: BTreeMap<String, ProcessRoleState>,
}

/// What `/readyz` checked: `postgres` and `nats` count towards readiness (with the roles);
/// `encryption` and `audit_signing` are reported only.
#[derive(Serialize, ToSchema)]
struct ReadinessChecks {
    audit_signing: AuditSigningCheck,
    encryption: EncryptionCheck,
    /// Only when this process has a NATS probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    nats: Option<NatsCheck>,
    postgres: PostgresCheck,
}

/// Whether PostgreSQL answers `SELECT 1`.
#[derive(Serialize, ToSchema)]
struct PostgresCheck {
    /// `up` or `down`.
    #[schema(example = "up")]
    status: &'static str,
    /// How long the answer took (when `up`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    latency_ms: Option<u64>,
    /// Why it is `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
}

/// Whether NATS is connected, and whether this process needs it to be ready.
#[derive(Serialize, ToSchema)]
struct NatsCheck {
    /// `up` or `down`.
    #[schema(example = "up")]
    status: &'static str,
    required: bool,
}

/// Whether new personal data is sealed (ADR 0020). `off` is reported, never "not ready":
/// new personal data is then stored in clear.
#[derive(Serialize, ToSchema)]
struct EncryptionCheck {
    /// `on` or `off`.
    #[schema(example = "on")]
    status: &'static str,
    /// The master key sealing new data (when `on`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    master_key_version: Option<i32>,
    /// What is missing (when `off`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    detail: Option<&'static str>,
}

/// Whether this process signs checkpoints of the hash chain. `off` does not make it
/// unready: the chain still links, only without signatures.
#[derive(Serialize, ToSchema)]
struct AuditSigningCheck {
    /// `on` or `off`.
    #[schema(example = "on")]
    status: &'static str,
    /// The key that verifies the signatures (when `on`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    public_key: Option<String>,
    /// What is missing (when `off`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    detail: Option<&'static str>,
}

/// How long PostgreSQL gets to answer `SELECT 1`.
const POSTGRES_TIMEOUT: Duration = Duration::from_secs(1);

/// 200 when PostgreSQL answers, NATS is connected (if this process needs it) and every role
/// is running; otherwise 503 with the same body saying what is not.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the same body says what is not", body = Readiness)))]
async fn ready(State(app): State<AppState>) -> Response {
    let (postgres_up, postgres) = postgres(&app).await;
    let (nats_up, nats) = match &app.readiness.nats {
        Some(probe) => {
            let up = probe.connected();
            let check = NatsCheck {
                status: if up { "up" } else { "down" },
                required: probe.required,
            };
            (up || !probe.required, Some(check))
        }
        None => (true, None),
    };
    let roles = app.readiness.roles.snapshot();
    let roles_up = roles.values().all(|s| *s == ProcessRoleState::Running);
    let ready = postgres_up && nats_up && roles_up;
    let checks = ReadinessChecks {
        audit_signing: audit_signing(&app),
        encryption: encryption(&app),
        nats,
        postgres,
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks,
        roles,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn encryption(app: &AppState) -> EncryptionCheck {
    let version = app.commands.keys().master_version();
    EncryptionCheck {
        status: if version.is_some() { "on" } else { "off" },
        master_key_version: version,
        detail: version.is_none().then_some(
            "no master key (ORDO_MASTER_KEY or ORDO_MASTER_KEY_FILE): new personal data is stored in clear",
        ),
    }
}

fn audit_signing(app: &AppState) -> AuditSigningCheck {
    let signer = app.config.audit.signer.as_ref();
    AuditSigningCheck {
        status: if signer.is_some() { "on" } else { "off" },
        public_key: signer.map(|s| ordo_commands::checkpoint::public_key_text(&s.public_key())),
        detail: signer.is_none().then_some(
            "ORDO_AUDIT_SIGNING_KEY is not set: checkpoints of the hash chain are not signed",
        ),
    }
}

async fn postgres(app: &AppState) -> (bool, PostgresCheck) {
    let started = Instant::now();
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&app.pool);
    let down = |error: String| PostgresCheck {
        status: "down",
        latency_ms: None,
        error: Some(error),
    };
    match tokio::time::timeout(POSTGRES_TIMEOUT, ping).await {
        Ok(Ok(_)) => (
            true,
            PostgresCheck {
                status: "up",
                latency_ms: Some(started.elapsed().as_millis() as u64),
                error: None,
            },
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: postgres unreachable");
            (false, down("query failed".into()))
        }
        Err(_) => (
            false,
            down(format!("no answer within {POSTGRES_TIMEOUT:?}")),
        ),
    }
}
