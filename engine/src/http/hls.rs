//! LL-HLS over HTTP: playlists (with blocking reload and delta updates), init segments,
//! segments and parts, served from this shard's replica of the stream's window.
//!
//! Caching: parts, segments and init segments never change once they exist, so they are
//! `immutable` for a year and a CDN can keep them. Playlists change with every part and live
//! for one second at most; a blocking reload is answered only once the part it asks for
//! exists, so its response is final for that URL and may be cached for the spec's window.

use std::rc::Rc;
use std::time::{Duration, Instant};

use http::{header, StatusCode};
use zerocast_hls::{PartLookup, PlaylistRequest, Readiness, Resource};

use super::router::error;
use super::{Body, Response};
use crate::shard::Shard;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Answers a GET or HEAD of `/hls/<name>/<file>?<query>`.
pub async fn serve(shard: &Rc<Shard>, conn: u64, name: &str, file: &str, query: &str) -> Response {
    let response = answer(shard, name, file, query).await;
    if response.status() == StatusCode::OK {
        if let Some(stream) = shard.hls.get(name) {
            stream.served(conn, response.body().len(), Instant::now());
        }
    }
    response
}

async fn answer(shard: &Rc<Shard>, name: &str, file: &str, query: &str) -> Response {
    let hls = &shard.hls;
    if !hls.enabled() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "LL-HLS is off (hls.enabled)",
        );
    }
    if crate::store::validate_name(name).is_err() {
        return error(StatusCode::NOT_FOUND, "not_found", "no such stream");
    }
    let Some(resource) = Resource::parse(file) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such file");
    };
    let Some(stream) = hls.get(name) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "stream is not live (or has no keyframe yet)",
        );
    };
    let part_target = hls.config().part_duration;
    match resource {
        Resource::Multivariant => match stream.window().multivariant_playlist("media.m3u8") {
            Some(text) => ok(resource.content_type(), "public, max-age=1", text.into()),
            None => error(StatusCode::NOT_FOUND, "not_found", "no init segment yet"),
        },
        Resource::Media => {
            let req = match PlaylistRequest::parse(query) {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
            };
            let target = stream.window().target_duration();
            let readiness = stream.window().readiness(&req);
            match readiness {
                Readiness::Ready => {}
                Readiness::BadRequest(reason) => {
                    return error(StatusCode::BAD_REQUEST, "bad_request", reason)
                }
                Readiness::Wait => {
                    // The spec lets a server hold a blocking reload for three target
                    // durations; after that the client should ask again.
                    let deadline = Instant::now() + target * 3;
                    let ready = stream
                        .wait_until(deadline, |w| !matches!(w.readiness(&req), Readiness::Wait))
                        .await;
                    if !ready {
                        return error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not_yet",
                            "the requested part did not appear in time",
                        );
                    }
                }
            }
            let text = stream.window().media_playlist(&req);
            let cache = if req.msn.is_some() {
                format!("public, max-age={}", (target * 6).as_secs().max(1))
            } else {
                "public, max-age=1".to_owned()
            };
            ok(resource.content_type(), &cache, text.into())
        }
        Resource::Init { id } => match stream.window().init(id) {
            Some(data) => ok(resource.content_type(), IMMUTABLE, Body::from(data)),
            None => error(StatusCode::NOT_FOUND, "not_found", "no such init segment"),
        },
        Resource::Segment { msn } => match stream.window().segment(msn) {
            Some(chunks) => ok(
                resource.content_type(),
                IMMUTABLE,
                Body::from_chunks(chunks),
            ),
            None => error(StatusCode::NOT_FOUND, "not_found", "no such segment"),
        },
        Resource::Part { seq } => {
            let lookup = stream.window().part(seq);
            let chunks = match lookup {
                PartLookup::Found(chunks) => chunks,
                PartLookup::Gone => {
                    return error(StatusCode::NOT_FOUND, "not_found", "no such part")
                }
                PartLookup::NotYet => {
                    // The preload hint: hold the request until the part is complete. A part
                    // cut at a keyframe can take a whole frame interval longer than the target.
                    let deadline = Instant::now() + part_target * 3 + Duration::from_millis(500);
                    let found = stream
                        .wait_until(deadline, |w| !matches!(w.part(seq), PartLookup::NotYet))
                        .await;
                    match (found, stream.window().part(seq)) {
                        (true, PartLookup::Found(chunks)) => chunks,
                        _ => {
                            return error(
                                StatusCode::NOT_FOUND,
                                "not_found",
                                "the hinted part did not appear",
                            )
                        }
                    }
                }
            };
            ok(
                resource.content_type(),
                IMMUTABLE,
                Body::from_chunks(chunks),
            )
        }
    }
}

/// CORS preflight: browsers playing from another origin may ask before a GET.
pub fn preflight() -> Response {
    http::Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS")
        .header(header::ACCESS_CONTROL_ALLOW_HEADERS, "*")
        .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
        .body(Body::empty())
        .unwrap_or_default()
}

fn ok(content_type: &'static str, cache: &str, body: Body) -> Response {
    http::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, cache)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(body)
        .unwrap_or_default()
}
