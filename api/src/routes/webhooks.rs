//! `POST /api/webhooks/clerk/` and `POST /api/webhooks/stripe/`: verify the signature over the
//! exact bytes, store the event and enqueue its processing in one transaction, answer after the
//! commit. Rejected deliveries are stored too, with their reason, and answered 4xx with a code
//! that names it. No provider is ever called and no job awaited on this path.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use granary_jobs::{
    providers::{
        Provider,
        verify::{self, Rejection, Verified},
    },
    webhooks::ingest::{self, Stored},
};
use serde_json::json;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiError, AppState, error::error_body};

/// Clerk (Svix-signed) deliveries.
#[utoipa::path(post, path = "/api/webhooks/clerk/", tag = "webhooks", request_body(content = Object, content_type = "application/json", description = "A Clerk event, exactly as Svix signed it (`svix-id`, `svix-timestamp`, `svix-signature`)"), responses((status = 200, description = "Stored (or a duplicate of a stored event)"), (status = 400, description = "Malformed delivery (stored as rejected)"), (status = 401, description = "signature_mismatch, stale_timestamp, future_timestamp (stored as rejected)"), (status = 413, description = "payload_too_large"), (status = 503, description = "webhook_secret_not_configured, or the database is unavailable: the provider retries")))]
#[tracing::instrument(skip_all, fields(provider = "clerk"))]
pub async fn clerk(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let verified = state.clerk_webhooks.verify(&body, &headers);
    receive(&state, Provider::Clerk, verified, &headers, body).await
}

/// Stripe deliveries.
#[utoipa::path(post, path = "/api/webhooks/stripe/", tag = "webhooks", request_body(content = Object, content_type = "application/json", description = "A Stripe event, exactly as signed (`Stripe-Signature: t=...,v1=...`)"), responses((status = 200, description = "Stored (or a duplicate of a stored event)"), (status = 400, description = "Malformed delivery (stored as rejected)"), (status = 401, description = "signature_mismatch, stale_timestamp, future_timestamp (stored as rejected)"), (status = 413, description = "payload_too_large"), (status = 503, description = "webhook_secret_not_configured, or the database is unavailable: the provider retries")))]
#[tracing::instrument(skip_all, fields(provider = "stripe"))]
pub async fn stripe(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let now = chrono::Utc::now().timestamp();
    let verified = verify::stripe(
        state.config.stripe.webhook_secret.as_ref(),
        &body,
        &headers,
        now,
    );
    receive(&state, Provider::Stripe, verified, &headers, body).await
}

async fn receive(
    state: &AppState,
    provider: Provider,
    verified: Result<Verified, Rejection>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    match verified {
        Ok(v) => match state.ingest.store(provider, &v, headers, body).await {
            Ok(Stored::New(id)) => {
                granary_jobs::platform::metrics::webhook(provider.as_str(), "accepted");
                tracing::info!(event_id = %v.event_id, event_type = %v.event_type, webhook_event_id = %id, "webhook stored");
                (
                    StatusCode::OK,
                    Json(json!({ "received": true, "duplicate": false })),
                )
                    .into_response()
            }
            Ok(Stored::Duplicate) => {
                granary_jobs::platform::metrics::webhook(provider.as_str(), "duplicate");
                tracing::info!(event_id = %v.event_id, "duplicate delivery; already stored");
                (
                    StatusCode::OK,
                    Json(json!({ "received": true, "duplicate": true })),
                )
                    .into_response()
            }
            // Not stored means not acknowledged: a 5xx makes the provider deliver again.
            Err(e) => {
                granary_jobs::platform::metrics::webhook(provider.as_str(), "unavailable");
                ApiError::from(e).into_response()
            }
        },
        Err(rejection) => {
            granary_jobs::platform::metrics::webhook(provider.as_str(), "rejected");
            tracing::warn!(reason = rejection.code, detail = %rejection.detail, "webhook rejected");
            if let Err(e) = ingest::store_rejected(
                &state.pool,
                provider,
                rejection.code,
                &rejection.detail,
                headers,
                &body,
            )
            .await
            {
                tracing::error!(error = %e, "could not record a rejected webhook delivery");
            }
            let status =
                StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
            error_body(status, rejection.code, &rejection.detail)
        }
    }
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(clerk))
        .routes(routes!(stripe))
}
