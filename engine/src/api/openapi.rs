//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of this API, generated once from the
//! handlers' `#[utoipa::path]` attributes and the [`super::types`] schemas.
//!
//! Responses every operation can give are added here rather than on each handler: 400 (bad
//! path, query or body), 401 (no or wrong token) and 503 (the store or a shard could not
//! answer in time).

use std::sync::OnceLock;

use http::{header, StatusCode};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, RefOr};
use utoipa::{Modify, OpenApi};

use super::types;
use super::{recordings, streams};
use crate::http::{Body, Response};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "zerocast API",
        description = "Manage streams, read live statistics and publish history, list and download recordings. \
            Every operation needs `Authorization: Bearer <api token>` (`auth.api_token`, \
            `ZEROCAST_API_TOKEN`, or the token generated into `<data_dir>/api-token`). \
            Errors are `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        streams::create,
        streams::list,
        streams::get,
        streams::update,
        streams::delete,
        streams::stop,
        streams::rotate_key,
        streams::sessions,
        recordings::list,
        recordings::get,
        recordings::download,
    ),
    components(schemas(
        types::ErrorBody,
        types::ErrorDetail,
        types::StreamStatus,
        types::CreateStream,
        types::UpdateStream,
        types::Stream,
        types::StreamWithKey,
        types::StreamList,
        types::PlayUrls,
        types::KeyUrls,
        types::LiveStats,
        types::TrackInfo,
        types::TrackKind,
        types::Viewers,
        types::Session,
        types::SessionList,
        types::Recording,
        types::RecordingList,
        types::RecordingState,
        types::RecordingFormat,
    )),
    modifiers(&Common),
    security(("bearer" = [])),
    tags(
        (name = "streams", description = "Streams, their keys, status, live statistics and history"),
        (name = "recordings", description = "Recorded files"),
    ),
)]
struct ApiDoc;

/// Adds the bearer scheme and the responses every operation shares.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    )))),
                )
                .build()
        };
        // `POST /streams` takes an empty body (every field is optional); utoipa marks a
        // typed body required.
        if let Some(body) = doc
            .paths
            .paths
            .get_mut("/api/v1/streams")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut())
        {
            body.required = Some(utoipa::openapi::Required::False);
        }
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let r = &mut op.responses.responses;
                r.entry("400".into()).or_insert_with(|| {
                    RefOr::T(error(
                        "Invalid path, query parameter or body; the message says which",
                    ))
                });
                r.entry("401".into())
                    .or_insert_with(|| RefOr::T(error("Missing or wrong bearer token")));
                r.entry("503".into()).or_insert_with(|| {
                    RefOr::T(error(
                        "The store or a shard could not answer in time; retry",
                    ))
                });
            }
        }
    }
}

/// The document as JSON (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            // Serialising a document built from constants cannot fail.
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

/// Answers `GET /api/v1/openapi.json`.
pub fn serve() -> Response {
    http::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(Body::from(bytes::Bytes::from_static(document().as_bytes())))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_operation_with_shared_errors() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let paths = doc["paths"].as_object().unwrap();
        let mut ops = 0;
        for (path, item) in paths {
            assert!(path.starts_with("/api/v1/"), "{path}");
            for (method, op) in item.as_object().unwrap() {
                if !["get", "post", "patch", "delete"].contains(&method.as_str()) {
                    continue;
                }
                ops += 1;
                for code in ["400", "401", "503"] {
                    assert!(
                        op["responses"][code].is_object(),
                        "{method} {path} lacks {code}"
                    );
                }
            }
        }
        assert_eq!(ops, 11);
        assert!(paths.contains_key("/api/v1/streams/{name}/rotate-key"));
        // Strict request bodies are declared as such; create's is optional.
        let create = &doc["components"]["schemas"]["CreateStream"];
        assert_eq!(create["properties"]["name"]["maxLength"], 64);
        assert_eq!(create["additionalProperties"], false);
        let body = &paths["/api/v1/streams"]["post"]["requestBody"];
        assert_eq!(body["required"], false);
        assert_eq!(
            paths["/api/v1/streams/{name}"]["patch"]["requestBody"]["required"],
            true
        );
    }
}
