//! Emails: a row first (recipient, kind, dedupe key, rendered content), then a `send_email` job
//! that calls Resend with the row's dedupe key as the Idempotency-Key, so a retried job never
//! sends a second copy. Without `RESEND_API_KEY` the row is kept as the development outbox.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    model::EmailStatus,
    queue::{self, Job, JobContext, JobError, JobRefs},
};

/// `send_email`: one Resend call for one email row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendEmail {
    /// `emails.id`.
    pub email_id: Uuid,
    /// The order the email is about, so "requeue every failed job of this order" covers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
}

impl Job for SendEmail {
    const QUEUE: &'static str = "send_email";
    const MAX_ATTEMPTS: i32 = 12;

    fn dedupe_key(&self) -> Option<String> {
        Some(self.email_id.to_string())
    }

    fn refs(&self) -> JobRefs {
        JobRefs {
            email_id: Some(self.email_id),
            order_id: self.order_id,
            ..Default::default()
        }
    }
}

/// An email to send.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Unique per logical email (`receipt:<order>`): the second attempt to queue it is a no-op.
    pub dedupe_key: String,
    /// receipt, booking_request, subscription_started, ...
    pub kind: &'static str,
    /// Subject line.
    pub subject: String,
    /// Plain HTML.
    pub html: String,
    /// Plain text.
    pub text: String,
    /// Related order.
    pub order_id: Option<Uuid>,
    /// Recipient's profile (the address is looked up: billing email, else profile email).
    pub profile_id: Uuid,
}

/// Writes the email row and enqueues its sending, in the caller's transaction. A recipient
/// without any address gets a `skipped` row with the reason instead. Returns the row id, or None
/// when this email was already queued.
pub async fn queue_email(conn: &mut PgConnection, d: &Draft) -> sqlx::Result<Option<Uuid>> {
    // The row's id is chosen here so that its `send_email` can be written by the same statement.
    let id = Uuid::new_v4();
    let send = queue::Prepared::of(&SendEmail {
        email_id: id,
        order_id: d.order_id,
    })?;
    // One statement: the recipient (billing email, else profile email), the row and, when there
    // is an address, its sending. A row that already exists (same dedupe key) is left alone, and
    // nothing is enqueued for it: its own `send_email` was written with it.
    let row = sqlx::query!(
        r#"
        WITH rcpt AS (
            SELECT coalesce(nullif(c.billing_email, ''), nullif(p.email, '')) AS address
            FROM (SELECT $8::uuid AS id) x
            LEFT JOIN profiles p ON p.id = x.id
            LEFT JOIN customer_accounts c ON c.profile_id = p.id
        ), e AS (
            INSERT INTO emails (id, dedupe_key, kind, to_address, subject, html_body, text_body, status, skip_reason, order_id, profile_id)
            SELECT $9, $1, $2, address, $3, $4, $5,
                   CASE WHEN address IS NULL THEN 'skipped' ELSE 'pending' END,
                   CASE WHEN address IS NULL THEN $6 END, $7, $8
            FROM rcpt
            ON CONFLICT (dedupe_key) DO NOTHING
            RETURNING id, to_address IS NOT NULL AS sendable
        )
        SELECT id, sendable AS "sendable!",
               CASE WHEN sendable THEN granary_insert_jobs($10, $11) END AS jobs
        FROM e
        "#,
        d.dedupe_key,
        d.kind,
        d.subject,
        d.html,
        d.text,
        "no recipient: the customer has neither a billing email nor a profile email",
        d.order_id,
        d.profile_id,
        id,
        send.batch() as _,
        send.notify(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    if row.as_ref().is_some_and(|r| r.sendable) {
        send.written();
    }
    Ok(row.map(|r| r.id))
}

/// A Resend client for `key` over the process's shared HTTP client (connections reused, root
/// certificates loaded once). Built per use, so resend-rs's own client-side limiter (9 calls
/// per 1.1 s per client) never paces Granary: Resend's 429 does, through `RetryAfter`.
pub fn resend_client(
    config: &crate::config::ResendConfig,
    key: &SecretString,
) -> resend_rs::Resend {
    let mut builder = resend_rs::ConfigBuilder::new(key.expose_secret())
        .client(crate::platform::http::client().clone());
    if let Some(base) = &config.base_url {
        builder = builder.base_url(base.clone());
    }
    resend_rs::Resend::with_config(builder.build())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A plain, readable HTML page around paragraphs of text (each escaped) and an optional button.
pub fn html(title: &str, paragraphs: &[String], link: Option<(&str, &str)>) -> String {
    let body: String = paragraphs
        .iter()
        .map(|p| format!("<p>{}</p>\n", escape(p)))
        .collect();
    let button = link
        .map(|(label, href)| format!(r#"<p><a href="{}" style="display:inline-block;padding:10px 16px;background:#1a1a1a;color:#fff;text-decoration:none;border-radius:4px">{}</a></p>"#, escape(href), escape(label)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html><body style=\"font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;line-height:1.5;color:#1a1a1a;max-width:560px;margin:24px auto\">\n<h1 style=\"font-size:20px\">{}</h1>\n{body}{button}\n</body></html>\n",
        escape(title)
    )
}

/// The same content as plain text.
pub fn text(title: &str, paragraphs: &[String], link: Option<(&str, &str)>) -> String {
    let mut out = format!("{title}\n\n");
    for p in paragraphs {
        out.push_str(p);
        out.push_str("\n\n");
    }
    if let Some((label, href)) = link {
        out.push_str(&format!("{label}: {href}\n"));
    }
    out
}

/// Runs `send_email`.
pub async fn send_email(ctx: JobContext, job: SendEmail) -> Result<(), JobError> {
    let Some(row) = sqlx::query!(
        r#"SELECT dedupe_key, to_address, subject, html_body, text_body, status AS "status: EmailStatus" FROM emails WHERE id = $1"#,
        job.email_id
    )
    .fetch_optional(&ctx.pool)
    .await?
    else {
        return Err(JobError::permanent(anyhow::anyhow!("email {} does not exist", job.email_id)));
    };
    if row.status.is_done() {
        return Ok(());
    }
    let Some(to) = row.to_address else {
        sqlx::query!(
            "UPDATE emails SET status = 'skipped', skip_reason = 'no recipient' WHERE id = $1",
            job.email_id
        )
        .execute(&ctx.pool)
        .await?;
        return Ok(());
    };
    let resend = &ctx.config.resend;
    let Some(key) = &resend.api_key else {
        // Development: the rendered email stays in the table as the outbox.
        sqlx::query!(
            "UPDATE emails SET status = 'outbox', sent_at = now() WHERE id = $1",
            job.email_id
        )
        .execute(&ctx.pool)
        .await?;
        tracing::info!(email_id = %job.email_id, to = %to, subject = %row.subject, "email recorded in the outbox (RESEND_API_KEY unset)");
        return Ok(());
    };
    let client = resend_client(resend, key);
    let mut email = resend_rs::types::CreateEmailBaseOptions::new(
        resend.from.as_str(),
        [to.as_str()],
        row.subject.as_str(),
    )
    .with_html(&row.html_body)
    .with_text(&row.text_body);
    if let Some(reply) = &resend.reply_to {
        email = email.with_reply(reply);
    }
    match client
        .emails
        .send(email.with_idempotency_key(&row.dedupe_key))
        .await
    {
        Ok(sent) => {
            sqlx::query!("UPDATE emails SET status = 'sent', provider_message_id = $2, sent_at = now(), last_error = NULL WHERE id = $1", job.email_id, sent.id.to_string())
                .execute(&ctx.pool)
                .await?;
            tracing::info!(email_id = %job.email_id, provider_id = %sent.id, "email sent");
            Ok(())
        }
        Err(err) => {
            let (fate, message) = classify(&err);
            let final_status = if fate.is_permanent() {
                EmailStatus::Failed
            } else {
                EmailStatus::Pending
            };
            sqlx::query!(
                "UPDATE emails SET status = $2, last_error = $3 WHERE id = $1",
                job.email_id,
                final_status.as_str(),
                message
            )
            .execute(&ctx.pool)
            .await?;
            Err(fate)
        }
    }
}

/// Resend's answer decides the email's fate: 429 waits as told, 5xx and network errors retry,
/// other 4xx (validation, unverified domain, bad key) are permanent with Resend's message.
fn classify(err: &resend_rs::Error) -> (JobError, String) {
    use resend_rs::Error as E;
    match err {
        E::RateLimit {
            ratelimit_reset, ..
        } => {
            let wait = Duration::from_secs(ratelimit_reset.unwrap_or(1).clamp(1, 3600));
            let msg = format!("Resend rate limit (429); retrying in {wait:?}");
            (
                JobError::RetryAfter(wait, anyhow::anyhow!(msg.clone())),
                msg,
            )
        }
        E::Resend(r) if r.status_code == 429 => {
            let msg = format!("Resend 429 {}: {}", r.name, r.message);
            (
                JobError::RetryAfter(Duration::from_secs(1), anyhow::anyhow!(msg.clone())),
                msg,
            )
        }
        E::Resend(r) if r.status_code >= 500 => {
            let msg = format!("Resend {} {}: {}", r.status_code, r.name, r.message);
            (JobError::Retry(anyhow::anyhow!(msg.clone())), msg)
        }
        E::Resend(r) => {
            let msg = format!(
                "Resend refused the email ({} {}): {}",
                r.status_code, r.name, r.message
            );
            (JobError::Permanent(anyhow::anyhow!(msg.clone())), msg)
        }
        other => {
            let msg = format!("Resend unreachable or answered oddly: {other}");
            (JobError::Retry(anyhow::anyhow!(msg.clone())), msg)
        }
    }
}
