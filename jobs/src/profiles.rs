//! `/api/me/` as the starter nests it (docs/storefront.md §4.4), the customer account, and the
//! dashboard's preflight email test.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{
    config::ResendConfig,
    emails::{self, Draft},
    error::{DomainError, DomainResult, Fields},
    model::Role,
};

/// The profile, as the starter shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProfileOut {
    /// Id.
    pub id: Uuid,
    /// Clerk user id.
    pub clerk_user_id: String,
    /// Email.
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Avatar.
    pub image_url: String,
    /// `free`, `pro` or `enterprise`, from the billing features.
    pub plan_tier: String,
    /// Features from the billing claim and entitlements.
    pub billing_features: Vec<String>,
    /// buyer, seller, admin.
    pub role: String,
    /// Not deleted.
    pub is_active: bool,
    /// Free-form.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// The billing details, as the starter shows them (unset text is `""`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CustomerOut {
    /// Id.
    pub id: Uuid,
    /// `{id, clerk_user_id, email, first_name, last_name}`.
    #[schema(value_type = Object)]
    pub profile: Value,
    /// The payment provider's customer id (none: Granary keeps no provider customer).
    pub external_customer_id: String,
    /// Billing email.
    pub billing_email: String,
    /// Full name.
    pub full_name: String,
    /// Company.
    pub company_name: String,
    /// Phone.
    pub phone: String,
    /// ISO 3166 alpha-2.
    pub country: String,
    /// Tax id.
    pub tax_id: String,
    /// Free-form; the preflight email test records `preflight_email_last_sent_at` here.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// `GET /api/me/`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeOut {
    /// Clerk user id.
    pub clerk_user_id: String,
    /// Email.
    pub email: String,
    /// The token's organisation, if any.
    pub org_id: Option<String>,
    /// Enabled features.
    pub billing_features: Vec<String>,
    /// The profile.
    pub profile: ProfileOut,
    /// The customer account.
    pub customer_account: CustomerOut,
    /// Granary's role (also in `profile`).
    pub role: String,
}

/// Plan tier from the features, as the starter infers it.
pub fn plan_tier(features: &[String]) -> &'static str {
    if features.iter().any(|f| f == "enterprise") {
        "enterprise"
    } else if features.iter().any(|f| f == "pro") {
        "pro"
    } else {
        "free"
    }
}

/// The profile.
pub async fn profile(
    db: impl PgExecutor<'_>,
    profile_id: Uuid,
    features: &[String],
) -> sqlx::Result<ProfileOut> {
    let p = sqlx::query!(
        r#"SELECT id, clerk_user_id, coalesce(email, '') AS "email!", coalesce(first_name, '') AS "first_name!",
                  coalesce(last_name, '') AS "last_name!", coalesce(image_url, '') AS "image_url!", role,
                  deleted_at IS NULL AS "is_active!", created_at, updated_at
           FROM profiles WHERE id = $1"#,
        profile_id
    )
    .fetch_one(db)
    .await?;
    Ok(ProfileOut {
        id: p.id,
        clerk_user_id: p.clerk_user_id,
        email: p.email,
        first_name: p.first_name,
        last_name: p.last_name,
        image_url: p.image_url,
        plan_tier: plan_tier(features).into(),
        billing_features: features.to_vec(),
        role: p.role,
        is_active: p.is_active,
        metadata: json!({}),
        created_at: p.created_at,
        updated_at: p.updated_at,
    })
}

/// The customer account, created on first use with the profile's email as the billing email.
pub async fn customer(conn: &mut PgConnection, profile_id: Uuid) -> sqlx::Result<CustomerOut> {
    sqlx::query!(
        r#"INSERT INTO customer_accounts (profile_id, billing_email)
           SELECT id, email FROM profiles WHERE id = $1
           ON CONFLICT (profile_id) DO NOTHING"#,
        profile_id
    )
    .execute(&mut *conn)
    .await?;
    let c = sqlx::query!(
        r#"SELECT c.id, coalesce(c.billing_email, '') AS "billing_email!", coalesce(c.full_name, '') AS "full_name!",
                  coalesce(c.company_name, '') AS "company_name!", coalesce(c.phone, '') AS "phone!",
                  coalesce(c.country, '') AS "country!", coalesce(c.tax_id, '') AS "tax_id!", c.metadata, c.created_at, c.updated_at,
                  p.id AS profile_id, p.clerk_user_id, coalesce(p.email, '') AS "email!", coalesce(p.first_name, '') AS "first_name!",
                  coalesce(p.last_name, '') AS "last_name!"
           FROM customer_accounts c JOIN profiles p ON p.id = c.profile_id WHERE c.profile_id = $1"#,
        profile_id
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(CustomerOut {
        id: c.id,
        profile: json!({"id": c.profile_id, "clerk_user_id": c.clerk_user_id, "email": c.email,
                        "first_name": c.first_name, "last_name": c.last_name}),
        external_customer_id: String::new(),
        billing_email: c.billing_email,
        full_name: c.full_name,
        company_name: c.company_name,
        phone: c.phone,
        country: c.country,
        tax_id: c.tax_id,
        metadata: c.metadata,
        created_at: c.created_at,
        updated_at: c.updated_at,
    })
}

/// `GET /api/me/`.
pub async fn me(
    conn: &mut PgConnection,
    profile_id: Uuid,
    org_id: Option<String>,
    features: Vec<String>,
) -> sqlx::Result<MeOut> {
    let profile = profile(&mut *conn, profile_id, &features).await?;
    let customer_account = customer(conn, profile_id).await?;
    Ok(MeOut {
        clerk_user_id: profile.clerk_user_id.clone(),
        email: profile.email.clone(),
        org_id,
        role: profile.role.clone(),
        billing_features: features,
        profile,
        customer_account,
    })
}

/// Customer update body (PATCH: only the fields given; `metadata` is merged).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CustomerInput {
    /// Billing email.
    pub billing_email: Option<String>,
    /// Full name.
    pub full_name: Option<String>,
    /// Company.
    pub company_name: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// ISO 3166 alpha-2, upper case.
    pub country: Option<String>,
    /// Tax id.
    pub tax_id: Option<String>,
    /// Merged key by key.
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
}

/// `PATCH /api/account/customer/`.
pub async fn update_customer(
    conn: &mut PgConnection,
    profile_id: Uuid,
    b: CustomerInput,
) -> DomainResult<CustomerOut> {
    let mut f = Fields::new();
    f.check(
        b.billing_email.as_deref().is_none_or(|e| {
            e.len() <= 254
                && e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        }),
        "billing_email",
        "must be an email address",
    );
    f.check(
        b.country
            .as_deref()
            .is_none_or(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())),
        "country",
        "an ISO 3166 alpha-2 code, e.g. DE",
    );
    f.check(
        b.tax_id.as_deref().is_none_or(|t| t.len() <= 64),
        "tax_id",
        "at most 64 characters",
    );
    f.text(
        b.full_name.as_deref(),
        "full_name",
        crate::platform::bounds::NAME_CHARS,
    );
    f.text(
        b.company_name.as_deref(),
        "company_name",
        crate::platform::bounds::NAME_CHARS,
    );
    f.text(
        b.phone.as_deref(),
        "phone",
        crate::platform::bounds::SHORT_CHARS,
    );
    f.metadata(b.metadata.as_ref(), "metadata");
    f.finish()?;
    customer(&mut *conn, profile_id).await?;
    sqlx::query!(
        r#"UPDATE customer_accounts SET billing_email = coalesce($2, billing_email), full_name = coalesce($3, full_name),
               company_name = coalesce($4, company_name), phone = coalesce($5, phone), country = coalesce($6, country),
               tax_id = coalesce($7, tax_id), metadata = metadata || coalesce($8, '{}'::jsonb)
           WHERE profile_id = $1"#,
        profile_id,
        b.billing_email,
        b.full_name,
        b.company_name,
        b.phone,
        b.country,
        b.tax_id,
        b.metadata
    )
    .execute(&mut *conn)
    .await?;
    Ok(customer(conn, profile_id).await?)
}

/// `POST /api/account/preflight/email-test/`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EmailTestOut {
    /// Accepted for delivery (the `send_email` job sends it; the jobs table shows each attempt).
    pub sent: bool,
    /// What happened.
    pub detail: String,
    /// Where it goes.
    pub recipient_email: String,
    /// When it was queued.
    pub sent_at: DateTime<Utc>,
    /// The email row (`granary-worker jobs list --kind send_email` follows it).
    pub email_id: Uuid,
}

/// Queues a real test email to the caller through the email job, and records it on the
/// customer account (`metadata.preflight_email_last_sent_at` / `_last_recipient`), as the
/// starter's dashboard reads it. Without Resend (`RESEND_API_KEY` unset: emails stay in the
/// local outbox) or without an address: 400 with `sent: false`, and nothing is queued.
pub async fn send_test_email(
    conn: &mut PgConnection,
    resend: &ResendConfig,
    profile_id: Uuid,
) -> DomainResult<EmailTestOut> {
    if resend.api_key.is_none() {
        return Err(DomainError::BadRequest(
            "Resend is not configured: set RESEND_API_KEY and RESEND_FROM_EMAIL to send email. \
             Until then emails are kept in the local outbox (the emails table), not delivered."
                .into(),
        ));
    }
    let account = customer(&mut *conn, profile_id).await?;
    let to = [
        &account.billing_email,
        &account.profile["email"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ]
    .into_iter()
    .find(|e| !e.is_empty())
    .cloned();
    let Some(to) = to else {
        return Err(DomainError::BadRequest(
            "Your account has no email address to send the test to.".into(),
        ));
    };
    let now = Utc::now();
    let subject = "Granary test email".to_string();
    let lines = vec![
        "This is a test email from your shop's backend.".to_string(),
        "If you can read it, email delivery works.".to_string(),
    ];
    let id = emails::queue_email(
        conn,
        &Draft {
            dedupe_key: format!("preflight:{profile_id}:{}", now.timestamp_micros()),
            kind: "preflight_test",
            html: emails::html(&subject, &lines, None),
            text: emails::text(&subject, &lines, None),
            subject,
            order_id: None,
            profile_id,
        },
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("the test email was already queued"))?;
    sqlx::query!(
        r#"UPDATE customer_accounts SET metadata = metadata || jsonb_build_object(
               'preflight_email_last_sent_at', $2::text, 'preflight_email_last_recipient', $3::text)
           WHERE profile_id = $1"#,
        profile_id,
        now.to_rfc3339(),
        to
    )
    .execute(&mut *conn)
    .await?;
    Ok(EmailTestOut {
        sent: true,
        detail: format!("Test email queued for delivery to {to}."),
        recipient_email: to,
        sent_at: now,
        email_id: id,
    })
}

/// Sets a user's role (`buyer`, `seller`, `admin`), creating the profile if Clerk has not
/// introduced the user yet, and records it in `operator_actions`. Returns the previous role.
pub async fn set_role(
    pool: &sqlx::PgPool,
    clerk_user_id: &str,
    role: &str,
    actor: &crate::platform::audit::Actor,
) -> DomainResult<Option<String>> {
    let Some(role) = Role::parse(role) else {
        return Err(DomainError::field("role", "one of buyer, seller, admin"));
    };
    let mut tx = pool.begin().await?;
    let previous = sqlx::query_scalar!(
        "SELECT role FROM profiles WHERE clerk_user_id = $1 FOR UPDATE",
        clerk_user_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let facts = ProfileFacts {
        clerk_user_id,
        role: Some(role),
        ..ProfileFacts::default()
    };
    upsert(&mut *tx, &facts).await?;
    crate::platform::audit::record_by(
        &mut *tx,
        actor,
        "profile.set_role",
        "profile",
        clerk_user_id,
        json!({ "from": previous, "to": role.as_str() }),
    )
    .await?;
    tx.commit().await?;
    Ok(previous)
}

/// What Granary learnt about a Clerk user: from a session's claims, a Clerk `user.*` event, an
/// operator or a development token. `None` fields leave the stored value as it is.
#[derive(Debug, Default)]
pub struct ProfileFacts<'a> {
    /// Clerk user id.
    pub clerk_user_id: &'a str,
    /// Email.
    pub email: Option<&'a str>,
    /// First name.
    pub first_name: Option<&'a str>,
    /// Last name.
    pub last_name: Option<&'a str>,
    /// Avatar.
    pub image_url: Option<&'a str>,
    /// The role to set (a new profile is a buyer otherwise).
    pub role: Option<Role>,
    /// A Clerk event's time. The facts then apply only if no later event was applied already,
    /// and the names they carry replace the stored ones (the event is Clerk's whole record).
    pub event_at: Option<DateTime<Utc>>,
}

/// The profile as the upsert left it.
#[derive(Debug)]
pub struct Upserted {
    /// `profiles.id`.
    pub id: Uuid,
    /// Its role now.
    pub role: Role,
    /// Set once Clerk deleted the user.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The one profile upsert: creates the profile on first sight, else merges `f` into it. `None`
/// when a later Clerk event was applied already (only with `f.event_at`).
pub async fn upsert(
    db: impl PgExecutor<'_>,
    f: &ProfileFacts<'_>,
) -> sqlx::Result<Option<Upserted>> {
    sqlx::query_as!(
        Upserted,
        r#"
        INSERT INTO profiles (clerk_user_id, email, first_name, last_name, image_url, role, last_event_at)
        VALUES ($1, $2, $3, $4, $5, coalesce($6, 'buyer'), $7)
        ON CONFLICT (clerk_user_id) DO UPDATE SET
            email = coalesce(EXCLUDED.email, profiles.email),
            first_name = CASE WHEN $7::timestamptz IS NULL THEN coalesce(EXCLUDED.first_name, profiles.first_name)
                              ELSE EXCLUDED.first_name END,
            last_name = CASE WHEN $7::timestamptz IS NULL THEN coalesce(EXCLUDED.last_name, profiles.last_name)
                             ELSE EXCLUDED.last_name END,
            image_url = coalesce(EXCLUDED.image_url, profiles.image_url),
            role = coalesce($6, profiles.role),
            last_event_at = coalesce($7, profiles.last_event_at)
        WHERE $7::timestamptz IS NULL OR profiles.last_event_at IS NULL OR profiles.last_event_at <= $7
        RETURNING id, role AS "role: Role", deleted_at
        "#,
        f.clerk_user_id,
        f.email,
        f.first_name,
        f.last_name,
        f.image_url,
        f.role.map(Role::as_str),
        f.event_at,
    )
    .fetch_optional(db)
    .await
}
