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
mod credits;
mod downloads;
mod extras;
mod health;
mod me;
mod seller;
mod webhooks;

use seller::{assets, offers, prices, products, refunds as seller_refunds, work_orders};

/// The contract, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Granary", description = "Storefront, seller dashboard and webhooks for selling digital products and services."),
    paths(
        health::health, webhooks::clerk, webhooks::stripe,
        me::me, me::profile, me::me_clerk, me::billing_features,
        catalog::list, catalog::detail,
        products::list, products::create, products::get, products::update, products::delete,
        prices::list, prices::create, prices::get, prices::update, prices::delete,
        assets::list, assets::create, assets::get, assets::update, assets::delete,
        offers::get, offers::put, offers::patch,
        work_orders::list, work_orders::get, work_orders::update, seller_refunds::refund,
        account::get_customer, account::patch_customer, account::list_orders, account::create_order, account::confirm_order,
        account::subscriptions, account::subscription_status, account::entitlements, account::downloads, downloads::access, downloads::file,
        account::work_orders, account::list_bookings, account::create_booking, account::email_test,
        credits::summary, credits::consume, credits::adjust,
        extras::supabase_profile, extras::ai_providers, extras::ai_usage,
        admin::jobs, admin::job, admin::requeue_job, admin::cancel_job, admin::requeue_order, admin::refund_order, admin::timeline, admin::webhooks, admin::webhook, admin::replay, admin::set_role, admin::reset_grant, admin::revoke_grant, admin::reconcile, admin::reconcile_run,
    ),
    tags((name = "catalog"), (name = "auth"), (name = "account"), (name = "seller"), (name = "webhooks"), (name = "health"), (name = "admin"))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document(ApiDoc::openapi()))
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
        .route("/api/profile/", get(me::profile))
        .route("/api/me/clerk/", get(me::me_clerk))
        .route("/api/billing/features/", get(me::billing_features))
        .route("/api/supabase/profile/", get(extras::supabase_profile))
        .route("/api/ai/providers/", get(extras::ai_providers))
        .route("/api/ai/usage/summary/", get(extras::ai_usage))
        .route(
            "/api/account/customer/",
            get(account::get_customer).patch(account::patch_customer),
        )
        .route("/api/account/orders/", get(account::list_orders))
        .route("/api/account/orders/create/", post(account::create_order))
        .route("/api/account/orders/work/", get(account::work_orders))
        .route(
            "/api/account/orders/{public_id}/confirm/",
            post(account::confirm_order),
        )
        .route("/api/account/subscriptions/", get(account::subscriptions))
        .route(
            "/api/account/subscriptions/status/",
            get(account::subscription_status),
        )
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
        .route(
            "/api/account/preflight/email-test/",
            post(account::email_test),
        )
        .route("/api/account/credits/", get(credits::summary))
        .route("/api/account/credits/consume/", post(credits::consume))
        .route("/api/admin/credits/adjust/", post(credits::adjust))
        .route("/api/admin/jobs/", get(admin::jobs))
        .route("/api/admin/jobs/{id}/", get(admin::job))
        .route("/api/admin/jobs/{id}/requeue/", post(admin::requeue_job))
        .route("/api/admin/jobs/{id}/cancel/", post(admin::cancel_job))
        .route(
            "/api/admin/orders/{public_id}/requeue/",
            post(admin::requeue_order),
        )
        .route(
            "/api/admin/orders/{public_id}/refund/",
            post(admin::refund_order),
        )
        .route(
            "/api/seller/orders/{public_id}/refund/",
            post(seller_refunds::refund),
        )
        .route(
            "/api/admin/orders/{public_id}/timeline/",
            get(admin::timeline),
        )
        .route("/api/admin/webhooks/", get(admin::webhooks))
        .route("/api/admin/webhooks/{id}/", get(admin::webhook))
        .route("/api/admin/webhooks/{id}/replay/", post(admin::replay))
        .route(
            "/api/admin/users/{clerk_user_id}/role/",
            post(admin::set_role),
        )
        .route("/api/admin/grants/{id}/reset/", post(admin::reset_grant))
        .route("/api/admin/grants/{id}/revoke/", post(admin::revoke_grant))
        .route("/api/admin/reconcile/", post(admin::reconcile))
        .route("/api/admin/reconcile/{id}/", get(admin::reconcile_run))
        .route(
            "/api/seller/products/",
            get(products::list).post(products::create),
        )
        .route(
            "/api/seller/products/{id}/",
            get(products::get)
                .patch(products::update)
                .delete(products::delete),
        )
        .route(
            "/api/seller/products/{id}/prices/",
            get(prices::list).post(prices::create),
        )
        .route(
            "/api/seller/prices/{id}/",
            get(prices::get)
                .patch(prices::update)
                .delete(prices::delete),
        )
        .route(
            "/api/seller/products/{id}/assets/",
            get(assets::list).post(assets::create),
        )
        .route(
            "/api/seller/assets/{id}/",
            get(assets::get)
                .patch(assets::update)
                .delete(assets::delete),
        )
        .route(
            "/api/seller/products/{id}/service-offer/",
            get(offers::get).put(offers::put).patch(offers::patch),
        )
        .route("/api/seller/work-orders/", get(work_orders::list))
        .route(
            "/api/seller/work-orders/{id}/",
            get(work_orders::get).patch(work_orders::update),
        )
}
