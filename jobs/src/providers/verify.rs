//! Signature verification over the exact bytes received.
//!
//! Clerk signs with Svix: <https://docs.svix.com/receiving/verifying-payloads/how-manual>
//! (HMAC-SHA256 keyed by the base64 after `whsec_`, over `{id}.{timestamp}.{body}`, several
//! space-separated `v1,<b64>` signatures during rotation, 5-minute window both ways); the `svix`
//! crate does it. Stripe: <https://docs.stripe.com/webhooks#verify-manually> (HMAC-SHA256 keyed
//! by the whole `whsec_...` string over `{t}.{body}`, one or more `v1=<hex>`).

use hmac::{Hmac, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

/// Window, both ways, for a signed timestamp.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a delivery was rejected. The code is both the HTTP error code and the stored reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable snake_case reason.
    pub code: &'static str,
    /// Explanation for the operator (never includes secrets).
    pub detail: String,
}

impl Rejection {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// The HTTP status for this rejection: 401 when the signature cannot be trusted, 400 when
    /// the request is malformed, 503 when Granary itself is not configured to verify.
    pub fn status(&self) -> u16 {
        match self.code {
            "webhook_secret_not_configured" => 503,
            "signature_mismatch" | "stale_timestamp" | "future_timestamp" => 401,
            _ => 400,
        }
    }
}

/// A verified delivery: the event's identity, read from the signed body.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Provider's event id (Svix message id for Clerk, `evt_...` for Stripe).
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// Provider's event time.
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n))
        .and_then(|v| v.to_str().ok())
}

/// What ingest reads of an event: its identity, and nothing else. The rest of the body is
/// checked to be JSON (skipped, not built) and stored as received; the worker parses it whole.
/// Each field is read as whatever JSON it holds (a string or a number where it is usable).
#[derive(serde::Deserialize)]
struct Head {
    #[serde(default)]
    id: Value,
    #[serde(default, rename = "type")]
    event_type: Value,
    /// Clerk: milliseconds since the epoch.
    #[serde(default)]
    timestamp: Value,
    /// Stripe: seconds since the epoch.
    #[serde(default)]
    created: Value,
}

/// The deepest nesting of objects and arrays an event may have. Real events are a few levels
/// deep; a deeper body is refused at ingest, so the worker never meets one it cannot parse
/// (serde_json stops at 128 levels).
pub const MAX_DEPTH: usize = 64;

/// The deepest nesting of `{`/`[` in `body`, outside strings, scanned without recursion; stops
/// counting once past `limit`.
pub fn nesting_depth(body: &[u8], limit: usize) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > limit {
                    return deepest;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn parse_head(body: &[u8]) -> Result<Head, Rejection> {
    if nesting_depth(body, MAX_DEPTH) > MAX_DEPTH {
        return Err(Rejection::new(
            "invalid_json",
            format!("the body is nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    // A struct would also read from a JSON array, by position: only an object is an event.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => Rejection::new("invalid_json", "the body is JSON but not an object"),
                Err(e) => {
                    Rejection::new("invalid_json", format!("the body is not valid JSON: {e}"))
                }
            },
        );
    }
    serde_json::from_slice::<Head>(body).map_err(|e| {
        if e.is_data() {
            Rejection::new("invalid_event", format!("the event is malformed: {e}"))
        } else {
            Rejection::new("invalid_json", format!("the body is not valid JSON: {e}"))
        }
    })
}

fn required(value: &Value, what: &str) -> Result<String, Rejection> {
    value
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Rejection::new("invalid_event", format!("the event has no `{what}`")))
}

/// Verifies Clerk (Svix) deliveries with one secret, decoded once.
#[derive(Clone)]
pub struct ClerkVerifier {
    webhook: Result<std::sync::Arc<svix::webhooks::Webhook>, Rejection>,
}

impl std::fmt::Debug for ClerkVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClerkVerifier")
            .field("configured", &self.webhook.is_ok())
            .finish()
    }
}

impl ClerkVerifier {
    /// A verifier for `secret` (`CLERK_WEBHOOK_SIGNING_SECRET`); without a usable one, every
    /// delivery is rejected with `webhook_secret_not_configured`.
    pub fn new(secret: Option<&SecretString>) -> Self {
        let webhook = match secret {
            None => Err(Rejection::new(
                "webhook_secret_not_configured",
                "CLERK_WEBHOOK_SIGNING_SECRET is not set, so no Clerk delivery can be verified",
            )),
            Some(secret) => svix::webhooks::Webhook::new(secret.expose_secret())
                .map(std::sync::Arc::new)
                .map_err(|_| {
                    Rejection::new(
                        "webhook_secret_not_configured",
                        "CLERK_WEBHOOK_SIGNING_SECRET is malformed",
                    )
                }),
        };
        Self { webhook }
    }

    /// Verifies one delivery.
    pub fn verify(&self, body: &[u8], headers: &HeaderMap) -> Result<Verified, Rejection> {
        let wh = self.webhook.as_ref().map_err(Clone::clone)?;
        clerk_with(wh, body, headers)
    }
}

fn clerk_with(
    wh: &svix::webhooks::Webhook,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<Verified, Rejection> {
    wh.verify(body, headers).map_err(|e| {
        use svix::webhooks::WebhookError as E;
        match e {
            E::MissingHeader(h) => Rejection::new("missing_signature_headers", format!("the svix-{h} (or webhook-{h}) header is missing")),
            E::InvalidHeader(h) => Rejection::new("invalid_signature_header", format!("the svix-{h} header is not valid")),
            E::InvalidTimestamp => Rejection::new("invalid_signature_header", "the svix-timestamp header is not a unix timestamp"),
            E::TimestampTooOldError => Rejection::new("stale_timestamp", "the signed timestamp is more than 5 minutes old (replay, or a clock far off)"),
            E::FutureTimestampError => Rejection::new("future_timestamp", "the signed timestamp is more than 5 minutes in the future"),
            E::InvalidPayload => Rejection::new("invalid_payload", "the body is not UTF-8"),
            _ => Rejection::new(
                "signature_mismatch",
                "no signature matches: the secret in CLERK_WEBHOOK_SIGNING_SECRET does not match the one that signed, or the body was altered",
            ),
        }
    })?;
    let event_id = header(headers, &["svix-id", "webhook-id"])
        .unwrap_or_default()
        .to_string();
    let head = parse_head(body)?;
    let event_type = required(&head.event_type, "type")?;
    // Clerk's `timestamp` is milliseconds since the epoch.
    let occurred_at = head
        .timestamp
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis);
    Ok(Verified {
        event_id,
        event_type,
        occurred_at,
    })
}

/// Verifies a Stripe delivery.
pub fn stripe(
    secret: Option<&SecretString>,
    body: &[u8],
    headers: &HeaderMap,
    now: i64,
) -> Result<Verified, Rejection> {
    let Some(secret) = secret else {
        return Err(Rejection::new(
            "webhook_secret_not_configured",
            "STRIPE_WEBHOOK_SECRET is not set, so no Stripe delivery can be verified",
        ));
    };
    let Some(sig_header) = header(headers, &["stripe-signature"]) else {
        return Err(Rejection::new(
            "missing_signature_headers",
            "the Stripe-Signature header is missing",
        ));
    };
    let (t, signatures) = parse_stripe_signature(sig_header)?;
    if t < now - TOLERANCE_SECONDS {
        return Err(Rejection::new(
            "stale_timestamp",
            "the signed timestamp is more than 5 minutes old (replay, or a clock far off)",
        ));
    }
    if t > now + TOLERANCE_SECONDS {
        return Err(Rejection::new(
            "future_timestamp",
            "the signed timestamp is more than 5 minutes in the future",
        ));
    }
    if !stripe_signature_matches(secret, t, body, &signatures) {
        return Err(Rejection::new(
            "signature_mismatch",
            "no v1 signature matches: the secret in STRIPE_WEBHOOK_SECRET does not match the one that signed, or the body was altered",
        ));
    }
    let head = parse_head(body)?;
    let event_id = required(&head.id, "id")?;
    let event_type = required(&head.event_type, "type")?;
    let occurred_at = head
        .created
        .as_i64()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0));
    Ok(Verified {
        event_id,
        event_type,
        occurred_at,
    })
}

/// The `t=` timestamp and the `v1=` signatures of a `Stripe-Signature` header (each required).
fn parse_stripe_signature(sig_header: &str) -> Result<(i64, Vec<&str>), Rejection> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in sig_header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let Some(t) = timestamp else {
        return Err(Rejection::new(
            "invalid_signature_header",
            "Stripe-Signature has no valid t= timestamp",
        ));
    };
    if signatures.is_empty() {
        return Err(Rejection::new(
            "invalid_signature_header",
            "Stripe-Signature has no v1= signature",
        ));
    }
    Ok((t, signatures))
}

/// Whether any of the `v1` signatures is the HMAC of `{t}.{body}` under the secret.
fn stripe_signature_matches(
    secret: &SecretString,
    t: i64,
    body: &[u8],
    signatures: &[&str],
) -> bool {
    signatures.iter().any(|sig| {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // Constant-time comparison.
        mac.verify_slice(&sig).is_ok()
    })
}

/// Computes a Stripe signature header the way Stripe does (tests and the bench use it).
pub fn stripe_signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_svix_test_vector_verifies() {
        // From Svix's documentation and libraries.
        let wh = svix::webhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = wh
            .sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let mut h = HeaderMap::new();
        h.insert("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap());
        h.insert("svix-timestamp", "1614265330".parse().unwrap());
        h.insert("svix-signature", sig.parse().unwrap());
        wh.verify_ignoring_timestamp(br#"{"test": 2432232314}"#, &h)
            .unwrap();
    }

    #[test]
    fn stripe_signatures_round_trip_and_reject_tampering() {
        let secret = SecretString::from("whsec_test_secret_value".to_string());
        let body = br#"{"id":"evt_1","type":"checkout.session.completed","created":1}"#;
        let mut h = HeaderMap::new();
        h.insert(
            "stripe-signature",
            stripe_signature_header("whsec_test_secret_value", 1000, body)
                .parse()
                .unwrap(),
        );
        assert!(stripe(Some(&secret), body, &h, 1000).is_ok());
        assert_eq!(
            stripe(Some(&secret), b"{}", &h, 1000).unwrap_err().code,
            "signature_mismatch"
        );
        assert_eq!(
            stripe(Some(&secret), body, &h, 1000 + 301)
                .unwrap_err()
                .code,
            "stale_timestamp"
        );
        assert_eq!(
            stripe(Some(&secret), body, &h, 1000 - 301)
                .unwrap_err()
                .code,
            "future_timestamp"
        );
    }
}
