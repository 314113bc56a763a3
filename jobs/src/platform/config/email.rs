//! Email through Resend; without a key, the local outbox.

use secrecy::ExposeSecret;

use super::{ResendConfig, reader::Reader};

pub(super) fn read(r: &mut Reader<'_>, warnings: &mut Vec<String>) -> ResendConfig {
    let resend_api_key = r.secret("RESEND_API_KEY");
    if let Some(k) = &resend_api_key
        && !k.expose_secret().starts_with("re_")
    {
        r.problem(
            "RESEND_API_KEY",
            "does not start with `re_`",
            "create an API key in the Resend dashboard",
        );
    }
    let resend_from = r.get("RESEND_FROM_EMAIL").map(str::to_string);
    if resend_api_key.is_some() && resend_from.is_none() {
        r.problem(
            "RESEND_FROM_EMAIL",
            "is not set while RESEND_API_KEY is",
            "set it to a sender on a domain verified in Resend, e.g. Acme <orders@example.com>",
        );
    }
    if resend_api_key.is_none() {
        warnings.push("RESEND_API_KEY unset: emails are recorded in the local outbox (emails table, status outbox) instead of sent".into());
    }
    ResendConfig {
        api_key: resend_api_key,
        base_url: r.url("RESEND_BASE_URL"),
        from: resend_from.unwrap_or_else(|| "Granary <onboarding@resend.dev>".into()),
        reply_to: r.get("RESEND_REPLY_TO_EMAIL").map(str::to_string),
    }
}
