//! The HTTP server in front of the local gateway (axum on loopback).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use http::StatusCode;
use pharmagate_shared::http::Problem;
use tokio::net::TcpListener;

use crate::gateway::{Gateway, GatewayResponse, MAX_REQUEST_BYTES};

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
    let read = tokio::time::timeout(gateway.body_timeout(), to_bytes(body, MAX_REQUEST_BYTES)).await;
    let refusal = match read {
        Ok(Ok(bytes)) => {
            // A panic in a function must not take the connection down with
            // it: like a failed Lambda invocation, it is a 502 from the gateway.
            let (gateway, method, target) = (gateway.clone(), parts.method.clone(), target.clone());
            let call =
                tokio::spawn(
                    async move { gateway.handle(&method, &target, &parts.headers, &bytes, peer).await },
                );
            match call.await {
                Ok(out) => return to_http(out),
                Err(_) => bad_gateway(),
            }
        }
        Ok(Err(_)) => Problem::payload_too_large(MAX_REQUEST_BYTES),
        Err(_) => request_timeout(gateway.body_timeout()),
    };
    to_http(gateway.refuse(refusal, &parts.method, &target, peer).await)
}

fn to_http(out: GatewayResponse) -> Response {
    let mut response = Response::new(Body::from(out.body));
    *response.status_mut() = out.status;
    *response.headers_mut() = out.headers;
    response
}

fn request_timeout(limit: Duration) -> Problem {
    Problem::new(StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request timeout")
        .detail(format!("the request body did not arrive within {} seconds", limit.as_secs()))
}

fn bad_gateway() -> Problem {
    Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway")
        .detail("the function failed to answer")
}
