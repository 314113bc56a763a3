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
use serde::Deserialize;
use serde_json::{Value, json};

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

/// A safe download file name from the asset title and its stored extension.
fn file_name(title: &str, key: &str) -> String {
    let stem: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stem = stem.trim_matches('-');
    let stem = if stem.is_empty() { "download" } else { stem };
    match key
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| e.len() <= 8 && !e.contains('/'))
    {
        Some(ext) => format!("{stem}.{ext}"),
        None => stem.to_string(),
    }
}

/// `POST /api/account/downloads/<token>/access/`.
#[utoipa::path(post, path = "/api/account/downloads/{token}/access/", tag = "account", params(("token" = String, Path)), responses((status = 200, description = "{url, expires_at}"), (status = 403, description = "download_not_allowed"), (status = 404, description = "not_found"), (status = 503, description = "storage_unavailable")))]
pub async fn access(
    State(state): State<AppState>,
    user: AuthUser,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<(HeaderMap, Json<Value>)> {
    let storage = state.storage()?;
    let mut tx = state.pool.begin().await?;
    // Check and count in one statement: concurrent requests cannot overshoot the limit (the
    // row lock makes each re-check the count the previous one left).
    let granted = sqlx::query!(
        r#"
        UPDATE download_grants g SET download_count = g.download_count + 1
        FROM digital_assets a
        WHERE g.token = $1 AND g.profile_id = $2 AND a.id = g.asset_id
          AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
          AND (g.max_downloads IS NULL OR g.download_count < g.max_downloads)
          AND a.status = 'ready' AND a.is_active AND a.deleted_at IS NULL
        RETURNING g.id, a.storage_key AS "storage_key!", a.title
        "#,
        token,
        user.profile_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(g) = granted else {
        let exists = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM download_grants WHERE token = $1 AND profile_id = $2) AS "e!""#, token, user.profile_id)
            .fetch_one(&mut *tx)
            .await?;
        return Err(if exists {
            not_allowed()
        } else {
            ApiError::NotFound
        });
    };
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(500).collect::<String>());
    sqlx::query!(
        "INSERT INTO download_events (grant_id, profile_id, ip, user_agent) VALUES ($1, $2, $3::text::inet, $4)",
        g.id,
        user.profile_id,
        peer.ip().to_string(),
        ua
    )
    .execute(&mut *tx)
    .await?;
    let ttl = state.config.signed_url_ttl;
    let url = storage
        .signed_url(
            &g.storage_key,
            &file_name(&g.title, &g.storage_key),
            ttl,
            &api_base(&headers),
        )
        .await
        .map_err(|e| ApiError::Unavailable {
            code: "storage_unavailable",
            message: format!("Asset storage could not sign the URL: {e}"),
        })?;
    tx.commit().await?;
    let expires_at = chrono::Utc::now() + ttl;
    Ok((
        no_store(),
        Json(json!({ "url": url, "expires_at": expires_at })),
    ))
}

/// The signed `fs` URL's query.
#[derive(Debug, Deserialize)]
pub struct FileQuery {
    key: String,
    name: String,
    exp: i64,
    sig: String,
}

/// `GET /api/downloads/file/`: streams an `fs` object when the signature is valid and fresh.
pub async fn file(
    State(state): State<AppState>,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let storage = state.storage()?;
    if storage.backend != "fs"
        || !storage.verify_fs_url(
            &q.key,
            &q.name,
            q.exp,
            &q.sig,
            chrono::Utc::now().timestamp(),
        )
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
        HeaderValue::from_static(granary_jobs::storage::content_type_for(ext.as_deref())),
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
