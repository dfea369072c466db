//! The HTTP server in front of the local gateway (axum on loopback).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, MAX_REQUEST_BYTES)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return gateway_problem(Problem::payload_too_large(MAX_REQUEST_BYTES)),
        Err(_) => return gateway_problem(request_timeout()),
    };
    // A panic in a function must not take the connection down with it:
    // like a failed Lambda invocation, it is a 502 from the gateway.
    let call =
        tokio::spawn(
            async move { gateway.handle(&parts.method, &target, &parts.headers, &bytes, peer).await },
        );
    let out = match call.await {
        Ok(out) => out,
        Err(_) => return gateway_problem(bad_gateway()),
    };
    let mut response = Response::new(Body::from(out.body));
    *response.status_mut() = out.status;
    *response.headers_mut() = out.headers;
    response
}

/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

fn request_timeout() -> Problem {
    Problem::new(StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request timeout")
        .detail(format!("the request body did not arrive within {} seconds", BODY_TIMEOUT.as_secs()))
}

fn bad_gateway() -> Problem {
    Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway")
        .detail("the function failed to answer")
}

/// A problem the HTTP layer answers itself, with a fresh request id.
fn gateway_problem(problem: Problem) -> Response {
    let request_id = new_request_id();
    let (parts, body) = problem.to_response(Some(&request_id)).into_parts();
    let mut response = Response::new(Body::from(body.to_vec()));
    *response.status_mut() = parts.status;
    *response.headers_mut() = parts.headers;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}
