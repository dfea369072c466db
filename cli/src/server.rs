//! The HTTP server in front of the local gateway: HTTP/1.1 on hyper, with
//! the limits a server facing untrusted clients needs. Headers (and the
//! wait for the next request on a kept-alive connection) must arrive within
//! a timeout, bodies within another (then 408), and connections are capped
//! per source address and in all, so that idle or trickling connections
//! cannot use up the process's sockets.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use pharmagate_shared::http::Problem;
use tokio::net::TcpListener;

use crate::gateway::{Gateway, GatewayResponse, MAX_REQUEST_BYTES};

/// Connection limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's headers, counted from the
    /// connection's start or from the previous response (so it is also the
    /// idle timeout of a kept-alive connection).
    pub header_timeout: Duration,
    /// Open connections from one source address (an IPv6 /64 counts as
    /// one); more are closed at once.
    pub per_address: usize,
    /// Open connections in all; more are closed at once.
    pub total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_timeout: Duration::from_secs(30), per_address: 256, total: 4096 }
    }
}

impl Limits {
    /// These limits with `total` below the number of files the process may
    /// open (after raising its soft limit to the hard one), leaving room for
    /// the store, logs and outgoing connections: a cap above the file limit
    /// would let connections use up every descriptor before it applied.
    pub fn within_open_file_limit(mut self) -> Limits {
        if let Some(files) = raise_open_file_limit() {
            let room = files.saturating_sub(FILES_KEPT_FOR_OTHER_USES).max(1);
            if self.total > room {
                tracing::warn!(total = self.total, room, "connection cap lowered to fit the open-file limit");
                self.total = room;
            }
        }
        self.per_address = self.per_address.min(self.total);
        self
    }
}

/// Descriptors kept for everything but client connections.
const FILES_KEPT_FOR_OTHER_USES: usize = 128;

/// Raises the soft open-file limit to the hard one; the limit now in force.
fn raise_open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    usize::try_from(limit.rlim_cur).ok()
}

/// The longest a connection may stay open. The header timeout ends idle
/// connections, but not one whose client sends requests and never reads the
/// answers (hyper then waits to write, with no timer running); this bounds
/// how long such a client holds its place.
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(600);

/// How long a shutdown waits for connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `gateway` on `listener` until `shutdown` completes; in-flight
/// requests finish first (for at most 30 s). A connection lives at most 10
/// minutes.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Mutex::new(OpenConnections::default()));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = OpenConnections::admit(&open, address_group(peer.ip()), &limits) else {
            tracing::debug!(peer = %peer.ip(), "connection refused: too many open connections");
            continue;
        };
        let gateway = gateway.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(handle(gateway, peer, req.map(Body::new)).await) }
        });
        let watched = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            match tokio::time::timeout(MAX_CONNECTION_LIFETIME, watched).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
                Err(_) => tracing::debug!("connection closed at its maximum lifetime"),
                Ok(Ok(())) => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

/// What the per-address cap counts: an IPv4 address, or an IPv6 /64 (one
/// subscriber's network: a client there can use any of its 2^64 addresses).
fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)),
        v4 => v4,
    }
}

/// Open connections per source address, and in all.
#[derive(Default)]
struct OpenConnections {
    per_address: HashMap<IpAddr, usize>,
    total: usize,
}

impl OpenConnections {
    /// A slot for a connection from `ip`, or `None` over a limit.
    fn admit(open: &Arc<Mutex<OpenConnections>>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
        let mut state = open.lock().ok()?;
        let from_ip = state.per_address.get(&ip).copied().unwrap_or(0);
        if from_ip >= limits.per_address || state.total >= limits.total {
            return None;
        }
        state.per_address.insert(ip, from_ip + 1);
        state.total += 1;
        Some(Slot { open: open.clone(), ip })
    }
}

/// A connection's place among the open ones, given back when dropped.
struct Slot {
    open: Arc<Mutex<OpenConnections>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut state) = self.open.lock() {
            state.total = state.total.saturating_sub(1);
            if let Some(n) = state.per_address.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    state.per_address.remove(&self.ip);
                }
            }
        }
    }
}

async fn handle(gateway: Arc<Gateway>, peer: SocketAddr, req: Request<Body>) -> Response<Body> {
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

fn to_http(out: GatewayResponse) -> Response<Body> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address() {
        let group = |text: &str| address_group(text.parse().unwrap()).to_string();
        assert_eq!(group("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(group("2001:db8:1:2::1"), "2001:db8:1:2::");
        assert_eq!(group("2001:db8:1:3::1"), "2001:db8:1:3::");
        assert_eq!(group("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(group("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        let limits = Limits { total: usize::MAX, ..Limits::default() }.within_open_file_limit();
        let files = raise_open_file_limit().unwrap();
        assert_eq!(limits.total, files - FILES_KEPT_FOR_OTHER_USES);
        assert_eq!(limits.per_address, 256);
    }
}
