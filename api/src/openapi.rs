//! The published OpenAPI document tells the whole truth: besides what each handler declares,
//! every operation declares the statuses the layers around it can answer (the error body, the
//! auth scheme, throttling, body limits, the database going away), each with the contract's
//! error body schema.

use std::collections::BTreeMap;

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
        path::{HttpMethod, Operation},
        security::{
            ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
        },
    },
};

/// Every error body: `{"error": {code, message, fields?, request_id?}, "detail"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// The error.
    error: ErrorDetail,
    /// The same message, where a client written for the Django starter (DRF) reads it.
    detail: String,
}

/// The error itself.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Contract code: `unauthenticated`, `forbidden`, `not_found`, `validation_failed`,
    /// `throttled`, `payload_too_large`, `database_unavailable`, ...
    code: String,
    /// A sentence for people.
    message: String,
    /// `validation_failed`: reasons per field.
    fields: Option<BTreeMap<String, Vec<String>>>,
    /// The request id, to quote when reporting it.
    request_id: Option<String>,
}

/// Routes anyone may call (no session).
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/api/health/" | "/api/products/" | "/api/products/{slug}/" | "/api/downloads/file/"
    ) || path.starts_with("/api/webhooks/")
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => {
            "invalid_request / invalid_json: the request is malformed (a path or query parameter that does not parse, a body that is not JSON)"
        }
        401 => "unauthenticated: no valid Clerk session token",
        403 => "forbidden: the role does not allow it, or a cross-site cookie request",
        404 => "not_found: no such row, or not the caller's",
        408 => "request_timeout: the body did not arrive within HTTP_BODY_TIMEOUT_SECONDS",
        409 => "conflict: the row's state does not allow it",
        413 => "payload_too_large: the body is over MAX_BODY_BYTES",
        414 => "uri_too_long: the URL is over 8 KiB",
        415 => "unsupported_media_type: send JSON with Content-Type: application/json",
        422 => "validation_failed: fields and their reasons",
        429 => "throttled: with Retry-After (seconds)",
        503 => "database_unavailable (or storage_unavailable): retry shortly",
        _ => "error",
    }
}

fn declare(op: &mut Operation, status: u16) {
    let error = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let key = status.to_string();
    match op.responses.responses.get_mut(&key) {
        // Declared by the handler: keep its description, give it the error body.
        Some(RefOr::T(r)) => {
            if r.content.is_empty() {
                r.content.insert("application/json".into(), error);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            op.responses.responses.insert(
                key,
                RefOr::T(
                    ResponseBuilder::new()
                        .description(reason(status))
                        .content("application/json", error)
                        .build(),
                ),
            );
        }
    }
}

/// `doc` with every operation's possible statuses, the error schema and the auth schemes.
pub fn document(mut doc: OpenApi) -> OpenApi {
    add_components(&mut doc);
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Put, item.put.as_mut()),
            (HttpMethod::Patch, item.patch.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
        ] {
            let Some(op) = op else { continue };
            let writes = !matches!(method, HttpMethod::Get);
            declare_statuses(path, writes, op);
        }
    }
    doc
}

/// The error schemas and the auth schemes (the session token as a bearer or a cookie).
fn add_components(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("ErrorBody".into(), ErrorBody::schema());
    components
        .schemas
        .insert("ErrorDetail".into(), ErrorDetail::schema());
    components.add_security_scheme(
        "clerkSession",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A Clerk session token (RS256, verified against the instance's JWKS).",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "clerkSessionCookie",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            "__session",
            "Clerk's session cookie (unsafe methods must come from an allowed origin).",
        ))),
    );
}

/// Declares every status the layers around operation `op` of `path` can answer (`writes`: not a
/// GET), then gives every error status it declares the error body.
fn declare_statuses(path: &str, writes: bool, op: &mut Operation) {
    let has_path_params = path.contains('{');
    let has_query = op.parameters.as_ref().is_some_and(|ps| {
        ps.iter()
            .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
    });
    let mut statuses = vec![414, 503];
    if !crate::throttle::never_throttled(path) {
        statuses.push(429);
    }
    if !is_public(path) {
        statuses.extend([401, 403]);
        op.security = Some(vec![
            SecurityRequirement::new("clerkSession", Vec::<String>::new()),
            SecurityRequirement::new("clerkSessionCookie", Vec::<String>::new()),
        ]);
    }
    if has_path_params {
        statuses.extend([400, 404]);
    }
    if has_query {
        statuses.push(400);
    }
    if writes {
        statuses.extend([400, 408, 409, 413, 415, 422]);
    }
    if path.starts_with("/api/webhooks/") {
        statuses.retain(|s| ![409, 415, 422].contains(s));
    }
    statuses.sort_unstable();
    statuses.dedup();
    for s in statuses {
        declare(op, s);
    }
    // Every error the handler itself declared gets the error body too.
    let declared: Vec<u16> = op
        .responses
        .responses
        .keys()
        .filter_map(|k| k.parse().ok())
        .filter(|s| *s >= 400)
        .collect();
    for s in declared {
        declare(op, s);
    }
}
