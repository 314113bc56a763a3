//! Downloads: `POST /api/account/downloads/<token>/access/` checks and counts the grant in one
//! statement and answers a short-lived signed URL; `GET /api/downloads/file/` serves `fs`
//! storage behind an HMAC signature. Responses are never cached; tokens never reach the logs
//! (spans carry the matched route, `{token}`, not the path).

use std::net::SocketAddr;

use axum::{
    Json,
    body::Body,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use granary_jobs::downloads::{self, AccessOut, Requester};
use serde::Deserialize;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{ApiError, ApiResult, AppState, auth::AuthUser};

fn no_store() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h
}

fn not_allowed() -> ApiError {
    ApiError::Forbidden {
        code: "download_not_allowed",
        message: "This download is expired, revoked, inactive or out of attempts.".into(),
    }
}

/// Where the client reached the api (for `fs` URLs).
fn api_base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}")
}

/// `POST /api/account/downloads/<token>/access/`: `{download_url, url, expires_at, grant}`.
#[utoipa::path(post, path = "/api/account/downloads/{token}/access/", tag = "account", params(("token" = String, Path)), responses((status = 200, body = AccessOut), (status = 403, description = "download_not_allowed, or download_not_ready: a placeholder whose file the seller has not uploaded yet"), (status = 404, description = "not_found"), (status = 503, description = "storage_unavailable")))]
pub async fn access(
    State(state): State<AppState>,
    user: AuthUser,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<(HeaderMap, Json<AccessOut>)> {
    let storage = state.storage()?;
    let who = Requester {
        ip: peer.ip().to_string(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(500).collect()),
        api_base: api_base(&headers),
    };
    let out = downloads::access(
        &state.pool,
        storage,
        state.config.signed_url_ttl,
        user.profile_id,
        &token,
        &who,
    )
    .await?;
    Ok((no_store(), Json(out)))
}

/// The signed `fs` URL's query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The object's key.
    key: String,
    /// The file name the browser saves it as.
    name: String,
    /// Expiry, in Unix seconds.
    exp: i64,
    /// The download grant the URL serves (checked live at fetch time).
    grant: Option<uuid::Uuid>,
    /// HMAC of the others.
    sig: String,
}

/// `GET /api/downloads/file/`: streams an `fs` object when the signature is valid and fresh.
#[utoipa::path(get, path = "/api/downloads/file/", tag = "account", params(FileQuery), responses((status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>), (status = 403, description = "download_not_allowed: a bad or expired signature"), (status = 404, description = "not_found: the object is gone"), (status = 503, description = "storage_unavailable")))]
pub async fn file(
    State(state): State<AppState>,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let storage = state.storage()?;
    let grant = q.grant.map(|g| g.to_string()).unwrap_or_default();
    if storage.backend != "fs"
        || !storage.verify_fs_url(
            &q.key,
            &q.name,
            q.exp,
            &grant,
            &q.sig,
            chrono::Utc::now().timestamp(),
        )
    {
        return Err(not_allowed());
    }
    // A grant revoked (a refund, an operator) or expired since the URL was signed stops here.
    if let Some(g) = q.grant
        && !granary_jobs::downloads::grant_is_live(&state.pool, g).await?
    {
        return Err(not_allowed());
    }
    let (len, stream) = storage.stream(&q.key).await.map_err(|e| {
        tracing::error!(error = %e, "signed download of a missing object");
        ApiError::NotFound
    })?;
    let ext = q.key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let mut res = Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(granary_jobs::platform::storage::content_type_for(
            ext.as_deref(),
        )),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        q.name.replace(['"', '\\'], "")
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// This module's routes, each declared once: its path and method are its `#[utoipa::path]`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(access))
        .routes(routes!(file))
}
