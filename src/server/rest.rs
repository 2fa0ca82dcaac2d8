//! The Open Inference Protocol over HTTP/1.1 (`inference_rest.md`), with
//! Triton's binary tensor data extension and model-config endpoint.
//!
//! ```text
//! GET  /v2                                   server metadata
//! GET  /v2/health/live | /v2/health/ready    200, or 400 when not
//! GET  /v2/models/{m}[/versions/{v}]         model metadata
//! GET  /v2/models/{m}[/versions/{v}]/ready   model readiness
//! GET  /v2/models/{m}[/versions/{v}]/config  Triton's model configuration
//! POST /v2/models/{m}[/versions/{v}]/infer   inference
//! ```
//!
//! Errors are `{"error": "..."}` with Triton's statuses (400, 404, 503,
//! 500). A body is read only up to [`Limits::max_body_bytes`]: a declared
//! `Content-Length` beyond it is refused before a byte is read. A body must
//! arrive whole within the body deadline of its head, else the request is
//! answered 408 and the connection closed, so a client that stalls its body
//! holds its connection no longer than that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::protocol::{self, Limits, ProtocolError};
use super::service::Service;

/// The header that carries the JSON part's length of a binary body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// How long a request body may take to arrive whole, from its head.
#[derive(Clone, Copy, Debug)]
struct BodyDeadline(Duration);

/// The routes, serving `service`; a body must arrive whole within
/// `body_deadline` of its head.
pub fn router(service: Arc<Service>, body_deadline: Duration) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(metadata))
        .route("/v2/models/{model}/versions/{version}", get(metadata_v))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{model}/config", get(config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(config_v),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .fallback(not_found)
        .layer(Extension(BodyDeadline(body_deadline)))
        .with_state(service)
}

fn json(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        v.to_string(),
    )
        .into_response()
}

fn error(e: &ProtocolError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &e.json())
}

async fn not_found(req: Request) -> Response {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": format!("no such endpoint: {} {}", req.method(), req.uri().path())}),
    )
}

async fn server_metadata() -> Response {
    json(
        StatusCode::OK,
        &protocol::server_metadata_json(env!("CARGO_PKG_VERSION")),
    )
}

async fn live() -> Response {
    json(StatusCode::OK, &protocol::server_live_json(true))
}

fn health(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn ready(State(s): State<Arc<Service>>) -> Response {
    let ready = s.is_ready();
    json(health(ready), &protocol::server_ready_json(ready))
}

async fn metadata(s: State<Arc<Service>>, Path(m): Path<String>) -> Response {
    metadata_v(s, Path((m, String::new()))).await
}

async fn metadata_v(
    State(s): State<Arc<Service>>,
    Path((m, v)): Path<(String, String)>,
) -> Response {
    match s.lookup(&m, &v) {
        Ok(model) => json(StatusCode::OK, &model.desc.metadata_json()),
        Err(e) => error(&e),
    }
}

async fn model_ready(s: State<Arc<Service>>, Path(m): Path<String>) -> Response {
    model_ready_v(s, Path((m, String::new()))).await
}

async fn model_ready_v(
    State(s): State<Arc<Service>>,
    Path((m, v)): Path<(String, String)>,
) -> Response {
    match s.lookup(&m, &v) {
        Ok(model) => {
            let ready = s.is_ready();
            json(health(ready), &model.desc.ready_json(ready))
        }
        Err(e) => error(&e),
    }
}

async fn config(s: State<Arc<Service>>, Path(m): Path<String>) -> Response {
    config_v(s, Path((m, String::new()))).await
}

async fn config_v(State(s): State<Arc<Service>>, Path((m, v)): Path<(String, String)>) -> Response {
    match s.lookup(&m, &v) {
        Ok(model) => json(StatusCode::OK, &model.desc.config_json()),
        Err(e) => error(&e),
    }
}

async fn infer(
    s: State<Arc<Service>>,
    d: Extension<BodyDeadline>,
    Path(m): Path<String>,
    req: Request,
) -> Response {
    infer_v(s, d, Path((m, String::new())), req).await
}

async fn infer_v(
    State(s): State<Arc<Service>>,
    Extension(BodyDeadline(deadline)): Extension<BodyDeadline>,
    Path((m, v)): Path<(String, String)>,
    req: Request,
) -> Response {
    let arrived = Instant::now();
    let model = match s.lookup(&m, &v) {
        Ok(model) => model,
        Err(e) => {
            s.refused(&m, &e);
            return error(&e);
        }
    };
    let name = model.desc.name.clone();
    let limits = s.settings().limits;
    let (parts, body) = req.into_parts();
    let whole_by = tokio::time::Instant::from_std(arrived + deadline);
    let read =
        match tokio::time::timeout_at(whole_by, read_body(&parts.headers, body, &limits)).await {
            Ok(read) => read,
            Err(_) => {
                let e = ProtocolError::Invalid(format!(
                    "the request body did not arrive whole within {} ms",
                    deadline.as_millis()
                ));
                s.refused(&name, &e);
                let mut r = json(StatusCode::REQUEST_TIMEOUT, &e.json());
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
        };
    let parsed = match read {
        Ok((bytes, header_length)) => {
            protocol::parse_infer_request(&bytes, header_length, &limits, Some(&model.desc))
        }
        Err(e) => Err(e),
    };
    let request = match parsed {
        Ok(r) => r,
        Err(e) => {
            s.refused(&name, &e);
            return error(&e);
        }
    };
    if !s.is_ready() {
        let e = ProtocolError::Unavailable("the server is shutting down".into());
        s.refused(&name, &e);
        return error(&e);
    }
    let binary: Vec<(String, bool)> = model
        .desc
        .outputs
        .iter()
        .map(|o| (o.name.clone(), request.wants_binary(&o.name)))
        .collect();
    match s.infer(&model, request, arrived, None).await {
        Ok(resp) => {
            let wants = |n: &str| binary.iter().any(|(o, b)| o == n && *b);
            let (body, header_length) = protocol::encode_infer_response(&resp, &wants);
            let mut r = Response::new(Body::from(body));
            let h = r.headers_mut();
            match header_length {
                Some(n) => {
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    h.insert(HEADER_LENGTH, HeaderValue::from(n));
                }
                None => {
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
            }
            r
        }
        Err(e) => error(&e),
    }
}

/// The body, bounded by `limits`, and the binary extension's header length.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: &Limits,
) -> Result<(Bytes, Option<usize>), ProtocolError> {
    let invalid = |m: String| ProtocolError::Invalid(m);
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("?");
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(invalid(format!(
                "Content-Encoding {enc:?} is not supported; send the body uncompressed"
            )));
        }
    }
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "Inference-Header-Content-Length {v:?} is not a byte count"
                    ))
                })?,
        ),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.parse::<usize>().ok());
    if let Some(size) = declared
        && size > limits.max_body_bytes
    {
        return Err(ProtocolError::BodyTooLarge {
            size,
            max: limits.max_body_bytes,
        });
    }
    let bytes = axum::body::to_bytes(body, limits.max_body_bytes)
        .await
        .map_err(|e| {
            let source = std::error::Error::source(&e).map(ToString::to_string);
            match source {
                Some(s) if s.contains("length limit") => invalid(format!(
                    "the request body is larger than the {} bytes allowed",
                    limits.max_body_bytes
                )),
                _ => invalid(format!("reading the request body: {e}")),
            }
        })?;
    Ok((bytes, header_length))
}
