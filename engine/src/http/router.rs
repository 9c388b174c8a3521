//! Request routing. Each area of the HTTP surface (health, LL-HLS, later the API and
//! WebRTC signalling) is one branch here and one module beside it.

use std::rc::Rc;

use http::{header, Method, StatusCode};

use super::{Body, ConnInfo, Request, Response, UpgradeSlot};
use crate::metrics::{AuthFailure, Egress, Route};
use crate::shard::Shard;

/// Answers one request. A handler that switches protocols (WebSocket) leaves its task in
/// `upgrade`.
pub async fn handle(
    shard: &Rc<Shard>,
    conn: &ConnInfo,
    upgrade: &UpgradeSlot,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let route = Route::of(&segments);
    let response = match segments.as_slice() {
        ["api", "v1", "events"] => crate::events::http::serve(shard, conn, upgrade, req).await,
        ["api", "v1", rest @ ..] => crate::api::handle(shard, conn, req, rest).await,
        ["metrics"] => match method {
            Method::GET | Method::HEAD => crate::metrics::serve(shard, conn, req).await,
            _ => method_not_allowed("GET, HEAD"),
        },
        ["healthz"] => match method {
            Method::GET | Method::HEAD => text(StatusCode::OK, "ok\n"),
            _ => method_not_allowed("GET, HEAD"),
        },
        ["hls", name, file] => match method {
            Method::GET | Method::HEAD => {
                let r = super::hls::serve(shard, conn.id, name, file, &query).await;
                if method == Method::GET && r.status() == StatusCode::OK {
                    shard.metrics.sent(Egress::Hls, r.body().len());
                }
                r
            }
            Method::OPTIONS => super::hls::preflight(),
            _ => method_not_allowed("GET, HEAD, OPTIONS"),
        },
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such resource"),
    };
    shard
        .metrics
        .http_request(route, response.status().as_u16());
    if response.status() == StatusCode::UNAUTHORIZED {
        shard.metrics.auth_failed(AuthFailure::ApiToken);
    }
    response
}

/// A plain-text response that no cache keeps.
pub fn text(status: StatusCode, body: &'static str) -> Response {
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// Reads a whole request body, refusing one larger than `limit` bytes with 413.
pub async fn read_body(req: Request, limit: usize) -> Result<bytes::Bytes, Response> {
    use http_body_util::BodyExt;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    };
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            Some(n) if n > limit as u64 => return Err(too_large()),
            Some(_) => {}
            None => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "invalid Content-Length",
                ))
            }
        }
    }
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// An error as JSON `{"error": {"code", "message"}}`, never cached.
pub fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message.to_string() } });
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(Body::from(format!("{body}\n")))
        .unwrap_or_default()
}

/// 405 with the methods the resource takes.
pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed: {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    r
}
