//! A correctly signed Clerk (Svix) delivery of any body: verification, the event head, then the
//! subscription reader and the payment attempt's money reader over whatever JSON it holds.
#![no_main]

use granary_jobs::providers::{reported, verify};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fuzz_target!(|body: &[u8]| {
    let secret = secrecy::SecretString::from(SECRET);
    let verifier = verify::ClerkVerifier::new(Some(&secret));
    let svix = svix::webhooks::Webhook::new(SECRET).unwrap();
    let t = chrono::Utc::now().timestamp();
    let Ok(signature) = svix.sign("msg_fuzz", t, body) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("svix-id", http::HeaderValue::from_static("msg_fuzz"));
    headers.insert(
        "svix-timestamp",
        http::HeaderValue::from_str(&t.to_string()).unwrap(),
    );
    headers.insert(
        "svix-signature",
        http::HeaderValue::from_str(&signature).unwrap(),
    );
    let Ok(v) = verifier.verify(body, &headers) else {
        return;
    };
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let data = &event["data"];
    let _ = granary_jobs::billing::subscriptions::updates_from_event(&v.event_type, data);
    let _ = reported::money(
        data,
        "/totals/grand_total/amount",
        "/totals/grand_total/currency",
    );
});
