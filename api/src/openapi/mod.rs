//! The OpenAPI 3.1 description of the API, served at `GET /openapi.json`, browsable at
//! `GET /docs` (Swagger UI, its assets compiled into the binary), checked in as
//! `schemas/openapi.json`.
//!
//! One list of routes: every handler carries `#[utoipa::path]` and each resource's router is
//! a utoipa-axum `OpenApiRouter` built with `routes!`, so a route is served exactly when it
//! is described. Problem responses are shared components, referenced per handler through
//! the problem sets below.

pub mod params;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Object, OpenApi as Spec, Ref, RefOr, Required, Response as SpecResponse,
    ResponseBuilder, Schema, Type,
};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::error::PROBLEM_JSON;

/// The name of the bearer scheme (an API key) in `components.securitySchemes`.
pub const SECURITY_SCHEME: &str = "api_key";

/// The document's fixed parts; the paths come from the routers (see `crate::api`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ordo",
        description = "Event-sourced order processing: commands on orders, payments and \
            customers; read models; the audit trail; projections, workers and webhooks. \
            Errors are RFC 9457 problems (`application/problem+json`). Every response \
            carries `x-request-id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError, crate::respond::CommandResult)),
    modifiers(&Conventions),
    tags(
        (name = "orders", description = "Order commands and the orders read model"),
        (name = "payments", description = "Payment commands and the payments read model"),
        (name = "customers", description = "CRM: customers, notes and the customer 360"),
        (name = "audit", description = "Streams' events with metadata, and state at a point (support, admin)"),
        (name = "projections", description = "Read-model status, lag and rebuilds"),
        (name = "analytics", description = "Sales and funnel (analyst, admin)"),
        (name = "notifications", description = "Notifications sent or recorded (support, admin)"),
        (name = "webhooks", description = "Webhook endpoints and deliveries (admin)"),
        (name = "workers", description = "Worker lag, replay and dead letters (admin)"),
        (name = "keys", description = "API keys: list, create, revoke (global admin)"),
        (name = "channels", description = "Sales channels: create, list, show, rename, e-mail sender (admin; changes by a global admin)"),
        (name = "operations", description = "Health, readiness and this document; no API key"),
    )
)]
pub struct ApiDoc;

/// The whole document, built once.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| crate::api().1)
}

/// The document as checked in (`schemas/openapi.json`): pretty JSON, trailing newline.
pub fn spec_json() -> String {
    let mut json = spec().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], spec_json()).into_response()
}

/// An interactive reference (Swagger UI) for this document; its scripts and styles are
/// served by Ordo under `/docs/`, so it works offline. `/docs` redirects to `/docs/`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    responses(
        (status = 200, description = "The reference page", content_type = "text/html", body = String),
        (status = 303, description = "To `/docs/`"),
    ),
)]
pub async fn docs() -> Redirect {
    // The page's assets are relative to it: they resolve under `/docs/` only.
    Redirect::to("/docs/")
}

/// Swagger UI's page and assets under `/docs/` (compiled into the binary), reading
/// `/openapi.json`; the page is reached through [`docs`].
pub fn docs_router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let config = Arc::new(utoipa_swagger_ui::Config::from("/openapi.json"));
    let file = move |rest: Option<Path<String>>| {
        let response = swagger_file(rest.as_deref().map_or("", String::as_str), &config);
        async move { response }
    };
    axum::Router::new()
        .route("/docs/", get(file.clone()))
        .route("/docs/{*rest}", get(file))
}

fn swagger_file(path: &str, config: &Arc<utoipa_swagger_ui::Config<'static>>) -> Response {
    match utoipa_swagger_ui::serve(path, Arc::clone(config)) {
        Ok(Some(file)) => (
            [(header::CONTENT_TYPE, file.content_type)],
            file.bytes.into_owned(),
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => crate::ApiError::Internal(format!("swagger ui: {e}")).into_response(),
    }
}

// ------------------------------------------------------------------ responses

/// Every problem response, by status, as a named component.
const PROBLEMS: [(u16, &str, &str); 12] = [
    (400, "BadRequest", "Malformed JSON, a bad header or a bad query parameter"),
    (401, "Unauthorized", "No API key, or not a valid one"),
    (403, "Forbidden", "The key's role may not do this (`forbidden`), or the key is scoped to one sales channel and named another or asked for what spans channels (`channel-forbidden`)"),
    (404, "NotFound", "No such resource"),
    (408, "RequestTimeout", "The request (its body included) took longer than the server allows"),
    (409, "Conflict", "Refused by a domain rule (the `type` names it; `channel-mismatch`: an order's customer or a payment's order is of another sales channel), the id exists already, a write conflict, or a request with this Idempotency-Key in flight"),
    (412, "PreconditionFailed", "If-Match names a version the stream is no longer at"),
    (413, "PayloadTooLarge", "The body is larger than the server accepts"),
    (415, "UnsupportedMediaType", "The body is not `application/json`"),
    (422, "UnprocessableContent", "Invalid fields (`errors` lists each), or an Idempotency-Key reused with another request"),
    (429, "TooManyRequests", "The API key's rate limit is spent (see the `RateLimit` and `RateLimit-Policy` headers); retry after `Retry-After` seconds"),
    (503, "ServiceUnavailable", "The store or a read model is not available (`unavailable`, `projection-behind`), or the server has as many requests in flight as it takes (`overloaded`); retry after `Retry-After` seconds. `not-configured`: this server is not set up for the operation (signing a checkpoint without a signing key), the detail says what is missing"),
];

fn problem_component(status: u16) -> Ref {
    let name = PROBLEMS
        .iter()
        .find(|(s, _, _)| *s == status)
        .map_or("ServiceUnavailable", |(_, name, _)| name);
    Ref::from_response_name(name)
}

fn header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Object::with_type(Type::String))
        .description(Some(description))
        .build()
}

macro_rules! problems {
    ($($(#[$doc:meta])* $name:ident: $($status:literal),+;)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<SpecResponse>> {
                [$($status),+]
                    .into_iter()
                    .map(|s: u16| (s.to_string(), RefOr::Ref(problem_component(s))))
                    .collect()
            }
        }
    )+};
}

// Every `/v1` route may also answer 408 (the request timeout), 429 (rate limits) and 503
// (the store, or the in-flight limit): the middleware in front of every handler.
problems! {
    /// Operations routes: only the store can fail.
    Unavailable: 503;
    /// A read of one resource open to every role.
    ReadOneProblems: 400, 401, 404, 408, 429, 503;
    /// A read limited to some roles, or a list a channel-scoped key may not widen to another
    /// channel (`channel-forbidden`).
    RestrictedReadProblems: 400, 401, 403, 408, 429, 503;
    /// A read of one resource limited to some roles.
    RestrictedReadOneProblems: 400, 401, 403, 404, 408, 429, 503;
    /// A command that creates a stream.
    CreateProblems: 400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503;
    /// A command on an existing stream.
    CommandProblems: 400, 401, 403, 404, 408, 409, 412, 413, 415, 422, 429, 503;
    /// An admin action with a JSON body.
    AdminBodyProblems: 400, 401, 403, 404, 408, 413, 415, 422, 429, 503;
    /// An admin creation whose id may be taken.
    AdminCreateProblems: 400, 401, 403, 408, 409, 413, 415, 422, 429, 503;
}

fn command_response(description: &str, location: bool) -> SpecResponse {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("CommandResult")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .header("ETag", header("`\"<version>\"`: the stream's version; send it back as If-Match"))
        .header("Idempotent-Replayed", header("`true` when this is a stored answer to an earlier request with the same Idempotency-Key"));
    if location {
        response = response.header("Location", header("The new resource"));
    }
    response.build()
}

/// 201 `{id, version, position}` with `Location` and `ETag`.
pub struct Created;

impl IntoResponses for Created {
    fn responses() -> BTreeMap<String, RefOr<SpecResponse>> {
        let response = command_response("Recorded; the new stream's first events", true);
        BTreeMap::from([("201".to_owned(), RefOr::T(response))])
    }
}

/// 201 `{id, version, position}` on an existing stream (a note on a customer).
pub struct Added;

impl IntoResponses for Added {
    fn responses() -> BTreeMap<String, RefOr<SpecResponse>> {
        let response = command_response("Recorded", true);
        BTreeMap::from([("201".to_owned(), RefOr::T(response))])
    }
}

/// 200 `{id, version, position}` with `ETag`.
pub struct Applied;

impl IntoResponses for Applied {
    fn responses() -> BTreeMap<String, RefOr<SpecResponse>> {
        let response = command_response("Recorded", false);
        BTreeMap::from([("200".to_owned(), RefOr::T(response))])
    }
}

fn problem_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    )
}

/// 409s that name, beside the shared reasons, the cap an operation enforces: each a problem
/// component of its own, referenced by the struct of the same name. Listed after the
/// operation's problem set, it takes the place of the shared `Conflict`.
const CAPPED_CONFLICTS: [(&str, &str); 2] = [
    (
        "PaymentsCapped",
        "Refused by a domain rule (the `type` names it), among them `too-many-payments`: the \
         order has 100 payments already (counted as each is recorded, so creations in \
         flight at the same time cannot pass the cap together); or the id exists already, a write conflict, or a request with this \
         Idempotency-Key in flight",
    ),
    (
        "NotesCapped",
        "Refused by a domain rule (the `type` names it), among them `too-many-notes`: the \
         customer has 500 notes already; or a write conflict, or a request with this \
         Idempotency-Key in flight",
    ),
];

macro_rules! capped_conflict {
    ($($(#[$doc:meta])* $name:ident;)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<SpecResponse>> {
                let reference = Ref::from_response_name(stringify!($name));
                BTreeMap::from([("409".to_owned(), RefOr::Ref(reference))])
            }
        }
    )+};
}

capped_conflict! {
    /// `POST /v1/payments`: an order's payments are capped.
    PaymentsCapped;
    /// `POST /v1/customers/{id}/notes`: a customer's notes are capped.
    NotesCapped;
}

/// 200 with the JSON body `T` and an `ETag` of the version it reflects.
pub fn etag_header() -> Header {
    header("`\"<version>\"` of the stream this reflects")
}

// ------------------------------------------------------------------ conventions

/// Adds what holds for every operation: the problem components, the bearer scheme (on
/// `/v1/*`; the operations routes need no key), and `x-request-id` on every response.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut Spec) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API key (`ordo keys create`)")
                    .description(Some("`Authorization: Bearer <api key>`; each key has one role: storefront, support, analyst or admin"))
                    .build(),
            ),
        );
        for (status, name, description) in PROBLEMS {
            let mut response = problem_response(description);
            if status == 503 {
                response = response.header("Retry-After", header("Seconds to wait"));
            }
            if status == 401 {
                response = response.header("WWW-Authenticate", header("`Bearer`"));
            }
            components
                .responses
                .insert(name.to_owned(), RefOr::T(response.build()));
        }
        for (name, description) in CAPPED_CONFLICTS {
            components.responses.insert(
                name.to_owned(),
                RefOr::T(problem_response(description).build()),
            );
        }
        for response in components.responses.values_mut() {
            add_request_id(response);
        }
    }
}

fn add_request_id(response: &mut RefOr<SpecResponse>) {
    if let RefOr::T(response) = response {
        response.headers.insert(
            "x-request-id".to_owned(),
            header("This request's id (echoed if sent)"),
        );
    }
}

/// The finishing touches once every path is in: security per operation and `x-request-id`.
pub(crate) fn finish(openapi: &mut Spec) {
    openapi.security = Some(vec![SecurityRequirement::new(
        SECURITY_SCHEME,
        Vec::<String>::new(),
    )]);
    let schemas = openapi.components.as_ref().map(|c| &c.schemas);
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            // Handler names repeat across modules (`list`, `show`): prefix the tag.
            if let (Some(id), Some(tag)) = (
                &operation.operation_id,
                operation.tags.as_ref().and_then(|t| t.first()),
            ) {
                operation.operation_id = Some(format!("{tag}_{id}"));
            }
            if !path.starts_with("/v1/") {
                operation.security = Some(Vec::new());
            }
            for response in operation.responses.responses.values_mut() {
                add_request_id(response);
            }
            if let (Some(body), Some(schemas)) = (operation.request_body.as_mut(), schemas) {
                if body_optional(body, schemas) {
                    body.required = Some(Required::False);
                }
            }
        }
    }
}

/// Whether a request body may be left out. Every handler reads an empty body as `{}`
/// (`crate::extract::CommandBody`), so a body with no required field is optional.
fn body_optional(body: &RequestBody, schemas: &BTreeMap<String, RefOr<Schema>>) -> bool {
    let schema = match body
        .content
        .get("application/json")
        .and_then(|c| c.schema.as_ref())
    {
        Some(RefOr::Ref(r)) => {
            schemas.get(r.ref_location.trim_start_matches("#/components/schemas/"))
        }
        other => other,
    };
    matches!(schema, Some(RefOr::T(Schema::Object(o))) if o.required.is_empty())
}

#[cfg(test)]
mod tests;
