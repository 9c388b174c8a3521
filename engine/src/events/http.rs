//! `GET /api/v1/events`: live events as Server-Sent Events or over a WebSocket.

use std::rc::Rc;

use http::StatusCode;

use crate::http::{error, ConnInfo, Request, Response};
use crate::shard::Shard;

/// Answers `/api/v1/events`.
pub async fn serve(_shard: &Rc<Shard>, _conn: &ConnInfo, _req: Request) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "events are not served yet")
}
