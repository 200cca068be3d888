//! Liveness and readiness; no API key needed, never rate limited.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
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

/// `status` is `ready` or `not_ready`; `checks` has `postgres` (`status` `up`|`down`,
/// `latency_ms` or `error`), `encryption` (`status` `on` with `master_key_version`, or `off`
/// with a `detail`: new personal data is then stored in clear, and the process is still
/// ready) and, when this process has a NATS probe, `nats` (`status`, `required`); `roles` maps each role of the process (`api`, `projector.orders`, `relay`,
/// `worker.analytics`, …) to `starting`, `running`, `stopping`, `stopped` or `failed`.
#[derive(Serialize, ToSchema)]
struct Readiness {
    #[schema(example = "ready")]
    status: &'static str,
    checks: BTreeMap<String, Value>,
    #[schema(value_type = BTreeMap<String, String>)]
    roles: BTreeMap<String, ProcessRoleState>,
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
            let check = json!({
                "status": if up { "up" } else { "down" },
                "required": probe.required,
            });
            (up || !probe.required, Some(check))
        }
        None => (true, None),
    };
    let roles = app.readiness.roles.snapshot();
    let roles_up = roles.values().all(|s| *s == ProcessRoleState::Running);
    let ready = postgres_up && nats_up && roles_up;
    let mut checks = BTreeMap::from([
        ("postgres".to_owned(), postgres),
        ("encryption".to_owned(), encryption(&app)),
        ("audit_signing".to_owned(), audit_signing(&app)),
    ]);
    if let Some(nats) = nats {
        checks.insert("nats".to_owned(), nats);
    }
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

/// Whether new personal data is sealed (ADR 0020). Off is reported, never "not ready".
fn encryption(app: &AppState) -> Value {
    match app.commands.keys().master_version() {
        Some(version) => json!({"status": "on", "master_key_version": version}),
        None => json!({
            "status": "off",
            "detail": "no master key (ORDO_MASTER_KEY or ORDO_MASTER_KEY_FILE): new personal data is stored in clear",
        }),
    }
}

/// Whether this process signs checkpoints of the hash chain. Off does not make it unready:
/// the chain still links, only without signatures.
fn audit_signing(app: &AppState) -> Value {
    match &app.config.audit.signer {
        Some(signer) => json!({
            "status": "on",
            "public_key": ordo_commands::checkpoint::public_key_text(&signer.public_key()),
        }),
        None => json!({
            "status": "off",
            "detail": "ORDO_AUDIT_SIGNING_KEY is not set: checkpoints of the hash chain are not signed",
        }),
    }
}

async fn postgres(app: &AppState) -> (bool, Value) {
    let started = Instant::now();
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&app.pool);
    match tokio::time::timeout(POSTGRES_TIMEOUT, ping).await {
        Ok(Ok(_)) => (
            true,
            json!({"status": "up", "latency_ms": started.elapsed().as_millis() as u64}),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: postgres unreachable");
            (false, json!({"status": "down", "error": "query failed"}))
        }
        Err(_) => (
            false,
            json!({"status": "down", "error": format!("no answer within {POSTGRES_TIMEOUT:?}")}),
        ),
    }
}
