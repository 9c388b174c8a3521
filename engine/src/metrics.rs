//! `GET /metrics`: Prometheus text format.

use std::rc::Rc;

use http::StatusCode;

use crate::http::{error, ConnInfo, Request, Response};
use crate::shard::Shard;

/// Answers `GET /metrics`.
pub async fn serve(_shard: &Rc<Shard>, _conn: &ConnInfo, _req: Request) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "metrics are not served yet")
}
