//! `rnmt-serve`: a translation server over HTTP with OpenNMT-py's API ([`api`]), one worker
//! thread per model fed by a bounded queue with dynamic batching ([`worker`]), and a small
//! web page at `/` (no external resources).
//!
//! Routes:
//! * `POST /translator/translate`: translate (see [`api`] for the shapes);
//! * `GET /translator/models`: the loaded models;
//! * `GET /health`: `{"status": "ok"}`;
//! * `GET /`: the web page.
//!
//! Every error is `{"error": "..."}` with a 4xx status for a bad request (malformed JSON,
//! invalid UTF-8, limits, unknown model, an incomplete body, `Content-Length` together with
//! `Transfer-Encoding`), 408 for a body not complete within the body timeout, 503 when the
//! queue is full, and 500 when a model fails; nothing a client sends can stop the server.
//! Connections are bounded in number and time by [`conn`].
pub mod api;
pub mod conn;
pub mod overflow;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::oneshot;

use api::{Limits, Rejection, SearchOptions};
use worker::{Job, Refused, Worker};

/// The web page (HTML, CSS and script in one file).
pub const PAGE: &str = include_str!("page.html");

/// What the handlers share: the model workers and the request limits.
pub struct App {
    pub workers: Vec<Worker>,
    pub limits: Limits,
    /// The search settings of a request that names none.
    pub defaults: SearchOptions,
    /// Time to receive a whole request body once its head has arrived (408 beyond).
    pub body_timeout: Duration,
}

/// The routes of [`App`].
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/translator/models", get(models))
        .route("/translator/translate", post(translate))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(reject_ambiguous_length))
        .with_state(app)
}

/// A request with both `Content-Length` and `Transfer-Encoding` is answered 400 and its
/// connection closed: two framings of one body are how requests are smuggled past a proxy.
async fn reject_ambiguous_length(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let h = req.headers();
    let sniffed = req
        .extensions()
        .get::<conn::AmbiguousFraming>()
        .is_some_and(|f| f.is_set());
    if sniffed
        || (h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH))
    {
        let mut r = error(
            400,
            "a request may not have both Content-Length and Transfer-Encoding",
        );
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return r;
    }
    next.run(req).await
}

/// An error answer that also closes the connection (its request was not read to its end).
fn error_closing(status: u16, message: impl Into<String>) -> Response {
    let mut r = error(status, message);
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

fn error(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = api::ErrorBody {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn models(State(app): State<Arc<App>>) -> Json<Vec<worker::ModelInfo>> {
    Json(app.workers.iter().map(|w| w.info.clone()).collect())
}

async fn not_found() -> Response {
    error(
        404,
        "no such route: POST /translator/translate, GET /translator/models, GET /health, GET /",
    )
}

async fn method_not_allowed() -> Response {
    error(405, "method not allowed on this route")
}

async fn translate(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let limit = app.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return error(
            413,
            format!(
                "request body of {} bytes, at most {limit} (--max-body-bytes)",
                declared.unwrap_or_default()
            ),
        );
    }
    let bytes =
        match tokio::time::timeout(app.body_timeout, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let over = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                return if over {
                    error_closing(
                        413,
                        format!("request body over {limit} bytes (--max-body-bytes)"),
                    )
                } else {
                    error_closing(400, format!("request body incomplete or malformed: {e}"))
                };
            }
            Err(_) => {
                return error_closing(
                    408,
                    format!(
                        "request body not complete within {:?} (--body-timeout)",
                        app.body_timeout
                    ),
                )
            }
        };
    let ids: Vec<u64> = app.workers.iter().map(|w| w.info.model_id).collect();
    let checked = match api::check_request(&bytes, &app.limits, &ids, app.defaults) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(worker) = app
        .workers
        .iter()
        .find(|w| w.info.model_id == checked.model)
    else {
        return error(404, format!("no model with id {}", checked.model));
    };
    if (checked.options.attention || checked.options.align) && !worker.info.attention {
        return error(
            400,
            format!(
                "model {} has no attention (model.decoder.attention = none): \
                 it cannot return attention weights",
                checked.model
            ),
        );
    }
    let (reply, answer) = oneshot::channel();
    let job = Job {
        sentences: checked.sentences.clone(),
        constraints: checked.constraints.clone(),
        options: checked.options,
        reply,
    };
    match worker.submit(job) {
        Ok(()) => {}
        Err(Refused::Busy) => return error(503, "the server is busy: queue full, retry later"),
        Err(Refused::Stopped) => return error(503, "the model worker has stopped"),
    }
    match answer.await {
        Ok(Ok(hypotheses)) => Json(api::response(
            &checked.sentences,
            &hypotheses,
            checked.options.n_best,
        ))
        .into_response(),
        Ok(Err(message)) => error(500, message),
        Err(_) => error(500, "the model worker stopped during the request"),
    }
}
