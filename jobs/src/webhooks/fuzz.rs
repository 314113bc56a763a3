//! Bounded property-based runs over what reads untrusted webhook input: the Stripe-Signature
//! header parser, both providers' verification and event-head parsing (a correctly signed
//! arbitrary body included: a signature proves who sent it, not that it is well formed), the
//! nesting scanner, the money reader and the Clerk subscription reader. Each property says the
//! same thing: any input ends in a value or a named refusal, never a panic. They run with every
//! `cargo test` (no nightly needed); `fuzz/` has `cargo fuzz` targets over the same functions
//! for long runs.

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::providers::{reported, verify};

const STRIPE_SECRET: &str = "whsec_property_tests_0123456789";
const CLERK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Every code a delivery may be refused with.
const CODES: &[&str] = &[
    "webhook_secret_not_configured",
    "missing_signature_headers",
    "invalid_signature_header",
    "signature_mismatch",
    "stale_timestamp",
    "future_timestamp",
    "invalid_payload",
    "invalid_json",
    "invalid_event",
];

/// JSON shaped like provider events: the field names the readers look for, at any depth, with
/// any type of value.
fn event_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just("usd".to_string()),
            Just("XXX".to_string()),
            Just("paid".to_string()),
            Just("payment".to_string()),
            Just("month".to_string()),
            "[ -~]{0,16}",
        ]
        .prop_map(Value::String),
    ];
    let key = prop_oneof![
        Just("id".to_string()),
        Just("type".to_string()),
        Just("data".to_string()),
        Just("object".to_string()),
        Just("amount".to_string()),
        Just("amount_total".to_string()),
        Just("currency".to_string()),
        Just("status".to_string()),
        Just("payer".to_string()),
        Just("user_id".to_string()),
        Just("plan".to_string()),
        Just("plan_period".to_string()),
        Just("subscription_items".to_string()),
        Just("period_end".to_string()),
        Just("timestamp".to_string()),
        Just("created".to_string()),
        "[a-z_]{1,12}",
    ];
    leaf.prop_recursive(6, 96, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn stripe_headers(signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(signature) {
        h.insert("stripe-signature", v);
    }
    h
}

fn assert_named(result: &Result<verify::Verified, verify::Rejection>) {
    if let Err(r) = result {
        assert!(CODES.contains(&r.code), "unnamed refusal {r:?}");
        assert!((400..=503).contains(&r.status()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_stripe_signature_header_is_parsed_or_refused_by_name(
        header in "[ -~]{0,200}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        clock in any::<i64>(),
    ) {
        let secret = SecretString::from(STRIPE_SECRET);
        let r = verify::stripe(Some(&secret), &body, &stripe_headers(&header), clock);
        assert_named(&r);
        // A header made of parts that look right but are not.
        let crafted = format!("t={clock},v1={header},v0=x,{header}");
        assert_named(&verify::stripe(Some(&secret), &body, &stripe_headers(&crafted), now()));
    }

    #[test]
    fn any_correctly_signed_stripe_body_is_verified_or_refused_by_name(
        body in prop::collection::vec(any::<u8>(), 0..512),
        event in event_json(),
    ) {
        let secret = SecretString::from(STRIPE_SECRET);
        for bytes in [body, serde_json::to_vec(&event).unwrap()] {
            let t = now();
            let header = verify::stripe_signature_header(STRIPE_SECRET, t, &bytes);
            let r = verify::stripe(Some(&secret), &bytes, &stripe_headers(&header), t);
            assert_named(&r);
            // Verified only when the body is an object with a string id and type.
            if let Ok(v) = &r {
                let parsed: Value = serde_json::from_slice(&bytes).unwrap();
                prop_assert_eq!(parsed["id"].as_str(), Some(v.event_id.as_str()));
                prop_assert_eq!(parsed["type"].as_str(), Some(v.event_type.as_str()));
            }
        }
    }

    #[test]
    fn any_clerk_delivery_signed_or_not_is_verified_or_refused_by_name(
        body in prop::collection::vec(any::<u8>(), 0..512),
        event in event_json(),
        msg_id in "[ -~]{0,40}",
        signature in "[ -~]{0,120}",
    ) {
        let secret = SecretString::from(CLERK_SECRET);
        let verifier = verify::ClerkVerifier::new(Some(&secret));
        let svix = svix::webhooks::Webhook::new(CLERK_SECRET).unwrap();
        for bytes in [body, serde_json::to_vec(&event).unwrap()] {
            let t = now();
            let mut headers = HeaderMap::new();
            let good = svix.sign(&msg_id, t, &bytes).unwrap_or_default();
            for (sig, ts) in [(good, t.to_string()), (signature.clone(), signature.clone())] {
                for (name, value) in [("svix-id", &msg_id), ("svix-timestamp", &ts), ("svix-signature", &sig)] {
                    match HeaderValue::from_str(value) {
                        Ok(v) => { headers.insert(name, v); }
                        Err(_) => { headers.remove(name); }
                    }
                }
                assert_named(&verifier.verify(&bytes, &headers));
            }
        }
    }

    #[test]
    fn the_nesting_scanner_never_lets_through_what_serde_cannot_parse(
        opens in prop::collection::vec(prop_oneof![Just(b'['), Just(b'{'), Just(b'"'), Just(b'\\'), Just(b'a'), Just(b':'), Just(b',')], 0..400),
        depth in 0usize..300,
    ) {
        let mut body = b"[".repeat(depth);
        body.extend(&opens);
        body.extend(b"]".repeat(depth));
        let deepest = verify::nesting_depth(&body, verify::MAX_DEPTH);
        if deepest <= verify::MAX_DEPTH
            && let Err(e) = serde_json::from_slice::<Value>(&body)
        {
            prop_assert!(!e.to_string().contains("recursion limit"), "{e}");
        }
        // Exact on brackets alone.
        let plain = [b"[".repeat(depth), b"]".repeat(depth)].concat();
        prop_assert_eq!(verify::nesting_depth(&plain, usize::MAX), depth);
    }

    #[test]
    fn a_reported_amount_is_a_present_non_negative_integer_or_a_named_refusal(
        event in event_json(),
        amount in event_json(),
    ) {
        let mut obj = event;
        if let Value::Object(m) = &mut obj {
            m.insert("amount_total".into(), amount.clone());
        }
        match reported::money(&obj, "/amount_total", "/currency") {
            Ok(m) => {
                prop_assert_eq!(amount.as_i64(), Some(m.amount_cents));
                prop_assert!(m.amount_cents >= 0);
                prop_assert!(crate::platform::bounds::is_currency(&m.currency));
            }
            Err(e) => prop_assert!(e.starts_with('`'), "{}", e),
        }
    }

    #[test]
    fn any_clerk_subscription_event_is_read_or_refused(
        data in event_json(),
        ty in prop_oneof![
            Just("subscription.created"), Just("subscription.updated"), Just("subscription.active"),
            Just("subscriptionItem.active"), Just("subscriptionItem.canceled"), Just("subscriptionItem.ended"),
            Just("billing.subscription.updated"),
        ],
    ) {
        // A value or an error string; a panic fails the run.
        let _ = crate::billing::subscriptions::updates_from_event(ty, &data);
    }
}
