//! The HTTP server: hyper with the limits `axum::serve` cannot set. A client gets
//! `HTTP_HEADER_TIMEOUT_SECONDS` (10) to send a request's headers (then hyper closes the
//! connection: no status can be read by a client that has not finished its request line and
//! headers), and `HTTP_BODY_TIMEOUT_SECONDS` (30) to send its body (then 408
//! `request_timeout`, by `middleware::read_body`). A connection that trickles bytes can therefore hold a
//! task for seconds, never indefinitely: the slowloris defence, on every route, the
//! unauthenticated webhooks included.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{ConnectInfo, Request},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse as _, Response},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The contract's error body: `{"error": {"code", "message", "request_id"?}, "detail"}` (the
/// api adds `fields` for validation errors on top of this shape).
pub fn error_body(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: Option<String>,
) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let Some(id) = request_id {
        error["request_id"] = json!(id);
    }
    (status, Json(json!({ "error": error, "detail": message }))).into_response()
}

/// The credential of `Authorization: Bearer <credential>` (the scheme in either case).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting and drains the
/// connections in flight (graceful shutdown). Every accepted connection has `TCP_NODELAY`: an
/// answer written in more than one segment must not wait for the client's delayed ACK (the same
/// 40 ms trap on the database connections is what held a quarter of the webhook deliveries at
/// 40–55 ms; see `vendor/sqlx-core`). Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum::serve does.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY on a connection");
        }
        let service = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            req.map(Body::new)
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
