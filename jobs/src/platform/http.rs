//! The process's one outbound HTTP client, for Resend, Stripe and Clerk.
//!
//! Built once: building a client loads and parses the system's root certificates. When each
//! email built its own, that parsing was most of the worker's CPU in a burst of orders
//! (`perf`: `rustls_pki_types` base64 and PEM decoding, and the certificate files' path walks),
//! and no connection was ever reused.

use std::{sync::OnceLock, time::Duration};

/// The shared client: connections pooled per host; 10 s to connect, 30 s for a whole request
/// (a request may set a shorter one), so a provider that hangs fails the attempt, which retries.
pub fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("the HTTP client's TLS settings are valid")
    })
}
