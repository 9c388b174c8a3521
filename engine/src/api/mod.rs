//! The REST API under `/api/v1` (JSON, bearer token).
//!
//! Every request is checked against the API token first ([`token::check`]), then routed by
//! path and method. Handlers run on whichever shard took the HTTP connection: settings and
//! history come from the store thread ([`crate::store::StoreHandle::run`]), live state from
//! the shards through [`crate::control`] queries. The OpenAPI 3.1 document
//! (`/api/v1/openapi.json`) is generated from the handlers' `#[utoipa::path]` attributes and
//! the types in [`types`], so the two cannot drift apart.
//!
//! Bad input is a 4xx with `{"error": {"code", "message"}}`: malformed JSON, unknown fields,
//! wrong types, out-of-range query parameters, invalid names. 503 means the store or a shard
//! could not answer in time.

// Errors here are whole HTTP responses, made once per request on the way out; boxing them
// would buy nothing.
#![allow(clippy::result_large_err)]

pub mod token;
pub mod types;

mod openapi;
mod recordings;
mod streams;

use std::collections::HashMap;
use std::rc::Rc;

use http::{header, Method, StatusCode};
use serde::Serialize;

use crate::http::{error, method_not_allowed, Body, ConnInfo, Request, Response};
use crate::shard::Shard;
use crate::store::StoreError;

pub use openapi::document;

/// Largest request body the API reads.
const MAX_BODY: usize = 16 * 1024;
/// Largest page.
pub const MAX_PER_PAGE: u32 = 500;
/// Page size when `per_page` is absent.
pub const DEFAULT_PER_PAGE: u32 = 50;
/// Highest page number accepted (keeps offsets far from overflow).
pub const MAX_PAGE: u32 = 1_000_000;
/// Longest stream description, in characters.
pub const MAX_DESCRIPTION: usize = 1024;

/// Answers `/api/v1/<rest>` (everything but `/api/v1/events`).
pub async fn handle(shard: &Rc<Shard>, conn: &ConnInfo, req: Request, rest: &[&str]) -> Response {
    if let Some(refused) = token::check(&shard.cfg, req.headers()) {
        return refused;
    }
    let method = req.method().clone();
    let m = &method;
    match rest {
        ["openapi.json"] => match *m {
            Method::GET => openapi::serve(),
            _ => method_not_allowed("GET"),
        },
        ["streams"] => match *m {
            Method::GET => streams::list(shard, conn, &req).await,
            Method::POST => streams::create(shard, conn, req).await,
            _ => method_not_allowed("GET, POST"),
        },
        ["streams", name] => match *m {
            Method::GET => streams::get(shard, conn, &req, name).await,
            Method::PATCH => streams::update(shard, conn, req, name).await,
            Method::DELETE => streams::delete(shard, name).await,
            _ => method_not_allowed("GET, PATCH, DELETE"),
        },
        ["streams", name, "stop"] => match *m {
            Method::POST => streams::stop(shard, conn, &req, name).await,
            _ => method_not_allowed("POST"),
        },
        ["streams", name, "rotate-key"] => match *m {
            Method::POST => streams::rotate_key(shard, conn, &req, name).await,
            _ => method_not_allowed("POST"),
        },
        ["streams", name, "sessions"] => match *m {
            Method::GET => streams::sessions(shard, &req, name).await,
            _ => method_not_allowed("GET"),
        },
        ["recordings"] => match *m {
            Method::GET => recordings::list(shard, &req).await,
            _ => method_not_allowed("GET"),
        },
        ["recordings", id] => match *m {
            Method::GET => recordings::get(shard, id).await,
            _ => method_not_allowed("GET"),
        },
        ["recordings", id, "download"] => match *m {
            Method::GET => recordings::download(shard, &req, id).await,
            _ => method_not_allowed("GET"),
        },
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such API resource"),
    }
}

/// A JSON response that no cache keeps.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            http::Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-store")
                .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
                .body(Body::from(bytes::Bytes::from(body)))
                .unwrap_or_default()
        }
        // Our own types always serialise; this would be a bug.
        Err(e) => internal(format!("cannot serialise the response: {e}")),
    }
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn not_found(what: impl std::fmt::Display) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", what)
}

fn unavailable(message: impl std::fmt::Display) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    r
}

fn internal(message: impl std::fmt::Display) -> Response {
    tracing::error!("API: {message}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error (logged)",
    )
}

/// The response for a store failure.
fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::InvalidName { .. } => error(StatusCode::BAD_REQUEST, "invalid_name", &e),
        StoreError::StreamExists(_) => error(StatusCode::CONFLICT, "conflict", &e),
        StoreError::StreamNotFound(_) => not_found(&e),
        StoreError::Busy | StoreError::Closed => unavailable(&e),
        other => internal(crate::cli::error_chain(&other)),
    }
}

/// A stream name from the path, or the 400 that explains what is wrong with it.
fn path_name(raw: &str) -> Result<String, Response> {
    crate::store::validate_name(raw)
        .map(|()| raw.to_owned())
        .map_err(|reason| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_name",
                format!("invalid stream name: {reason}"),
            )
        })
}

/// Query parameters, percent-decoded; a parameter given twice or badly encoded is a 400.
/// Unknown parameters are the caller's business (ignored).
struct QueryParams(HashMap<String, String>);

impl QueryParams {
    fn parse(req: &Request) -> Result<QueryParams, Response> {
        Self::parse_uri(req.uri())
    }

    fn parse_uri(uri: &http::Uri) -> Result<QueryParams, Response> {
        let mut map = HashMap::new();
        let Some(q) = uri.query() else {
            return Ok(QueryParams(map));
        };
        for (k, v) in crate::http::query::pairs(q).map_err(bad_request)? {
            if map.insert(k.clone(), v).is_some() {
                return Err(bad_request(format!("query parameter {k:?} given twice")));
            }
        }
        Ok(QueryParams(map))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// An integer parameter in `min..=max`, `default` when absent.
    fn int(&self, key: &str, min: u32, max: u32, default: u32) -> Result<u32, Response> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        match raw.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(bad_request(format!(
                "{key} must be an integer from {min} to {max}, not {raw:?}"
            ))),
        }
    }

    /// `page` and `per_page`.
    fn page(&self) -> Result<Page, Response> {
        Ok(Page {
            page: self.int("page", 1, MAX_PAGE, 1)?,
            per_page: self.int("per_page", 1, MAX_PER_PAGE, DEFAULT_PER_PAGE)?,
        })
    }
}

/// A page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    page: u32,
    per_page: u32,
}

impl Page {
    fn offset(self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }
}

/// A request body as `T`: strict JSON, or the 4xx to send. An empty body reads as `{}` when
/// `optional`, else it is refused.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request,
    optional: bool,
) -> Result<T, Response> {
    let body = crate::http::read_body(req, MAX_BODY).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        if optional {
            return parse_object(b"{}");
        }
        return Err(bad_request("a JSON body is required"));
    }
    parse_object(&body)
}

/// Strict JSON object → `T` (serde would also read a struct from an array).
fn parse_object<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, Response> {
    let invalid = |e: &dyn std::fmt::Display| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {e}"),
        )
    };
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| invalid(&e))?;
    if !value.is_object() {
        return Err(invalid(&"expected a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| invalid(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_must_be_objects() {
        let ok: types::CreateStream = parse_object(br#"{"name":"x"}"#).unwrap();
        assert_eq!(ok.name.as_deref(), Some("x"));
        for bad in [
            &b"[]"[..],
            b"null",
            b"1",
            b"\"s\"",
            b"{",
            br#"{"name":1}"#,
            br#"{"x":1}"#,
        ] {
            let r = parse_object::<types::CreateStream>(bad).unwrap_err();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        }
    }

    fn query(q: &str) -> Result<QueryParams, Response> {
        let req = http::Request::builder()
            .uri(format!("/api/v1/streams?{q}"))
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        // Only the URI matters to the parser.
        QueryParams::parse_uri(&parts.uri)
    }

    #[test]
    fn query_parameters_are_validated() {
        let q = query("page=2&per_page=10&status=live&x").unwrap();
        assert_eq!(
            q.page().unwrap(),
            Page {
                page: 2,
                per_page: 10
            }
        );
        assert_eq!(q.page().unwrap().offset(), 10);
        assert_eq!(q.get("status"), Some("live"));
        for bad in [
            "page=0",
            "page=-1",
            "page=1.5",
            "page=99999999999",
            "per_page=501",
            "per_page=",
        ] {
            let q = query(bad).unwrap();
            assert_eq!(
                q.page().unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert!(query("page=1&page=2").is_err());
        assert!(query("status=%zz").is_err());
        assert_eq!(
            query("").unwrap().page().unwrap(),
            Page {
                page: 1,
                per_page: DEFAULT_PER_PAGE
            }
        );
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let cases = [
            (
                StoreError::InvalidName {
                    name: "a.b".into(),
                    reason: "dots".into(),
                },
                400,
            ),
            (StoreError::StreamExists("a".into()), 409),
            (StoreError::StreamNotFound("a".into()), 404),
            (StoreError::Busy, 503),
        ];
        for (e, status) in cases {
            assert_eq!(store_error(e).status().as_u16(), status);
        }
        assert_eq!(
            path_name("a/b").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(path_name("ok-name_1").unwrap(), "ok-name_1");
    }
}
