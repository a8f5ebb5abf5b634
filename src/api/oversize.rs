//! A body declared larger than the limit gets a readable `413`. Answering
//! and closing while the client is still sending makes most clients (curl
//! aside) fail with a broken pipe before they read the answer, so the body
//! is read and dropped first, up to a bound; past that bound the connection
//! is closed without reading further.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::ApiError;
use super::error::Detail;

/// The most bytes of an oversize body read (and dropped) before answering.
const DRAIN_BYTES: u64 = 64 << 20;

/// The body's declared length, when the request declares one.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What an oversize body is answered with. Pure.
pub fn refusal(declared: u64, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is {declared} bytes; at most {limit} bytes are accepted"),
    )
    .with(Detail {
        limit_bytes: Some(limit as u64),
        ..Detail::default()
    })
}

/// Middleware: refuses a body declared over `limit` bytes after reading it.
pub async fn refuse(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let Some(declared) = declared_length(&req).filter(|n| *n > limit as u64) else {
        return next.run(req).await;
    };
    let mut read: u64 = 0;
    let mut body = req.into_body();
    if declared <= DRAIN_BYTES {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len() as u64);
            if read >= declared {
                break;
            }
        }
    }
    tracing::debug!(declared, read, limit, "refused an oversize body");
    let mut resp = refusal(declared, limit).into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route(
                "/x",
                post(|body: String| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn_with_state(10usize, refuse))
    }

    #[tokio::test]
    async fn an_oversize_body_is_read_and_refused_with_its_size() {
        let resp = app()
            .oneshot(
                Request::post("/x")
                    .header(header::CONTENT_LENGTH, "11")
                    .body(Body::from("01234567890"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "payload_too_large");
        assert_eq!(v["limit_bytes"], 10);
        assert_eq!(
            v["message"],
            "the request body is 11 bytes; at most 10 bytes are accepted"
        );
    }

    #[tokio::test]
    async fn a_body_within_the_limit_passes() {
        let resp = app()
            .oneshot(
                Request::post("/x")
                    .header(header::CONTENT_LENGTH, "10")
                    .body(Body::from("0123456789"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
