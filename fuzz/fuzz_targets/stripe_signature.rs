//! The Stripe-Signature header parser: any header, any body, any clock.
#![no_main]

use granary_jobs::providers::verify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &[u8], i64)| {
    let (header, body, now) = input;
    let secret = secrecy::SecretString::from("whsec_fuzz_0123456789");
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(header) {
        headers.insert("stripe-signature", v);
    }
    let _ = verify::stripe(Some(&secret), body, &headers, now);
});
