//! A Stripe stand-in speaking the wire format of `GET /v1/events`: bearer auth, `types[]`,
//! `created[gte]`, `limit` (1..=100) and `starting_after` paging over events newest first,
//! `{"object": "list", "data", "has_more", "url"}`, and Stripe's error bodies
//! (`{"error": {"type", "message"}}`), with scripted failures (500, 429 with `Retry-After`).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::RawQuery,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

/// The secret key the stand-in accepts.
pub const SECRET_KEY: &str = "sk_test_granary_stripe_stand_in";

/// A running stand-in.
pub struct StripeStandIn {
    /// Its base URL (`STRIPE_API_BASE`).
    pub url: String,
    state: Arc<State>,
}

struct State {
    key: Mutex<String>,
    events: Mutex<Vec<Value>>,
    script: Mutex<VecDeque<u16>>,
    requests: Mutex<Vec<String>>,
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"type": kind, "message": message}})),
    )
        .into_response()
}

fn list(state: &State, headers: &HeaderMap, query: Option<String>) -> Response {
    state
        .requests
        .lock()
        .unwrap()
        .push(query.clone().unwrap_or_default());
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {}", state.key.lock().unwrap()) {
        let shown = auth.trim_start_matches("Bearer ");
        let tail = &shown[shown.len().saturating_sub(4)..];
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            &format!("Invalid API Key provided: sk_test_********{tail}"),
        );
    }
    if let Some(status) = state.script.lock().unwrap().pop_front() {
        return match status {
            429 => {
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "invalid_request_error",
                    "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                );
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
                r
            }
            s => error(
                StatusCode::from_u16(s).unwrap(),
                "api_error",
                "An unknown error occurred",
            ),
        };
    }
    let mut types = Vec::new();
    let mut gte = i64::MIN;
    let mut limit = 10usize;
    let mut after = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "types[]" => types.push(v.into_owned()),
            "created[gte]" => gte = v.parse().unwrap_or(i64::MIN),
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => limit = n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "This value must be greater than or equal to 1 and less than or equal to 100.",
                    );
                }
            },
            "starting_after" => after = Some(v.into_owned()),
            _ => {}
        }
    }
    let mut events: Vec<Value> = state
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| types.is_empty() || types.iter().any(|t| e["type"] == t.as_str()))
        .filter(|e| e["created"].as_i64().unwrap_or(0) >= gte)
        .cloned()
        .collect();
    // Newest first, as Stripe lists.
    events.sort_by(|a, b| {
        (b["created"].as_i64(), b["id"].as_str()).cmp(&(a["created"].as_i64(), a["id"].as_str()))
    });
    if let Some(after) = after {
        match events.iter().position(|e| e["id"] == after.as_str()) {
            Some(i) => {
                events.drain(..=i);
            }
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("No such event: '{after}'"),
                );
            }
        }
    }
    let has_more = events.len() > limit;
    events.truncate(limit);
    Json(json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": events}))
        .into_response()
}

impl StripeStandIn {
    /// Starts serving on an ephemeral loopback port.
    pub async fn start() -> Self {
        let state = Arc::new(State {
            key: Mutex::new(SECRET_KEY.into()),
            events: Mutex::default(),
            script: Mutex::default(),
            requests: Mutex::default(),
        });
        let s = state.clone();
        let app = Router::new().route(
            "/v1/events",
            get(move |headers: HeaderMap, RawQuery(q): RawQuery| {
                let s = s.clone();
                async move { list(&s, &headers, q) }
            }),
        );
        let addr = crate::serve_loopback(app).await;
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// Stripe now has this event (an event object as the webhook would carry it).
    pub fn add_event(&self, event: Value) {
        self.state.events.lock().unwrap().push(event);
    }

    /// The account's key is rolled: [`SECRET_KEY`] stops working (401), as in Stripe's
    /// Dashboard → API keys → Roll key.
    pub fn roll_key(&self) {
        *self.state.key.lock().unwrap() = "sk_test_rolled_new_key".into();
    }

    /// The next calls answer these statuses (500, 429, ...) before answering normally again.
    pub fn script(&self, statuses: impl IntoIterator<Item = u16>) {
        self.state.script.lock().unwrap().extend(statuses);
    }

    /// The query strings of every call so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

/// A Stripe event created now: `type` with `object` as `data.object`.
pub fn event(id: &str, ty: &str, object: Value) -> Value {
    json!({"id": id, "object": "event", "api_version": "2024-06-20", "type": ty,
           "created": chrono::Utc::now().timestamp(), "livemode": false, "pending_webhooks": 1,
           "data": {"object": object}})
}

/// `checkout.session.completed` for an order of `amount` USD cents, paid through `pi_<order>`.
pub fn checkout_completed(id: &str, public_id: &str, amount: i64) -> Value {
    event(
        id,
        "checkout.session.completed",
        json!({"id": format!("cs_{public_id}"), "object": "checkout.session",
               "client_reference_id": public_id, "payment_status": "paid", "mode": "payment", "status": "complete",
               "amount_total": amount, "currency": "usd", "payment_intent": format!("pi_{public_id}")}),
    )
}

/// `payment_intent.succeeded` for `pi_<order>`, naming the order in its metadata.
pub fn payment_intent_succeeded(id: &str, public_id: &str, amount: i64) -> Value {
    event(
        id,
        "payment_intent.succeeded",
        json!({"id": format!("pi_{public_id}"), "object": "payment_intent", "status": "succeeded",
               "amount": amount, "amount_received": amount, "currency": "usd",
               "metadata": {"order_id": public_id}, "latest_charge": format!("ch_{public_id}")}),
    )
}

/// `charge.refunded`: the whole charge of `pi_<order>` refunded.
pub fn charge_refunded(id: &str, public_id: &str, amount: i64) -> Value {
    event(
        id,
        "charge.refunded",
        json!({"id": format!("ch_{public_id}"), "object": "charge", "payment_intent": format!("pi_{public_id}"),
               "amount": amount, "amount_refunded": amount, "refunded": true, "currency": "usd"}),
    )
}
