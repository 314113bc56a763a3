//! A Stripe stand-in speaking Stripe's wire format for the two calls Granary makes:
//!
//! - `GET /v1/events`: bearer auth, `types[]`, `created[gte]`, `limit` (1..=100) and
//!   `starting_after` paging over events newest first, `{"object": "list", "data", "has_more",
//!   "url"}`;
//! - `POST /v1/checkout/sessions`: a form-encoded body in Stripe's bracket notation, checked
//!   as Stripe checks it (mode, URLs, `expires_at` within 30 minutes to 24 hours, every line
//!   with a price or `price_data`); `Idempotency-Key` replays the first answer for the same key
//!   and refuses the key with other parameters (400 `idempotency_error`), as Stripe does. It
//!   answers `{id, object, url, status, expires_at, payment_intent, amount_total, currency, ...}`
//!   and can build the signed-ready `checkout.session.completed` / `expired` event of a session
//!   it created.
//!
//! - `POST /v1/refunds`: `payment_intent` and `amount` against what the intent took and has
//!   refunded so far (more is refused as Stripe refuses it), with the same idempotency replay;
//!   it builds the `charge.refunded` event Stripe then sends.
//!
//! All answer Stripe's error bodies (`{"error": {"type", "message"}}`), with scripted
//! failures (500, 429 with `Retry-After`, or a hang past the client's timeout).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::RawQuery,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
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
    /// Every session created, by the idempotency key that created it.
    sessions: Mutex<Vec<Created>>,
    /// Every `POST /v1/checkout/sessions` (form, key, Stripe-Version), replays included.
    session_calls: Mutex<Vec<SessionCall>>,
    /// Payment intents of paid sessions: id → (amount, currency, refunded so far).
    intents: Mutex<Vec<(String, i64, String, i64)>>,
    /// Refunds created, by idempotency key: (key, form, answer).
    refunds: Mutex<Vec<Created>>,
    /// Every `POST /v1/refunds`, replays and refusals included.
    refund_calls: Mutex<Vec<SessionCall>>,
}

/// A session the stand-in created: (idempotency key, the form it came with, the answer).
type Created = (String, Vec<(String, String)>, Value);

/// One `POST /v1/checkout/sessions` as the stand-in received it.
#[derive(Debug, Clone)]
pub struct SessionCall {
    /// The decoded form.
    pub form: Vec<(String, String)>,
    /// Its `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Its `Stripe-Version`.
    pub stripe_version: Option<String>,
}

impl SessionCall {
    /// The value of form field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"type": kind, "message": message}})),
    )
        .into_response()
}

/// Bearer auth and the scripted failures, as every Stripe endpoint answers them; `None` when
/// the call goes on.
async fn gate(state: &State, headers: &HeaderMap) -> Option<Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {}", state.key.lock().unwrap()) {
        let shown = auth.trim_start_matches("Bearer ");
        let tail = &shown[shown.len().saturating_sub(4)..];
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            &format!("Invalid API Key provided: sk_test_********{tail}"),
        ));
    }
    let scripted = state.script.lock().unwrap().pop_front();
    if let Some(status) = scripted {
        return Some(match status {
            // No answer: the client's timeout ends the call.
            0 => {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                error(StatusCode::GATEWAY_TIMEOUT, "api_error", "too late")
            }
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
        });
    }
    None
}

async fn list(state: &State, headers: &HeaderMap, query: Option<String>) -> Response {
    state
        .requests
        .lock()
        .unwrap()
        .push(query.clone().unwrap_or_default());
    if let Some(refused) = gate(state, headers).await {
        return refused;
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

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// A `POST` as Stripe receives it, before the endpoint's own work: the call is recorded in
/// `calls`; a body that is not form-encoded is refused; then bearer auth and the scripted
/// failures; then a replay of the first answer in `created` for the same `Idempotency-Key`
/// and parameters (Stripe keeps keys 24 h), or its refusal for other parameters. `Ok`: the
/// decoded form and the key.
async fn receive(
    state: &State,
    calls: &Mutex<Vec<SessionCall>>,
    created: &Mutex<Vec<Created>>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Vec<(String, String)>, Option<String>), Response> {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let key = header("idempotency-key");
    calls.lock().unwrap().push(SessionCall {
        form: form.clone(),
        idempotency_key: key.clone(),
        stripe_version: header("stripe-version"),
    });
    if header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(invalid("Invalid request: the body must be form-encoded."));
    }
    if let Some(refused) = gate(state, headers).await {
        return Err(refused);
    }
    if let Some(k) = &key {
        let created = created.lock().unwrap();
        if let Some((_, first_form, answer)) = created.iter().find(|(ck, _, _)| ck == k) {
            return Err(if *first_form == form {
                let mut r = Json(answer.clone()).into_response();
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                r
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                )
            });
        }
    }
    Ok((form, key))
}

/// `POST /v1/checkout/sessions`, validated as Stripe validates what Granary sends.
async fn create_session(state: &State, headers: &HeaderMap, body: &[u8]) -> Response {
    let (form, key) =
        match receive(state, &state.session_calls, &state.sessions, headers, body).await {
            Ok(call) => call,
            Err(answer) => return answer,
        };
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if get("mode").as_deref() != Some("payment") {
        return invalid("Missing required param: mode.");
    }
    for url in ["success_url", "cancel_url"] {
        match get(url) {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {}
            _ => return invalid(&format!("Not a valid URL: {url}")),
        }
    }
    let now = chrono::Utc::now().timestamp();
    let expires_at = match get("expires_at").and_then(|v| v.parse::<i64>().ok()) {
        Some(at) if at >= now + 1800 - 5 && at <= now + 86_400 + 5 => at,
        Some(_) => {
            return invalid(
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from now.",
            );
        }
        None => now + 86_400,
    };
    // Lines: `line_items[n][...]`, each with a price or price_data, and a quantity.
    let mut amount_total = 0i64;
    let mut currency: Option<String> = None;
    let mut n = 0;
    loop {
        let field = |f: &str| get(&format!("line_items[{n}][{f}]"));
        let Some(quantity) = field("quantity") else {
            break;
        };
        let Ok(quantity) = quantity.parse::<i64>() else {
            return invalid("Invalid integer: quantity");
        };
        let (unit, cur) = match (field("price"), field("price_data][unit_amount")) {
            // The stand-in's catalog: every `price_...` costs 1000 usd.
            (Some(p), None) if p.starts_with("price_") => (1000, "usd".to_string()),
            (None, Some(unit)) => {
                let (Ok(unit), Some(cur), Some(_name)) = (
                    unit.parse::<i64>(),
                    field("price_data][currency"),
                    field("price_data][product_data][name"),
                ) else {
                    return invalid(&format!("line_items[{n}][price_data] is incomplete"));
                };
                if cur != cur.to_lowercase() || cur.len() != 3 {
                    return invalid(&format!("Invalid currency: {cur}"));
                }
                (unit, cur)
            }
            _ => {
                return invalid(&format!(
                    "line_items[{n}]: you must specify either `price` or `price_data`"
                ));
            }
        };
        if currency.as_ref().is_some_and(|c| *c != cur) {
            return invalid("All line items must have the same currency.");
        }
        currency = Some(cur);
        amount_total += unit * quantity;
        n += 1;
    }
    if n == 0 {
        return invalid("Missing required param: line_items.");
    }
    let number = state.sessions.lock().unwrap().len() + 1;
    let id = format!("cs_test_{number:04}");
    let answer = json!({
        "id": id, "object": "checkout.session", "mode": "payment", "status": "open",
        "payment_status": "unpaid", "url": format!("https://checkout.stripe.com/c/pay/{id}"),
        "expires_at": expires_at, "created": now, "amount_total": amount_total,
        "amount_subtotal": amount_total, "currency": currency,
        "client_reference_id": get("client_reference_id"),
        "customer_email": get("customer_email"),
        "metadata": {"order_id": get("metadata[order_id]")},
        "payment_intent": null, "success_url": get("success_url"), "cancel_url": get("cancel_url"),
    });
    state.sessions.lock().unwrap().push((
        key.unwrap_or_else(|| format!("auto_{number}")),
        form,
        answer.clone(),
    ));
    Json(answer).into_response()
}

/// `POST /v1/refunds`.
async fn create_refund(state: &State, headers: &HeaderMap, body: &[u8]) -> Response {
    let (form, key) = match receive(state, &state.refund_calls, &state.refunds, headers, body).await
    {
        Ok(call) => call,
        Err(answer) => return answer,
    };
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let Some(intent) = get("payment_intent") else {
        return invalid("You must pass either `payment_intent` or `charge`.");
    };
    let mut intents = state.intents.lock().unwrap();
    let Some(entry) = intents.iter_mut().find(|(id, ..)| *id == intent) else {
        return invalid(&format!("No such payment_intent: '{intent}'"));
    };
    let left = entry.1 - entry.3;
    let amount = match get("amount").map(|a| a.parse::<i64>()) {
        None => left,
        Some(Ok(a)) if a > 0 => a,
        Some(_) => return invalid("Invalid positive integer: amount"),
    };
    if amount > left {
        return invalid(&format!(
            "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
        ));
    }
    entry.3 += amount;
    let currency = entry.2.clone();
    drop(intents);
    let mut refunds = state.refunds.lock().unwrap();
    let id = format!("re_test_{:04}", refunds.len() + 1);
    let answer = json!({"id": id, "object": "refund", "amount": amount, "currency": currency,
        "payment_intent": intent, "status": "succeeded",
        "metadata": {"order_id": get("metadata[order_id]")}});
    refunds.push((key.unwrap_or_else(|| id.clone()), form, answer.clone()));
    Json(answer).into_response()
}

impl StripeStandIn {
    /// Starts serving on an ephemeral loopback port.
    pub async fn start() -> Self {
        let state = Arc::new(State {
            key: Mutex::new(SECRET_KEY.into()),
            events: Mutex::default(),
            script: Mutex::default(),
            requests: Mutex::default(),
            sessions: Mutex::default(),
            session_calls: Mutex::default(),
            intents: Mutex::default(),
            refunds: Mutex::default(),
            refund_calls: Mutex::default(),
        });
        let s = state.clone();
        let s2 = state.clone();
        let s3 = state.clone();
        let app = Router::new()
            .route(
                "/v1/events",
                get(move |headers: HeaderMap, RawQuery(q): RawQuery| {
                    let s = s.clone();
                    async move { list(&s, &headers, q).await }
                }),
            )
            .route(
                "/v1/checkout/sessions",
                post(move |headers: HeaderMap, body: Bytes| {
                    let s = s2.clone();
                    async move { create_session(&s, &headers, &body).await }
                }),
            )
            .route(
                "/v1/refunds",
                post(move |headers: HeaderMap, body: Bytes| {
                    let s = s3.clone();
                    async move { create_refund(&s, &headers, &body).await }
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

    /// Every `POST /v1/checkout/sessions` so far, replays and refusals included.
    pub fn session_calls(&self) -> Vec<SessionCall> {
        self.state.session_calls.lock().unwrap().clone()
    }

    /// The sessions it created (one per idempotency key), oldest first.
    pub fn sessions(&self) -> Vec<Value> {
        self.state
            .sessions
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, s)| s.clone())
            .collect()
    }

    /// The session `id` it created, as it is now.
    pub fn session(&self, id: &str) -> Value {
        self.sessions()
            .into_iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("the stand-in created no session {id}"))
    }

    /// `checkout.session.completed` for session `id`, paid in full through a new payment
    /// intent, as Stripe sends it when the buyer pays (and lists it under `/v1/events`).
    pub fn complete_session(&self, event_id: &str, id: &str) -> Value {
        let mut s = self.session(id);
        s["status"] = json!("complete");
        s["payment_status"] = json!("paid");
        let intent = format!("pi_{}", id.trim_start_matches("cs_"));
        s["payment_intent"] = json!(intent);
        self.state.intents.lock().unwrap().push((
            intent,
            s["amount_total"].as_i64().unwrap_or(0),
            s["currency"].as_str().unwrap_or("usd").to_string(),
            0,
        ));
        let e = event(event_id, "checkout.session.completed", s);
        self.add_event(e.clone());
        e
    }

    /// Every `POST /v1/refunds` so far.
    pub fn refund_calls(&self) -> Vec<SessionCall> {
        self.state.refund_calls.lock().unwrap().clone()
    }

    /// The refunds it made, oldest first.
    pub fn refunds(&self) -> Vec<Value> {
        self.state
            .refunds
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, r)| r.clone())
            .collect()
    }

    /// `charge.refunded` for the charge of payment intent `intent`, with everything refunded
    /// so far (Stripe reports the cumulative `amount_refunded`).
    pub fn charge_refunded(&self, event_id: &str, intent: &str) -> Value {
        let intents = self.state.intents.lock().unwrap();
        let (_, amount, currency, refunded) = intents
            .iter()
            .find(|(id, ..)| id == intent)
            .unwrap_or_else(|| panic!("no payment intent {intent}"))
            .clone();
        let e = event(
            event_id,
            "charge.refunded",
            json!({"id": format!("ch_{}", intent.trim_start_matches("pi_")), "object": "charge",
                   "payment_intent": intent, "amount": amount, "amount_refunded": refunded,
                   "refunded": refunded == amount, "currency": currency}),
        );
        drop(intents);
        self.add_event(e.clone());
        e
    }

    /// `checkout.session.expired` for session `id`, as Stripe sends it when it lapses unpaid.
    pub fn expire_session(&self, event_id: &str, id: &str) -> Value {
        let mut s = self.session(id);
        s["status"] = json!("expired");
        let e = event(event_id, "checkout.session.expired", s);
        self.add_event(e.clone());
        e
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
