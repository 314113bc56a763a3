//! Routes, one module per area of the contract.

use axum::{
    Json, Router,
    routing::{get, post},
};
use utoipa::OpenApi;

use crate::AppState;

mod account;
mod admin;
mod catalog;
mod downloads;
mod health;
mod me;
mod seller;
mod webhooks;

/// The contract, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Granary", description = "Storefront, seller dashboard and webhooks for selling digital products and services."),
    paths(
        me::me, me::me_clerk, me::features,
        catalog::list, catalog::detail,
        seller::list_products, seller::create_product, seller::get_product, seller::update_product, seller::delete_product,
        seller::list_prices, seller::create_price, seller::get_price, seller::update_price, seller::delete_price,
        seller::list_assets, seller::create_asset, seller::get_asset, seller::update_asset, seller::delete_asset,
        seller::get_offer, seller::put_offer, seller::patch_offer,
        account::get_customer, account::patch_customer, account::list_orders, account::create_order, account::confirm_order,
        account::subscriptions, account::entitlements, account::downloads, downloads::access, account::list_bookings, account::create_booking,
        admin::jobs, admin::job, admin::requeue_job, admin::cancel_job, admin::requeue_order, admin::timeline, admin::webhooks, admin::webhook, admin::replay,
    ),
    components(schemas(catalog::ProductOut, catalog::PriceOut, seller::ProductIn, seller::PriceIn, seller::AssetIn, seller::AssetOut, seller::OfferIn,
        account::CustomerIn, account::OrderIn, account::ItemIn, account::ConfirmIn, account::BookingIn)),
    tags((name = "catalog"), (name = "auth"), (name = "account"), (name = "seller"), (name = "webhooks"), (name = "health"), (name = "admin"))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Every route of the api.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/health/", get(health::health))
        .route("/api/openapi.json", get(openapi))
        .route("/api/webhooks/clerk/", post(webhooks::clerk))
        .route("/api/webhooks/stripe/", post(webhooks::stripe))
        .route("/api/products/", get(catalog::list))
        .route("/api/products/{slug}/", get(catalog::detail))
        .route("/api/me/", get(me::me))
        .route("/api/profile/", get(me::me))
        .route("/api/me/clerk/", get(me::me_clerk))
        .route("/api/billing/features/", get(me::features))
        .route(
            "/api/account/customer/",
            get(account::get_customer).patch(account::patch_customer),
        )
        .route("/api/account/orders/", get(account::list_orders))
        .route("/api/account/orders/create/", post(account::create_order))
        .route(
            "/api/account/orders/{public_id}/confirm/",
            post(account::confirm_order),
        )
        .route("/api/account/subscriptions/", get(account::subscriptions))
        .route("/api/account/entitlements/", get(account::entitlements))
        .route("/api/account/downloads/", get(account::downloads))
        .route(
            "/api/account/downloads/{token}/access/",
            post(downloads::access),
        )
        .route("/api/downloads/file/", get(downloads::file))
        .route(
            "/api/account/bookings/",
            get(account::list_bookings).post(account::create_booking),
        )
        .route("/api/admin/jobs/", get(admin::jobs))
        .route("/api/admin/jobs/{id}/", get(admin::job))
        .route("/api/admin/jobs/{id}/requeue/", post(admin::requeue_job))
        .route("/api/admin/jobs/{id}/cancel/", post(admin::cancel_job))
        .route(
            "/api/admin/orders/{public_id}/requeue/",
            post(admin::requeue_order),
        )
        .route(
            "/api/admin/orders/{public_id}/timeline/",
            get(admin::timeline),
        )
        .route("/api/admin/webhooks/", get(admin::webhooks))
        .route("/api/admin/webhooks/{id}/", get(admin::webhook))
        .route("/api/admin/webhooks/{id}/replay/", post(admin::replay))
        .route(
            "/api/seller/products/",
            get(seller::list_products).post(seller::create_product),
        )
        .route(
            "/api/seller/products/{id}/",
            get(seller::get_product)
                .patch(seller::update_product)
                .delete(seller::delete_product),
        )
        .route(
            "/api/seller/products/{id}/prices/",
            get(seller::list_prices).post(seller::create_price),
        )
        .route(
            "/api/seller/prices/{id}/",
            get(seller::get_price)
                .patch(seller::update_price)
                .delete(seller::delete_price),
        )
        .route(
            "/api/seller/products/{id}/assets/",
            get(seller::list_assets).post(seller::create_asset),
        )
        .route(
            "/api/seller/assets/{id}/",
            get(seller::get_asset)
                .patch(seller::update_asset)
                .delete(seller::delete_asset),
        )
        .route(
            "/api/seller/products/{id}/service-offer/",
            get(seller::get_offer)
                .put(seller::put_offer)
                .patch(seller::patch_offer),
        )
}
