//! Black-box harness: runs the real `pharmagate` binary and talks HTTP to it.
//!
//! - [`Server::start`] starts a server owned by one test (killed and its data
//!   directory removed when the value drops).
//! - [`shared_readonly`] and [`shared_mutable`] start one server per process,
//!   each shared by several tests. Statics are never dropped, so these run
//!   under a tiny `sh` watchdog that holds our end of a pipe: when the test
//!   process exits (or dies), the pipe closes and the watchdog stops the
//!   server and removes its directory.
//! - [`Api`] sends requests and checks the headers every response must carry.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pharmagate");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const HSTS: &str = "max-age=63072000; includeSubDomains";
pub const CSP: &str = "default-src 'none'; frame-ancestors 'none'";
pub const WWW_AUTHENTICATE: &str = "ApiKey realm=\"pharmagate\", header=\"x-api-key\"";
pub const GATEWAY_FORBIDDEN: &str = "your credentials do not allow this operation";

/// The catalog the server seeds at first start.
pub const SEED_TSV: &str = include_str!("../../cli/data/catalog-seed.tsv");
pub const BLZ945: &str = "953769-46-5";
pub const TOBRAMYCIN: &str = "32986-56-4";
pub const ASPIRIN: &str = "50-78-2";
pub const AMANTADINE_HCL: &str = "665-66-7";

/// Every seeded CAS number, from the seed file.
pub fn seed_cas_numbers() -> HashSet<String> {
    SEED_TSV
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

// ------------------------------------------------------------------ server --

pub struct Server {
    pub base: String,
    pub pid: u32,
    pub data_dir: PathBuf,
    /// Seeded keys, when this start seeded the data directory.
    pub admin_key: Option<String>,
    pub demo_key: Option<String>,
    /// Stdout lines up to and including the `listening` line.
    pub startup: Vec<String>,
    lines: Mutex<Receiver<String>>,
    child: Mutex<Option<Child>>,
    /// Owned servers: the temporary root (data dir and log), removed on drop.
    root: Option<tempfile::TempDir>,
    /// Shared servers: our end of the watchdog's stdin.
    _watchdog: Option<Mutex<ChildStdin>>,
}

/// Options for starting a server.
#[derive(Default, Clone)]
pub struct Opts {
    pub extra_args: Vec<String>,
}

impl Server {
    /// A fresh server in a new temporary directory, owned by the caller.
    pub fn start() -> Server {
        Server::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Server {
        let root = tempfile::tempdir().expect("temp dir");
        let data_dir = root.path().join("data");
        let mut server = Server::spawn_direct(&data_dir, root.path(), &opts);
        server.root = Some(root);
        server
    }

    /// Starts a server on an existing data directory (a restart). The caller
    /// keeps the directory alive.
    pub fn restart_on(data_dir: &Path) -> Server {
        let log_dir = data_dir.parent().expect("data dir has a parent");
        Server::spawn_direct(data_dir, log_dir, &Opts::default())
    }

    fn spawn_direct(data_dir: &Path, log_dir: &Path, opts: &Opts) -> Server {
        let log = std::fs::File::create(log_dir.join("server.log")).expect("log file");
        let mut cmd = Command::new(BIN);
        clean_env(&mut cmd);
        cmd.arg("--data-dir").arg(data_dir).args(["dev", "--port", "0"]).args(&opts.extra_args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().expect("spawn pharmagate");
        let stdout = child.stdout.take().expect("stdout");
        let pid = child.id();
        Server::wait_ready(child, stdout, pid, data_dir.to_path_buf(), None)
    }

    /// A server behind a watchdog that stops it when this process ends.
    fn spawn_watched() -> Server {
        let root = tempfile::tempdir().expect("temp dir").keep();
        let data_dir = root.join("data");
        let log = std::fs::File::create(root.join("server.log")).expect("log file");
        let script = r#""$@" & pid=$!
echo "watchdog-pid $pid"
read _ignored
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rm -rf "$PG_TEST_ROOT""#;
        let mut cmd = Command::new("sh");
        clean_env(&mut cmd);
        cmd.env("PG_TEST_ROOT", &root)
            .args(["-c", script, "watchdog", BIN])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["dev", "--port", "0"]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().expect("spawn watchdog");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        Server::wait_ready(child, stdout, 0, data_dir, Some(stdin))
    }

    fn wait_ready(
        child: Child,
        stdout: std::process::ChildStdout,
        pid: u32,
        data_dir: PathBuf,
        watchdog: Option<ChildStdin>,
    ) -> Server {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut startup = Vec::new();
        let mut pid = pid;
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("watchdog-pid ") {
                        pid = p.trim().parse().expect("watchdog pid");
                        continue;
                    }
                    startup.push(line.clone());
                    if let Some(addr) = line.strip_prefix("pharmagate listening on ") {
                        break addr.trim().to_string();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("server not ready in time; output so far: {startup:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("server exited during start-up: {startup:?}"),
            }
        };
        // With the watchdog, its pid line may come after the listening line.
        while pid == 0 {
            let line = rx.recv_timeout(STARTUP_TIMEOUT).expect("watchdog pid line");
            if let Some(p) = line.strip_prefix("watchdog-pid ") {
                pid = p.trim().parse().expect("watchdog pid");
            } else {
                startup.push(line);
            }
        }
        assert!(base.starts_with("http://127.0.0.1:"), "listening line names a loopback URL: {base}");
        let key_after =
            |prefix: &str| startup.iter().find_map(|l| l.strip_prefix(prefix).map(|k| k.trim().to_string()));
        let admin_key = key_after("admin key: ");
        let demo_key = key_after("demo customer key: ");
        Server {
            base,
            pid,
            data_dir,
            admin_key,
            demo_key,
            startup,
            lines: Mutex::new(rx),
            child: Mutex::new(Some(child)),
            root: None,
            _watchdog: watchdog.map(Mutex::new),
        }
    }

    pub fn admin(&self) -> &str {
        self.admin_key.as_deref().expect("this start seeded an admin key")
    }

    pub fn demo(&self) -> &str {
        self.demo_key.as_deref().expect("this start seeded a demo key")
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }

    /// Runs `pharmagate --data-dir <this server's dir> <args>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.data_dir, args)
    }

    /// Issues a key with the CLI and returns it.
    pub fn issue_key(&self, customer: &str, role: &str, tier: &str) -> String {
        issue_key(&self.data_dir, customer, role, tier)
    }

    pub fn grant(&self, customer: &str, cas: &str) {
        let out = self.cli(&["entitlements", "grant", "--customer", customer, "--cas", cas]);
        assert!(out.status.success(), "entitlements grant failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn revoke_cli(&self, key: &str) {
        let out = self.cli(&["keys", "revoke", key_id(key)]);
        assert!(out.status.success(), "keys revoke failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Sends a signal to the server process with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }

    /// Waits for a directly started server to exit; its status and every
    /// stdout line after start-up.
    pub fn wait_exit(&self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            let mut guard = self.child.lock().unwrap();
            let child = guard.as_mut().expect("child present");
            if let Some(status) = child.try_wait().expect("try_wait") {
                guard.take();
                break status;
            }
            drop(guard);
            assert!(Instant::now() < deadline, "server did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let rx = self.lines.lock().unwrap();
        let mut lines = Vec::new();
        // The reader thread ends at EOF; collect what it read.
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        (status, lines)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self._watchdog.is_some() {
            return; // the watchdog stops it
        }
        if let Ok(mut guard) = self.child.lock()
            && let Some(mut child) = guard.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.root.take());
    }
}

/// The environment the product reads, cleared so the host cannot change it.
fn clean_env(cmd: &mut Command) {
    for var in [
        "PHARMAGATE_DATA_DIR",
        "PHARMAGATE_PORT",
        "PHARMAGATE_ENV_NAME",
        "PHARMAGATE_MAX_KEYS_PER_CUSTOMER",
        "PHARMAGATE_BACKEND",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
}

/// Runs `pharmagate --data-dir <dir> <args>` to completion.
pub fn cli(data_dir: &Path, args: &[&str]) -> Output {
    cli_env(data_dir, args, &[])
}

pub fn cli_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd);
    cmd.envs(env.iter().copied());
    cmd.arg("--data-dir").arg(data_dir).args(args).stdin(Stdio::null());
    cmd.output().expect("run pharmagate")
}

pub fn issue_key(data_dir: &Path, customer: &str, role: &str, tier: &str) -> String {
    issue_key_env(data_dir, customer, role, tier, &[])
}

pub fn issue_key_env(
    data_dir: &Path,
    customer: &str,
    role: &str,
    tier: &str,
    env: &[(&str, &str)],
) -> String {
    let out =
        cli_env(data_dir, &["keys", "issue", "--customer", customer, "--role", role, "--tier", tier], env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keys issue failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "keys issue prints the key alone: {stdout:?}");
    let key = lines[0].to_string();
    assert!(key.starts_with("pg_"), "{key}");
    key
}

/// The public id inside a key `pg_<env>_<id>_<secret>`.
pub fn key_id(key: &str) -> &str {
    key.split('_').nth(2).expect("key has an id part")
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

// ----------------------------------------------------------- shared servers --

static READONLY: OnceLock<Server> = OnceLock::new();
static MUTABLE: OnceLock<Server> = OnceLock::new();

/// A seeded server whose catalog nobody changes (reads, routing, auth
/// failures that need no state). Tests may issue keys here, never products.
pub fn shared_readonly() -> &'static Server {
    READONLY.get_or_init(Server::spawn_watched)
}

/// A seeded server for tests that write: each test uses its own customers
/// and its own CAS numbers, so they can run concurrently.
pub fn shared_mutable() -> &'static Server {
    MUTABLE.get_or_init(Server::spawn_watched)
}

// --------------------------------------------------------------------- HTTP --

/// A request's credentials: `None` sends no `x-api-key` header at all.
#[derive(Clone, Copy)]
pub struct Key<'a>(pub Option<&'a str>);

pub const ANON: Key<'static> = Key(None);

impl<'a> From<&'a str> for Key<'a> {
    fn from(k: &'a str) -> Self {
        Key(Some(k))
    }
}

impl<'a> From<&'a String> for Key<'a> {
    fn from(k: &'a String) -> Self {
        Key(Some(k.as_str()))
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Api {
    pub fn new(base: &str) -> Api {
        let client =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        Api { base: base.to_string(), client }
    }

    /// A request builder for `path` (which starts with `/`).
    pub fn request<'a>(
        &self,
        method: Method,
        path: &str,
        key: impl Into<Key<'a>>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key.into().0 {
            rb = rb.header("x-api-key", k);
        }
        rb
    }

    /// Sends and reads the whole response; checks the security headers.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let response = rb.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("response body").to_vec();
        let resp = Resp { status, headers, body };
        resp.assert_security_headers();
        resp
    }

    pub async fn get<'a>(&self, path: &str, key: impl Into<Key<'a>>) -> Resp {
        self.send(self.request(Method::GET, path, key)).await
    }

    pub async fn delete<'a>(&self, path: &str, key: impl Into<Key<'a>>) -> Resp {
        self.send(self.request(Method::DELETE, path, key)).await
    }

    pub async fn put_json<'a>(&self, path: &str, key: impl Into<Key<'a>>, body: &Value) -> Resp {
        self.send(self.request(Method::PUT, path, key).json(body)).await
    }

    pub async fn post_json<'a>(&self, path: &str, key: impl Into<Key<'a>>, body: &Value) -> Resp {
        self.send(self.request(Method::POST, path, key).json(body)).await
    }

    /// POST without a body.
    pub async fn post_empty<'a>(&self, path: &str, key: impl Into<Key<'a>>) -> Resp {
        self.send(self.request(Method::POST, path, key)).await
    }

    pub async fn method<'a>(&self, method: &str, path: &str, key: impl Into<Key<'a>>) -> Resp {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        self.send(self.request(m, path, key)).await
    }
}

/// The title the API gives each problem type.
fn title_of(slug: &str) -> &'static str {
    match slug {
        "unauthorized" => "Unauthorized",
        "forbidden" => "Forbidden",
        "not-found" => "Not found",
        "method-not-allowed" => "Method not allowed",
        "payload-too-large" => "Payload too large",
        "unsupported-media-type" => "Unsupported media type",
        "key-limit" | "key-already-rotated" | "key-not-active" | "conflict" => "Conflict",
        "validation" => "Invalid request",
        "malformed-body" => "Bad request",
        "invalid-cas" => "Invalid CAS number",
        other => panic!("no known title for problem slug {other}"),
    }
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    fn assert_security_headers(&self) {
        let expect = [
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            ("strict-transport-security", HSTS),
            ("content-security-policy", CSP),
            ("referrer-policy", "no-referrer"),
        ];
        for (name, value) in expect {
            let all: Vec<&str> = self.headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
            assert_eq!(all, [value], "header {name} on a {} response", self.status);
        }
    }

    /// Asserts the status and returns the JSON body (`application/json`).
    pub fn json(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "status; body: {}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/json"), "content type");
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// Asserts an RFC 9457 problem with this status and slug and returns it.
    /// Checks the content type, `type`, `title`, `status`, that `detail` is a
    /// string, that no other members appear, and that `request_id` equals the
    /// `x-amzn-requestid` header.
    pub fn problem(&self, status: u16, slug: &str) -> Value {
        let body = self.problem_maybe_without_id(status, slug);
        let id = body.get("request_id").and_then(Value::as_str);
        assert!(id.is_some_and(|id| id.len() == 36), "request_id: {body}");
        assert_eq!(id, self.header("x-amzn-requestid"), "request_id is the gateway's: {body}");
        body
    }

    /// Like [`Resp::problem`], but `request_id` may be absent.
    pub fn problem_maybe_without_id(&self, status: u16, slug: &str) -> Value {
        assert_eq!(self.status, status, "status; body: {}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some(PROBLEM_JSON), "problem content type");
        let body: Value = serde_json::from_slice(&self.body).expect("problem JSON");
        assert_eq!(body["type"], format!("urn:pharmagate:problem:{slug}"), "{body}");
        assert_eq!(body["title"], title_of(slug), "{body}");
        assert_eq!(body["status"], status, "{body}");
        assert!(body["detail"].is_string(), "detail: {body}");
        let allowed = ["type", "title", "status", "detail", "field", "request_id"];
        for name in body.as_object().unwrap().keys() {
            assert!(allowed.contains(&name.as_str()), "unexpected problem member {name}: {body}");
        }
        body
    }

    /// A problem with an exact detail and field (`None`: no field member).
    pub fn assert_problem(&self, status: u16, slug: &str, field: Option<&str>, detail: &str) -> Value {
        let body = self.problem(status, slug);
        assert_eq!(body.get("field").and_then(Value::as_str), field, "field: {body}");
        assert_eq!(body["detail"], detail, "detail: {body}");
        body
    }

    /// The problem body without its `request_id`, for comparing problems.
    pub fn problem_without_id(&self) -> Value {
        let mut body: Value = serde_json::from_slice(&self.body).expect("problem JSON");
        assert!(body.get("request_id").and_then(Value::as_str).is_some_and(|s| !s.is_empty()), "{body}");
        body.as_object_mut().unwrap().remove("request_id");
        body
    }

    /// 401, the same body whatever the cause, with its `WWW-Authenticate`.
    pub fn assert_unauthorized(&self) {
        self.assert_problem(401, "unauthorized", None, "a valid API key is required in the x-api-key header");
        let all: Vec<&str> =
            self.headers.get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(all, [WWW_AUTHENTICATE]);
    }

    /// 403 refused by the gateway's policy evaluation.
    pub fn assert_gateway_forbidden(&self) {
        self.assert_problem(403, "forbidden", None, GATEWAY_FORBIDDEN);
    }
}

// -------------------------------------------------------------- test data --

/// A valid CAS number `<first>-<second>-<check>` (check digit computed).
pub fn cas(first: u32, second: u32) -> String {
    let body = format!("{first}{second:02}");
    let sum: u32 = body.bytes().rev().enumerate().map(|(i, b)| (i as u32 + 1) * u32::from(b - b'0')).sum();
    format!("{first}-{second:02}-{}", sum % 10)
}

/// The same CAS number with a wrong check digit.
pub fn bad_check_digit(cas: &str) -> String {
    let (head, check) = cas.rsplit_once('-').unwrap();
    let d: u32 = check.parse().unwrap();
    format!("{head}-{}", (d + 1) % 10)
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC-32 (IEEE), as the key checksum uses.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// The 6-character base62 checksum of a key body (documented key format).
pub fn key_checksum(body: &str) -> String {
    let mut n = u64::from(crc32(body.as_bytes()));
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

/// A well-formed key with a valid checksum for `id`, with a secret nobody issued.
pub fn forge_key(env: &str, id: &str) -> String {
    let secret: String = (0..32).map(|i| BASE62[(i * 7 + 3) % 62] as char).collect();
    let body = format!("pg_{env}_{id}_{secret}");
    format!("{body}{}", key_checksum(&body))
}
