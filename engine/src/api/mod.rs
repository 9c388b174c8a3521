//! The REST API under `/api/v1` (JSON, bearer token).

pub mod token;

use std::rc::Rc;

use http::StatusCode;

use crate::http::{error, ConnInfo, Request, Response};
use crate::shard::Shard;

/// Answers `/api/v1/<rest>` (everything but `/api/v1/events`).
pub async fn handle(
    _shard: &Rc<Shard>,
    _conn: &ConnInfo,
    _req: Request,
    _rest: &[&str],
) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such API resource")
}
