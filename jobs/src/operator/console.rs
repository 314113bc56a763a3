//! Who may enter the operator console: one-time login links (printed by
//! `granary-worker console login-link`) and the sessions they open. Only SHA-256 hashes of tokens
//! are stored. Every login, and every session ended by hand, is written to `operator_actions`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore as _;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::platform::audit;

/// How long a console session lasts from its login (then the operator logs in again).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The default life of a login link.
pub const LINK_TTL: Duration = Duration::from_secs(15 * 60);

/// The longest life a login link may be given.
pub const LINK_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// A live console session.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// Row id.
    pub id: Uuid,
    /// Who acts through it (written to the audit with every action).
    pub actor: String,
    /// Every form of the console carries it; a POST without it is refused.
    pub csrf_token: String,
    /// When it ends by itself.
    pub expires_at: DateTime<Utc>,
}

/// A session as listed by the CLI.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    /// Row id.
    pub id: Uuid,
    /// Who acts through it.
    pub actor: String,
    /// `login_link` or `clerk`.
    pub opened_via: String,
    /// Opened.
    pub created_at: DateTime<Utc>,
    /// Last request.
    pub last_seen_at: DateTime<Utc>,
    /// Ends by itself.
    pub expires_at: DateTime<Utc>,
}

/// A fresh random token (256 bits, hex).
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Creates a one-time login link's token, valid for `ttl` (capped at [`LINK_TTL_MAX`]).
pub async fn create_login_link(
    pool: &PgPool,
    created_by: &str,
    ttl: Duration,
) -> sqlx::Result<(String, DateTime<Utc>)> {
    let token = new_token();
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        "INSERT INTO console_login_links (token_hash, created_by, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING id, expires_at",
        hash(&token),
        created_by,
        seconds(ttl.min(LINK_TTL_MAX))
    )
    .fetch_one(&mut *tx)
    .await?;
    let (id, expires_at) = (row.id, row.expires_at);
    audit::record(
        &mut *tx,
        &audit::Action {
            actor: created_by,
            action: "console.login_link",
            target_type: "console_login_link",
            target_id: &id.to_string(),
            reason: None,
            details: json!({ "expires_at": expires_at }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((token, expires_at))
}

async fn open(
    tx: &mut sqlx::PgConnection,
    actor: &str,
    via: &str,
    link: Option<Uuid>,
) -> sqlx::Result<(String, Session)> {
    let token = new_token();
    let csrf_token = new_token();
    let row = sqlx::query!(
        "INSERT INTO console_sessions (token_hash, csrf_token, actor, opened_via, login_link_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) RETURNING id, expires_at",
        hash(&token),
        csrf_token,
        actor,
        via,
        link,
        seconds(SESSION_TTL)
    )
    .fetch_one(&mut *tx)
    .await?;
    let (id, expires_at) = (row.id, row.expires_at);
    audit::record(
        &mut *tx,
        &audit::Action {
            actor,
            action: "console.login",
            target_type: "console_session",
            target_id: &id.to_string(),
            reason: None,
            details: json!({ "opened_via": via, "login_link_id": link }),
        },
    )
    .await?;
    Ok((
        token,
        Session {
            id,
            actor: actor.to_string(),
            csrf_token,
            expires_at,
        },
    ))
}

/// Spends a login link: a new session (its token for the cookie), or `None` when the link is
/// unknown, used or expired.
pub async fn redeem_login_link(
    pool: &PgPool,
    link_token: &str,
) -> sqlx::Result<Option<(String, Session)>> {
    let mut tx = pool.begin().await?;
    let Some(link) = sqlx::query!(
        "UPDATE console_login_links SET used_at = now()
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
         RETURNING id, created_by",
        hash(link_token)
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let (link, created_by) = (link.id, link.created_by);
    let opened = open(
        &mut tx,
        &format!("console:{created_by}"),
        "login_link",
        Some(link),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(opened))
}

/// Opens a console session for an admin signed in with Clerk.
pub async fn open_for_admin(pool: &PgPool, clerk_user_id: &str) -> sqlx::Result<(String, Session)> {
    let mut tx = pool.begin().await?;
    let opened = open(&mut tx, &format!("admin:{clerk_user_id}"), "clerk", None).await?;
    tx.commit().await?;
    Ok(opened)
}

/// The live session a cookie's token names (and notes that it was seen).
pub async fn session(pool: &PgPool, token: &str) -> sqlx::Result<Option<Session>> {
    sqlx::query_as!(
        Session,
        "UPDATE console_sessions SET last_seen_at = now()
         WHERE token_hash = $1 AND ended_at IS NULL AND expires_at > now()
         RETURNING id, actor, csrf_token, expires_at",
        hash(token)
    )
    .fetch_optional(pool)
    .await
}

/// Live sessions, newest first.
pub async fn sessions(pool: &PgPool) -> sqlx::Result<Vec<SessionRow>> {
    sqlx::query_as!(
        SessionRow,
        "SELECT id, actor, opened_via, created_at, last_seen_at, expires_at FROM console_sessions
         WHERE ended_at IS NULL AND expires_at > now() ORDER BY created_at DESC"
    )
    .fetch_all(pool)
    .await
}

/// Ends one live session (`Some(id)`) or all of them (`None`); returns how many ended. Audited.
pub async fn end_sessions(pool: &PgPool, id: Option<Uuid>, by: &str) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let ended: Vec<Uuid> = sqlx::query_scalar!(
        "UPDATE console_sessions SET ended_at = now(), ended_by = $2
         WHERE ended_at IS NULL AND expires_at > now() AND ($1::uuid IS NULL OR id = $1)
         RETURNING id",
        id,
        by
    )
    .fetch_all(&mut *tx)
    .await?;
    for s in &ended {
        audit::record(
            &mut *tx,
            &audit::Action {
                actor: by,
                action: "console.logout",
                target_type: "console_session",
                target_id: &s.to_string(),
                reason: None,
                details: json!({}),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ended.len() as u64)
}
