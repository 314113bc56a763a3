//! Abuse limits, as the starter sets them: anonymous requests per client IP, signed-in requests
//! per user, and three scopes on the routes that cost (order creation, confirmation, download
//! access). GCRA limiters from `governor`, keyed by identity; a refused request answers 429
//! `throttled` with `Retry-After` and the starter's `detail`. Webhooks, health and metrics are
//! never throttled: a provider's retry storm must not turn into lost events.
//!
//! The limits live in this process's memory: with N api replicas behind a balancer, a client
//! gets up to N times the rate (see docs/storefront.md).

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{Method, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use granary_jobs::config::{Rate, Throttles as Settings};

use crate::{
    ApiError, AppState,
    auth::{self, VerifiedSession},
};

/// The limiters of one process.
pub struct Throttles {
    anon: Option<DefaultKeyedRateLimiter<String>>,
    user: Option<DefaultKeyedRateLimiter<String>>,
    checkout_create: Option<DefaultKeyedRateLimiter<String>>,
    order_confirm: Option<DefaultKeyedRateLimiter<String>>,
    download_access: Option<DefaultKeyedRateLimiter<String>>,
    trusted: Vec<ipnet::IpNet>,
    seen: AtomicU64,
}

fn limiter(rate: Option<Rate>) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = rate?;
    let count = NonZeroU32::new(rate.count)?;
    // `count` at once, then one more every period / count: never more than `count` in a period.
    let quota = Quota::with_period(rate.period / rate.count)?.allow_burst(count);
    Some(RateLimiter::keyed(quota))
}

impl Throttles {
    /// The limiters for these settings.
    pub fn new(s: &Settings) -> Self {
        Self {
            anon: limiter(s.anon),
            user: limiter(s.user),
            checkout_create: limiter(s.checkout_create),
            order_confirm: limiter(s.order_confirm),
            download_access: limiter(s.download_access),
            trusted: s.trusted_proxies.clone(),
            seen: AtomicU64::new(0),
        }
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    /// untrusted address in `X-Forwarded-For` (read right to left, as each proxy appends).
    fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())?;
        if !self.trusted.iter().any(|n| n.contains(&peer)) {
            return Some(peer);
        }
        let mut client = peer;
        for value in parts.headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else { break };
            for hop in value.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(ip) if self.trusted.iter().any(|n| n.contains(&ip)) => client = ip,
                    Ok(ip) => return Some(ip),
                    Err(_) => return Some(client),
                }
            }
        }
        Some(client)
    }

    fn scope(&self, method: &Method, route: &str) -> Option<&DefaultKeyedRateLimiter<String>> {
        if method != Method::POST {
            return None;
        }
        match route {
            "/api/account/orders/create/" => self.checkout_create.as_ref(),
            "/api/account/orders/{public_id}/confirm/" => self.order_confirm.as_ref(),
            "/api/account/downloads/{token}/access/" => self.download_access.as_ref(),
            _ => None,
        }
    }

    fn check(limiter: &DefaultKeyedRateLimiter<String>, key: &String) -> Result<(), ApiError> {
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            ApiError::Throttled {
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Forgets idle keys now and then, so a scan of many addresses cannot grow memory for good.
    fn housekeeping(&self) {
        if self.seen.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            for l in [
                &self.anon,
                &self.user,
                &self.checkout_create,
                &self.order_confirm,
                &self.download_access,
            ]
            .into_iter()
            .flatten()
            {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }
}

/// Routes that are never throttled (a provider's retry storm must not turn into lost events); the
/// OpenAPI document declares 429 on every other route.
pub fn never_throttled(path: &str) -> bool {
    path.starts_with("/api/webhooks/") || path == "/api/health/" || path == "/metrics"
}

/// The middleware: identity (a valid session, else the client address), then the general
/// limit and the route's scope.
pub async fn throttle(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS || never_throttled(req.uri().path()) {
        return next.run(req).await;
    }
    let throttles = &state.throttles;
    throttles.housekeeping();
    let (mut parts, body) = req.into_parts();
    // The shop's own services (the credits service token) are trusted callers, not abusers.
    if auth::is_service_token(&parts, &state.config) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let session = match auth::session_token(&parts) {
        Some((token, _)) => state.verifier.verify(token).await.ok(),
        None => None,
    };
    let (key, general) = match &session {
        Some(claims) => (format!("user:{}", claims.sub), throttles.user.as_ref()),
        None => {
            let ip = throttles
                .client_ip(&parts)
                .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
            (format!("ip:{ip}"), throttles.anon.as_ref())
        }
    };
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let scoped = route
        .as_deref()
        .and_then(|r| throttles.scope(&parts.method, r));
    for l in [general, scoped].into_iter().flatten() {
        if let Err(e) = Throttles::check(l, &key) {
            tracing::info!(
                key,
                route = route.as_deref().unwrap_or("<unmatched>"),
                "throttled"
            );
            return e.into_response();
        }
    }
    if let Some(claims) = session {
        parts.extensions.insert(VerifiedSession(claims));
    }
    next.run(Request::from_parts(parts, body)).await
}
