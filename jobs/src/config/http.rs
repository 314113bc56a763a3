//! The HTTP side: where the api listens, who may call it from a browser, request limits, and the
//! storefront's policy switches.

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{SellerAccess, reader::Reader};

/// What this part reads.
pub(super) struct Http {
    pub port: u16,
    pub bind_host: String,
    pub cors_allowed_origins: Vec<String>,
    pub frontend_app_url: Url,
    pub max_body_bytes: usize,
    pub order_confirm_allow_manual: bool,
    pub order_confirm_allow_client_side_clerk_confirm: bool,
    pub dev_manual_checkout: bool,
    pub seller_access: SellerAccess,
    pub credits_service_token: Option<SecretString>,
}

pub(super) fn read(r: &mut Reader<'_>, dev: bool) -> Http {
    let port = r.number("PORT", 8000u16, "use a port number such as 8000");
    let bind_host = r
        .get("BIND_HOST")
        .unwrap_or(if dev { "127.0.0.1" } else { "0.0.0.0" })
        .to_string();

    let mut cors_allowed_origins = Vec::new();
    for origin in r.list("CORS_ALLOWED_ORIGINS") {
        match Url::parse(&origin) {
            Ok(u) if u.path() == "/" && u.query().is_none() => {
                cors_allowed_origins.push(origin.trim_end_matches('/').to_string())
            }
            _ => r.problem(
                "CORS_ALLOWED_ORIGINS",
                format!("`{origin}` is not an origin"),
                "list origins like http://localhost:5173, comma-separated, without paths",
            ),
        }
    }
    if cors_allowed_origins.is_empty() && dev {
        cors_allowed_origins = vec![
            "http://localhost:5173".into(),
            "http://127.0.0.1:5173".into(),
        ];
    }
    let frontend_app_url = r
        .url("FRONTEND_APP_URL")
        .unwrap_or_else(|| Url::parse("http://127.0.0.1:5173").expect("static URL"));

    let max_body_bytes = r.number(
        "MAX_BODY_BYTES",
        1024 * 1024usize,
        "use a number of bytes such as 1048576",
    );
    if max_body_bytes < 1024 {
        r.problem(
            "MAX_BODY_BYTES",
            "is below 1024 bytes",
            "use a number of bytes such as 1048576",
        );
    }

    let credits_service_token = r.secret("CREDITS_SERVICE_TOKEN");
    if credits_service_token
        .as_ref()
        .is_some_and(|t| t.expose_secret().len() < 32)
    {
        r.problem(
            "CREDITS_SERVICE_TOKEN",
            "is shorter than 32 characters",
            "generate one with: openssl rand -hex 32",
        );
    }
    let seller_access = match r.get("SELLER_ACCESS").unwrap_or("role") {
        "role" => SellerAccess::Role,
        "any" => SellerAccess::Any,
        other => {
            r.problem(
                "SELLER_ACCESS",
                format!("`{other}` is not a seller access rule"),
                "use role (sellers and admins only) or any (every signed-in user sells)",
            );
            SellerAccess::Role
        }
    };

    Http {
        port,
        bind_host,
        cors_allowed_origins,
        frontend_app_url,
        max_body_bytes,
        order_confirm_allow_manual: r.flag("ORDER_CONFIRM_ALLOW_MANUAL", false),
        order_confirm_allow_client_side_clerk_confirm: r
            .flag("ORDER_CONFIRM_ALLOW_CLIENT_SIDE_CLERK_CONFIRM", false),
        dev_manual_checkout: r.flag("DEV_MANUAL_CHECKOUT", false),
        seller_access,
        credits_service_token,
    }
}
