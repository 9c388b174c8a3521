//! Request routing. Each area of the HTTP surface (health, LL-HLS, later the API and
//! WebRTC signalling) is one branch here and one module beside it.

use std::rc::Rc;

use http::{header, Method, StatusCode};

use super::{Body, Response};
use crate::shard::Shard;

/// Answers one request.
pub async fn handle(shard: &Rc<Shard>, req: http::Request<hyper::body::Incoming>) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["healthz"] => match method {
            Method::GET | Method::HEAD => text(StatusCode::OK, "ok\n"),
            _ => method_not_allowed("GET, HEAD"),
        },
        ["hls", name, file] => match method {
            Method::GET | Method::HEAD => super::hls::serve(shard, name, file, &query).await,
            Method::OPTIONS => super::hls::preflight(),
            _ => method_not_allowed("GET, HEAD, OPTIONS"),
        },
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such resource"),
    }
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

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed: {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    r
}
