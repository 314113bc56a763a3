//! A correctly signed Stripe delivery of any body: verification and the event head, then the
//! money reader over whatever JSON it holds.
#![no_main]

use granary_jobs::providers::{reported, verify};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_fuzz_0123456789";

fuzz_target!(|body: &[u8]| {
    let secret = secrecy::SecretString::from(SECRET);
    let t = chrono::Utc::now().timestamp();
    let mut headers = http::HeaderMap::new();
    let header = verify::stripe_signature_header(SECRET, t, body);
    headers.insert(
        "stripe-signature",
        http::HeaderValue::from_str(&header).unwrap(),
    );
    if verify::stripe(Some(&secret), body, &headers, t).is_ok()
        && let Ok(event) = serde_json::from_slice::<serde_json::Value>(body)
    {
        let obj = &event["data"]["object"];
        let _ = reported::money(obj, "/amount_total", "/currency");
        let _ = reported::money(obj, "/amount_refunded", "/currency");
    }
});
