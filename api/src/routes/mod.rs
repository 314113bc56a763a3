//! Routes, one module per area of the contract. Each module's `router()` declares its routes
//! once, from the handlers' `#[utoipa::path]` (method and path): the same declaration builds the
//! axum route and the OpenAPI operation.

use axum::{Router, body::Bytes, http::header, routing::get};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

mod account;
mod admin;
mod catalog;
mod credits;
mod downloads;
mod extras;
mod health;
mod me;
mod seller;
mod webhooks;

/// The contract's header; its operations come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Granary", description = "Storefront, seller dashboard and webhooks for selling digital products and services."),
    tags((name = "catalog"), (name = "auth"), (name = "account"), (name = "seller"), (name = "webhooks"), (name = "health"), (name = "admin"))
)]
pub struct ApiDoc;

/// Every `/api` route, with the OpenAPI document they declare.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(webhooks::router())
        .merge(catalog::router())
        .merge(me::router())
        .merge(extras::router())
        .merge(account::router())
        .merge(downloads::router())
        .merge(credits::router())
        .merge(admin::router())
        .merge(seller::router())
}

/// Every route of the api. The OpenAPI document is built and serialized once, here: each
/// `GET /api/openapi.json` answers the same bytes.
pub fn router() -> Router<AppState> {
    let (router, doc) = routes().split_for_parts();
    let doc = crate::openapi::document(doc);
    let json = Bytes::from(serde_json::to_vec(&doc).expect("the OpenAPI document serializes"));
    router.route(
        "/api/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], json) }
        }),
    )
}
