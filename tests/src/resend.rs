//! A Resend stand-in speaking Resend's `POST /emails` (JSON in, `{"id"}` out, error bodies
//! `{"statusCode", "name", "message"}`), reached by the real resend-rs client through its base
//! URL. It records every request with its Idempotency-Key, treats a repeated key as Resend does
//! (same id, no second delivery), and answers 500, 429 or 422 on demand. It can also go down
//! for real ([`ResendStandIn::down`]: the port refuses connections) and come back on the same
//! port ([`ResendStandIn::up`]).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with an id.
    Ok,
    /// 500 application_error.
    ServerError,
    /// 429 with `retry-after` / `ratelimit-reset` in seconds.
    RateLimited(u64),
    /// 422 validation_error with this message.
    Invalid(String),
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The Idempotency-Key header.
    pub idempotency_key: Option<String>,
    /// The JSON body.
    pub body: Value,
    /// The status answered.
    pub status: u16,
    /// Whether it delivered a new email (not an idempotent replay).
    pub delivered: bool,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    received: Vec<Received>,
    ids: HashMap<String, String>,
}

/// The server currently listening, if any.
struct Serving {
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

/// A running stand-in.
#[derive(Clone)]
pub struct ResendStandIn {
    /// Its base URL.
    pub url: String,
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    serving: Arc<tokio::sync::Mutex<Option<Serving>>>,
}

async fn emails(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut g = inner.lock().expect("lock");
    let answer = g.script.pop_front().unwrap_or(Answer::Ok);
    let (status, response, delivered) = match answer {
        Answer::Ok => {
            let (id, fresh) = match key.as_ref().and_then(|k| g.ids.get(k)) {
                Some(id) => (id.clone(), false),
                None => {
                    let id = uuid::Uuid::new_v4().to_string();
                    if let Some(k) = &key {
                        g.ids.insert(k.clone(), id.clone());
                    }
                    (id, true)
                }
            };
            (200, Json(json!({ "id": id })).into_response(), fresh)
        }
        Answer::ServerError => (500, (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"statusCode": 500, "name": "application_error", "message": "An unexpected error occurred."}))).into_response(), false),
        Answer::RateLimited(secs) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(json!({"statusCode": 429, "name": "rate_limit_exceeded", "message": "Too many requests."}))).into_response();
            r.headers_mut().insert("retry-after", secs.into());
            r.headers_mut().insert("ratelimit-reset", secs.into());
            (429, r, false)
        }
        Answer::Invalid(msg) => (422, (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"statusCode": 422, "name": "validation_error", "message": msg}))).into_response(), false),
    };
    g.received.push(Received {
        idempotency_key: key,
        body,
        status,
        delivered,
        at: Instant::now(),
    });
    response
}

impl ResendStandIn {
    /// The variables that point Granary's Resend client at this stand-in.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("RESEND_API_KEY", "re_test_key".into()),
            ("RESEND_BASE_URL", self.url.clone()),
            ("RESEND_FROM_EMAIL", "Shop <orders@shop.test>".into()),
        ]
    }

    /// Starts it on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let this = Self {
            url: format!("http://{addr}"),
            addr,
            inner: Arc::new(Mutex::new(Inner::default())),
            serving: Arc::new(tokio::sync::Mutex::new(None)),
        };
        *this.serving.lock().await = Some(this.serve(listener));
        this
    }

    fn serve(&self, listener: tokio::net::TcpListener) -> Serving {
        let app = Router::new()
            .route("/emails", post(emails))
            .with_state(self.inner.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        Serving { stop, task }
    }

    /// Takes the service down: the listening socket is closed (new connections are refused) and
    /// idle keep-alive connections are closed, as when Resend's edge is unreachable.
    pub async fn down(&self) {
        if let Some(s) = self.serving.lock().await.take() {
            s.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.task).await;
        }
    }

    /// Brings it back on the same port.
    pub async fn up(&self) {
        let mut serving = self.serving.lock().await;
        if serving.is_none() {
            let listener = tokio::net::TcpListener::bind(self.addr)
                .await
                .expect("bind the stand-in's port again");
            *serving = Some(self.serve(listener));
        }
    }

    /// Queues answers for the next requests (then 200s).
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().expect("lock").script.extend(answers);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("lock").received.clone()
    }

    /// How many emails were actually delivered so far (cheap: nothing is cloned).
    pub fn delivered_count(&self) -> usize {
        self.inner
            .lock()
            .expect("lock")
            .received
            .iter()
            .filter(|r| r.delivered)
            .count()
    }

    /// Emails actually delivered (idempotent replays excluded).
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.delivered)
            .collect()
    }
}
