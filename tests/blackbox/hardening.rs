//! Faults found by attacking a running server, each kept as a test: forged
//! gateway headers, repeated keys against the authorizer cache, a stage named
//! like a path segment, odd numbers and bodies, the admin CLI's input, and a
//! busy port at first start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use serde_json::json;

use crate::harness::*;

/// Sends raw HTTP/1.1 (headers a client library would refuse to send) and
/// returns the status code.
fn raw_status(base: &str, request: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap_or_else(|| panic!("no status in {response:?}"));
    status.parse().unwrap()
}

#[tokio::test]
async fn forged_host_and_forwarding_headers_are_replaced_by_the_gateway() {
    let s = shared_readonly();
    for header in
        ["Host: bad host", "Host: a:b:c", "Host: [", "X-Forwarded-Proto: ht tp", "X-Forwarded-Port: x"]
    {
        let with_key = format!(
            "GET /v1/products/50-78-2 HTTP/1.1\r\n{header}\r\nx-api-key: {}\r\nConnection: close\r\n\r\n",
            s.demo()
        );
        let extra_host = if header.starts_with("Host") { "" } else { "Host: localhost\r\n" };
        let request = with_key.replacen("\r\n", &format!("\r\n{extra_host}"), 1);
        assert_eq!(raw_status(&s.base, &request), 200, "{header}");
    }
}

#[tokio::test]
async fn two_keys_are_refused_even_when_the_first_is_cached() {
    let server = Server::start_with(Opts {
        extra_args: vec!["--authorizer-cache-ttl".into(), "300".into()],
        ..Opts::default()
    });
    let api = server.api();
    let demo = server.demo().to_string();
    assert_eq!(api.get("/v1/products/50-78-2", demo.as_str()).await.status, 200);
    let client = reqwest::Client::new();
    for second in ["garbage", demo.as_str()] {
        let r = client
            .get(format!("{}/v1/products/50-78-2", server.base))
            .header("x-api-key", &demo)
            .header("x-api-key", second)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "second key {second:?}");
    }
}

#[tokio::test]
async fn a_stage_named_v1_keeps_both_url_forms_working() {
    let server =
        Server::start_with(Opts { extra_args: vec!["--stage".into(), "v1".into()], ..Opts::default() });
    let api = server.api();
    for path in ["/v1/products/50-78-2", "/v1/v1/products/50-78-2"] {
        let body = api.get(path, server.demo()).await.json(200);
        assert_eq!(body["cas"], "50-78-2", "{path}");
    }
}

#[tokio::test]
async fn limits_are_plain_digits_and_bodies_are_json_objects() {
    let s = shared_readonly();
    let api = s.api();
    for limit in ["%2B5", "+5", "5.0", "0x5", "%205"] {
        let r = api.get(&format!("/v1/products?limit={limit}"), s.demo()).await;
        r.assert_problem(400, "validation", Some("limit"), "must be an integer from 1 to 100");
    }
    let array = json!([null, "Seq form product", [], "H2O", 18.01, null, null, null, null]);
    let r = api.put_json("/v1/products/7732-18-5", s.admin(), &array).await;
    r.assert_problem(400, "malformed-body", None, "the body must be a JSON object");
}

#[test]
fn the_admin_cli_validates_labels_like_the_api() {
    let dir = tempfile::tempdir().unwrap();
    for label in ["a\u{7}b", &"x".repeat(101), "   "] {
        let out = cli(dir.path(), &["keys", "issue", "--customer", "acme", "--label", label]);
        assert_eq!(out.status.code(), Some(1), "{label:?}");
        assert!(out.stdout.is_empty(), "no key printed for {label:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--label: "), "{label:?}");
    }
}

#[test]
fn a_busy_port_fails_before_seeding_so_no_shown_once_key_is_lost() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN).arg("--data-dir").arg(&data).args(["dev", "--port", &port]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("key:"), "no keys printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("choose another with --port"), "{stderr}");
    // The next start on a free port seeds and shows the keys.
    drop(busy);
    let server = Server::restart_on(&data);
    assert!(server.admin_key.is_some() && server.demo_key.is_some());
}

#[test]
fn a_body_that_never_arrives_gets_408_instead_of_holding_the_connection() {
    let server =
        Server::start_with(Opts { extra_args: vec!["--body-timeout".into(), "1".into()], ..Opts::default() });
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let head = format!(
        "PUT /v1/products/50-78-2 HTTP/1.1\r\nHost: localhost\r\nx-api-key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        server.admin()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    let response = String::from_utf8_lossy(&buf[..n]);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(response.contains("the request body did not arrive within 1 seconds"), "{response}");
    assert!(response.to_lowercase().contains("x-amzn-requestid"), "{response}");
}

/// Reads until the server closes the connection (or 10 s pass); what it
/// sent and how long it took.
fn read_until_closed(stream: &mut TcpStream) -> (String, std::time::Duration) {
    let started = std::time::Instant::now();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection was still open after {:?}: {e}", started.elapsed()),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), started.elapsed())
}

/// A client that opens a connection and sends nothing, trickles its
/// headers, or keeps an idle connection after a response, is cut off after
/// the header timeout: such connections cannot pile up until the server
/// runs out of sockets.
#[test]
fn idle_and_trickling_connections_are_closed_after_the_header_timeout() {
    let server = Server::start_with(Opts {
        extra_args: vec!["--header-timeout".into(), "2".into()],
        ..Opts::default()
    });
    let addr = server.base.trim_start_matches("http://").to_string();
    let within = |took: std::time::Duration| {
        assert!(
            took >= std::time::Duration::from_millis(1500) && took < std::time::Duration::from_secs(6),
            "{took:?}"
        );
    };
    // Nothing sent.
    let mut silent = TcpStream::connect(&addr).unwrap();
    let (got, took) = read_until_closed(&mut silent);
    assert_eq!(got, "");
    within(took);
    // Headers started, never finished; a line every 500 ms does not help.
    let mut trickle = TcpStream::connect(&addr).unwrap();
    let started = std::time::Instant::now();
    trickle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    let mut closed_after = None;
    for n in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if trickle.write_all(format!("x-pad-{n}: y\r\n").as_bytes()).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let (got, _) = read_until_closed(&mut trickle);
    assert!(!got.contains("200 OK"), "{got}");
    let took = closed_after.unwrap_or_else(|| started.elapsed());
    assert!(took < std::time::Duration::from_secs(6), "the trickle went on for {took:?}");
    // One full request is answered; the kept-alive connection then idles out.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let (got, took) = read_until_closed(&mut idle);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    within(took);
}

/// Opens a connection from `local` (a loopback address) to the server.
async fn connect_from(local: &str, server: &Server) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server.base.trim_start_matches("http://").parse().unwrap()).await.unwrap();
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Whether the server closed `stream` within two seconds (without a byte).
fn closed_at_once(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(_) => false,
    }
}

/// One source address cannot hold more than its share of connections; other
/// addresses are still served, and a closed connection frees its place.
#[tokio::test]
async fn connections_are_capped_per_source_address() {
    let server = Server::start_with(Opts {
        extra_args: vec!["--max-connections-per-address".into(), "3".into()],
        ..Opts::default()
    });
    let hog = "127.0.0.95";
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(hog, &server).await);
    }
    // The three are open (none is closed at once) …
    for stream in &mut held {
        assert!(!closed_at_once(stream), "one of the first three was closed");
    }
    // … and a fourth from the same address is closed without an answer.
    let mut fourth = connect_from(hog, &server).await;
    assert!(closed_at_once(&mut fourth), "a fourth connection stayed open");
    // Another address is served.
    assert_eq!(server.api().via_address("127.0.0.96").get("/health", ANON).await.status, 200);
    // Closing one frees its place: the hog address is served again.
    held.pop();
    // (The server sees the close a moment later: try until it has.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut probe = connect_from(hog, &server).await;
        let _ = probe.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let (got, _) = read_until_closed(&mut probe);
        if got.starts_with("HTTP/1.1 200") {
            break;
        }
        assert_eq!(got, "", "refused connections get no bytes");
        assert!(std::time::Instant::now() < deadline, "the closed connection's place was never freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
