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
//! invalid UTF-8, limits, unknown model), 503 when the queue is full, and 500 when a model
//! fails; nothing a client sends can stop the server.
pub mod api;
pub mod worker;

use std::sync::Arc;

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
        .with_state(app)
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
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                413,
                format!("request body over {limit} bytes (--max-body-bytes) or unreadable"),
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
    if checked.options.attention && !worker.info.attention {
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
