//! Clerk: session tokens (JWKS, issuer, audience, parties), the Svix webhook secret, billing
//! claims, and the Backend API.

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{
    ClerkConfig,
    reader::{Reader, decode_svix_secret},
};

pub(super) fn read(r: &mut Reader<'_>, dev: bool, warnings: &mut Vec<String>) -> ClerkConfig {
    let domain = r.get("CLERK_DOMAIN").map(|d| {
        d.trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    });
    let jwks_url = r.url("CLERK_JWKS_URL").or_else(|| {
        domain
            .as_ref()
            .and_then(|d| Url::parse(&format!("https://{d}/.well-known/jwks.json")).ok())
    });
    let issuer = r
        .get("CLERK_JWT_ISSUER")
        .map(str::to_string)
        .or_else(|| domain.as_ref().map(|d| format!("https://{d}")));
    let secret_key = r.secret("CLERK_SECRET_KEY");
    if let Some(k) = &secret_key
        && !k.expose_secret().starts_with("sk_")
    {
        r.problem(
            "CLERK_SECRET_KEY",
            "does not start with `sk_`",
            "copy the secret key from Clerk Dashboard → API keys",
        );
    }
    let webhook_secret = match r.get("CLERK_WEBHOOK_SIGNING_SECRET") {
        None => None,
        Some(raw) => match decode_svix_secret(raw) {
            Ok(_) => Some(SecretString::from(raw.to_string())),
            Err(why) => {
                r.problem(
                    "CLERK_WEBHOOK_SIGNING_SECRET",
                    format!("is malformed: it {why}"),
                    "copy the signing secret (whsec_ followed by base64) from Clerk Dashboard → Webhooks → your endpoint",
                );
                None
            }
        },
    };
    let dev_auth = r.flag("GRANARY_DEV_AUTH", false);
    if !dev && jwks_url.is_none() {
        r.problem(
            "CLERK_DOMAIN",
            "neither CLERK_DOMAIN nor CLERK_JWKS_URL is set, so no token can be verified",
            "set CLERK_DOMAIN to your Clerk instance domain",
        );
    }
    if !dev && issuer.is_none() {
        r.problem(
            "CLERK_JWT_ISSUER",
            "is not set and cannot be derived",
            "set CLERK_DOMAIN or CLERK_JWT_ISSUER",
        );
    }
    if dev && jwks_url.is_none() && !dev_auth {
        warnings.push("CLERK_DOMAIN/CLERK_JWKS_URL unset: only public routes work (set GRANARY_DEV_AUTH=true for local development tokens)".into());
    }
    ClerkConfig {
        secret_key,
        domain,
        jwks_url,
        issuer,
        audience: r.get("CLERK_JWT_AUDIENCE").map(str::to_string),
        authorized_parties: r.list("CLERK_AUTHORIZED_PARTIES"),
        billing_claim: r
            .get("CLERK_BILLING_CLAIM")
            .unwrap_or("entitlements")
            .to_string(),
        webhook_secret,
        api_url: r
            .url("CLERK_API_URL")
            .unwrap_or_else(|| Url::parse("https://api.clerk.com").expect("static URL")),
        dev_auth,
    }
}
