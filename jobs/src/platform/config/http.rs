//! The HTTP side: where the api listens, who may call it from a browser, request limits, and the
//! storefront's policy switches.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{SellerAccess, reader::Reader};

/// A rate: `count` requests per `period` (the starter's `120/minute` notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per period (also the burst).
    pub count: u32,
    /// The period.
    pub period: Duration,
}

/// The throttles (the starter's `DEFAULT_THROTTLE_RATES`); None turns one off.
#[derive(Debug, Clone)]
pub struct Throttles {
    /// Requests without a valid session, per client IP (`THROTTLE_ANON`, `120/minute`).
    pub anon: Option<Rate>,
    /// Requests with a valid session, per user (`THROTTLE_USER`, `1500/hour`).
    pub user: Option<Rate>,
    /// Order creation (`THROTTLE_CHECKOUT_CREATE`, `60/hour`).
    pub checkout_create: Option<Rate>,
    /// Order confirmation (`THROTTLE_ORDER_CONFIRM`, `60/hour`).
    pub order_confirm: Option<Rate>,
    /// Download access (`THROTTLE_DOWNLOAD_ACCESS`, `180/hour`).
    pub download_access: Option<Rate>,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`, addresses or CIDR
    /// ranges). Empty: the peer address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Parses `120/minute` (`s`, `sec`, `second`, `m`, `min`, `minute`, `h`, `hour`, `d`, `day`, as
/// Django REST framework reads the first letter); `0` or `off` is None.
pub fn parse_rate(raw: &str) -> Result<Option<Rate>, String> {
    let raw = raw.trim();
    if raw == "0" || raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (n, unit) = raw
        .split_once('/')
        .ok_or_else(|| format!("`{raw}` is not a rate like 120/minute"))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{n}` is not a number of requests"))?;
    let period = match unit.trim().chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('s') => Duration::from_secs(1),
        Some('m') => Duration::from_secs(60),
        Some('h') => Duration::from_secs(3600),
        Some('d') => Duration::from_secs(86_400),
        _ => return Err(format!("`{unit}` is not second, minute, hour or day")),
    };
    Ok((count > 0).then_some(Rate { count, period }))
}

/// What this part reads.
pub(super) struct Http {
    pub port: u16,
    pub bind_host: String,
    pub cors_allowed_origins: Vec<String>,
    pub frontend_app_url: Url,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub order_confirm_allow_manual: bool,
    pub order_confirm_allow_client_side_clerk_confirm: bool,
    pub dev_manual_checkout: bool,
    pub seller_access: SellerAccess,
    pub credits_service_token: Option<SecretString>,
    pub throttles: Throttles,
    pub public_url: Url,
    pub metrics_token: Option<SecretString>,
    pub metrics_bind: Option<std::net::SocketAddr>,
}

fn rate(r: &mut Reader<'_>, var: &'static str, default: &str) -> Option<Rate> {
    let raw = r.get(var).unwrap_or(default);
    parse_rate(raw).unwrap_or_else(|why| {
        r.problem(
            var,
            why,
            format!("use a rate like {default} (second, minute, hour or day), or 0 to turn it off"),
        );
        None
    })
}

/// Reads where the api listens, CORS, request limits and timeouts, tokens, metrics, seller
/// access, throttles and the storefront's policy switches.
pub(super) fn read(r: &mut Reader<'_>, dev: bool) -> Http {
    let port = r.number("PORT", 8000u16, "use a port number such as 8000");
    let bind_host = r
        .get("BIND_HOST")
        .unwrap_or(if dev { "127.0.0.1" } else { "0.0.0.0" })
        .to_string();
    let cors_allowed_origins = cors_allowed_origins(r, dev);
    let frontend_app_url = r
        .url("FRONTEND_APP_URL")
        .unwrap_or_else(|| Url::parse("http://127.0.0.1:5173").expect("static URL"));

    let max_body_bytes = max_body_bytes(r);
    let (header_timeout, body_timeout) = timeouts(r);
    let credits_service_token = long_token(r, "CREDITS_SERVICE_TOKEN");
    let public_url = r.url("PUBLIC_URL").unwrap_or_else(|| {
        let host = if bind_host == "0.0.0.0" {
            "127.0.0.1"
        } else {
            bind_host.as_str()
        };
        Url::parse(&format!("http://{host}:{port}")).expect("host and port make a URL")
    });
    let metrics_token = long_token(r, "METRICS_TOKEN");
    let metrics_bind = metrics_bind(r);
    let seller_access = seller_access(r);
    let throttles = throttles(r);
    Http {
        throttles,
        port,
        bind_host,
        cors_allowed_origins,
        frontend_app_url,
        max_body_bytes,
        header_timeout,
        body_timeout,
        order_confirm_allow_manual: r.flag("ORDER_CONFIRM_ALLOW_MANUAL", false),
        order_confirm_allow_client_side_clerk_confirm: r
            .flag("ORDER_CONFIRM_ALLOW_CLIENT_SIDE_CLERK_CONFIRM", false),
        dev_manual_checkout: r.flag("DEV_MANUAL_CHECKOUT", false),
        seller_access,
        credits_service_token,
        public_url,
        metrics_token,
        metrics_bind,
    }
}

/// `CORS_ALLOWED_ORIGINS` (the storefront's dev origins when empty in development).
fn cors_allowed_origins(r: &mut Reader<'_>, dev: bool) -> Vec<String> {
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
    cors_allowed_origins
}

/// `MAX_BODY_BYTES`: at least 1024.
fn max_body_bytes(r: &mut Reader<'_>) -> usize {
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
    max_body_bytes
}

/// `HTTP_HEADER_TIMEOUT_SECONDS` and `HTTP_BODY_TIMEOUT_SECONDS`, 1 to 600 seconds each.
// The slowloris bounds: a client that trickles its headers or its body holds a connection
// for seconds, never indefinitely.
fn timeouts(r: &mut Reader<'_>) -> (Duration, Duration) {
    let header_timeout = Duration::from_secs(r.number(
        "HTTP_HEADER_TIMEOUT_SECONDS",
        10u64,
        "use a number of seconds such as 10",
    ));
    let body_timeout = Duration::from_secs(r.number(
        "HTTP_BODY_TIMEOUT_SECONDS",
        30u64,
        "use a number of seconds such as 30",
    ));
    for (name, t) in [
        ("HTTP_HEADER_TIMEOUT_SECONDS", header_timeout),
        ("HTTP_BODY_TIMEOUT_SECONDS", body_timeout),
    ] {
        if t.is_zero() || t > Duration::from_secs(600) {
            r.problem(name, "must be 1 to 600 seconds", "use e.g. 10 or 30");
        }
    }
    (header_timeout, body_timeout)
}

/// An optional secret token that must be at least 32 characters long.
fn long_token(r: &mut Reader<'_>, var: &'static str) -> Option<SecretString> {
    let token = r.secret(var);
    if token.as_ref().is_some_and(|t| t.expose_secret().len() < 32) {
        r.problem(
            var,
            "is shorter than 32 characters",
            "generate one with: openssl rand -hex 32",
        );
    }
    token
}

/// `METRICS_BIND`: the address and port of the private metrics listener, if any.
fn metrics_bind(r: &mut Reader<'_>) -> Option<std::net::SocketAddr> {
    match r.get("METRICS_BIND") {
        None => None,
        Some(a) => match a.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                r.problem(
                    "METRICS_BIND",
                    format!("`{a}` is not an address and port"),
                    "use an address like 127.0.0.1:9464",
                );
                None
            }
        },
    }
}

/// `SELLER_ACCESS`: `role` (the default) or `any`.
fn seller_access(r: &mut Reader<'_>) -> SellerAccess {
    match r.get("SELLER_ACCESS").unwrap_or("role") {
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
    }
}

/// `TRUSTED_PROXIES` and the `THROTTLE_*` rates.
fn throttles(r: &mut Reader<'_>) -> Throttles {
    let mut trusted_proxies = Vec::new();
    for p in r.list("TRUSTED_PROXIES") {
        let parsed = p
            .parse::<ipnet::IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => r.problem(
                "TRUSTED_PROXIES",
                format!("`{p}` is not an IP address or CIDR range"),
                "list your load balancers' addresses, e.g. 10.0.0.0/8,192.168.1.10",
            ),
        }
    }
    Throttles {
        anon: rate(r, "THROTTLE_ANON", "120/minute"),
        user: rate(r, "THROTTLE_USER", "1500/hour"),
        checkout_create: rate(r, "THROTTLE_CHECKOUT_CREATE", "60/hour"),
        order_confirm: rate(r, "THROTTLE_ORDER_CONFIRM", "60/hour"),
        download_access: rate(r, "THROTTLE_DOWNLOAD_ACCESS", "180/hour"),
        trusted_proxies,
    }
}
