//! The HTTP server in front of the local gateway (axum on loopback).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use pharmagate_shared::http::Problem;
use tokio::net::TcpListener;

use crate::gateway::{Gateway, MAX_REQUEST_BYTES, new_request_id};

/// Serves `gateway` on `listener` until `shutdown` completes; in-flight
/// requests finish first.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().fallback(handle).with_state(gateway);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string();
    let bytes = match to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return too_large(),
    };
    let out = gateway.handle(&parts.method, &target, &parts.headers, &bytes, peer).await;
    let mut response = Response::new(Body::from(out.body));
    *response.status_mut() = out.status;
    *response.headers_mut() = out.headers;
    response
}

fn too_large() -> Response {
    let request_id = new_request_id();
    let problem = Problem::payload_too_large(MAX_REQUEST_BYTES).to_response(Some(&request_id));
    let (parts, body) = problem.into_parts();
    let mut response = Response::new(Body::from(body.to_vec()));
    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    *response.headers_mut() = parts.headers;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}
