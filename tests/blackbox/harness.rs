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
//!
//! The backend: embedded by default. With `PHARMAGATE_TEST_BACKEND=aws` (the
//! test command's second pass) every server and CLI call runs with
//! `--backend aws` against the local AWS endpoint in
//! `PHARMAGATE_TEST_AWS_ENDPOINT` (moto), each data directory getting its own
//! resource prefix (its own tables, key alias and secret), so a restart on the
//! same directory finds the same data and no two servers share any.

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

use crate::evidence;

pub const BIN: &str = env!("CARGO_BIN_EXE_pharmagate");
/// How long a start may take: seeding 114 products through moto, which
/// serves one request at a time to every server of the run, takes longer.
fn startup_timeout() -> Duration {
    Duration::from_secs(if aws_backend().is_some() { 300 } else { 30 })
}

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const HSTS: &str = "max-age=63072000; includeSubDomains";
pub const CSP: &str = "default-src 'none'; frame-ancestors 'none'";
pub const WWW_AUTHENTICATE: &str = "ApiKey realm=\"pharmagate\", header=\"x-api-key\"";
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"pharmagate\"";
pub const UNAUTHORIZED_DETAIL: &str =
    "a valid API key (x-api-key header) or OAuth access token (Authorization: Bearer) is required";
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
    /// Where the server's log (`server.log`) is, and in evidence mode its
    /// metrics and the ids of the requests sent to it.
    pub root_dir: PathBuf,
    /// Evidence mode: copy the data directory into `root_dir` when dropped
    /// (it belongs to the test and goes away with it).
    keep_data_on_drop: bool,
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
    pub env: Vec<(String, String)>,
}

impl Server {
    /// A fresh server in a new temporary directory, owned by the caller.
    pub fn start() -> Server {
        Server::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Server {
        if let Some(root) = evidence::new_server_root() {
            return Server::spawn_direct(&root.join("data"), &root, &opts, &[]);
        }
        let root = tempfile::tempdir().expect("temp dir");
        let data_dir = root.path().join("data");
        let mut server = Server::spawn_direct(&data_dir, root.path(), &opts, &[]);
        server.root = Some(root);
        server
    }

    /// Starts a server on an existing data directory (a restart). The caller
    /// keeps the directory alive.
    pub fn restart_on(data_dir: &Path) -> Server {
        if let Some(root) = evidence::new_server_root() {
            let mut server = Server::spawn_direct(data_dir, &root, &Opts::default(), &[]);
            server.keep_data_on_drop = true;
            return server;
        }
        let log_dir = data_dir.parent().expect("data dir has a parent");
        Server::spawn_direct(data_dir, log_dir, &Opts::default(), &[])
    }

    /// Like [`Server::restart_on`], with extra environment variables set
    /// after the backend's (to point one AWS service elsewhere, say).
    pub fn restart_with_env(data_dir: &Path, env: &[(String, String)]) -> Server {
        let log_dir = data_dir.parent().expect("data dir has a parent");
        Server::spawn_direct(data_dir, log_dir, &Opts::default(), env)
    }

    fn spawn_direct(data_dir: &Path, log_dir: &Path, opts: &Opts, env: &[(String, String)]) -> Server {
        let log = std::fs::File::create(log_dir.join("server.log")).expect("log file");
        let mut cmd = Command::new(BIN);
        clean_env(&mut cmd);
        cmd.envs(backend_env(data_dir));
        evidence::server_env(&mut cmd);
        cmd.envs(env.iter().chain(&opts.env).map(|(k, v)| (k, v)));
        cmd.arg("--data-dir").arg(data_dir).args(["dev", "--port", "0"]).args(&opts.extra_args);
        if !opts.extra_args.iter().any(|a| a == "--metrics-file") {
            cmd.args(evidence::server_args(log_dir));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().expect("spawn pharmagate");
        let stdout = child.stdout.take().expect("stdout");
        let pid = child.id();
        Server::wait_ready(
            child,
            stdout,
            pid,
            data_dir.to_path_buf(),
            log_dir,
            None,
            log_dir.join("server.log"),
        )
    }

    /// A server behind a watchdog that stops it when this process ends.
    fn spawn_watched() -> Server {
        let root =
            evidence::new_server_root().unwrap_or_else(|| tempfile::tempdir().expect("temp dir").keep());
        let data_dir = root.join("data");
        let log = std::fs::File::create(root.join("server.log")).expect("log file");
        // In evidence mode the directory is the evidence: kept for the check.
        let script = r#""$@" & pid=$!
echo "watchdog-pid $pid"
read _ignored
kill -TERM "$pid" 2>/dev/null
wait "$pid"
[ -n "$PG_KEEP_ROOT" ] || rm -rf "$PG_TEST_ROOT""#;
        let mut cmd = Command::new("sh");
        clean_env(&mut cmd);
        cmd.envs(backend_env(&data_dir));
        evidence::server_env(&mut cmd);
        cmd.env("PG_TEST_ROOT", &root)
            .args(["-c", script, "watchdog", BIN])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["dev", "--port", "0"])
            .args(evidence::server_args(&root));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().expect("spawn watchdog");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        Server::wait_ready(child, stdout, 0, data_dir, &root, Some(stdin), root.join("server.log"))
    }

    fn wait_ready(
        child: Child,
        stdout: std::process::ChildStdout,
        pid: u32,
        data_dir: PathBuf,
        root_dir: &Path,
        watchdog: Option<ChildStdin>,
        log: PathBuf,
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
        let deadline = Instant::now() + startup_timeout();
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
                Err(RecvTimeoutError::Disconnected) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("server exited during start-up: {startup:?}; its log:\n{log}")
                }
            }
        };
        // With the watchdog, its pid line may come after the listening line.
        while pid == 0 {
            let line = rx.recv_timeout(startup_timeout()).expect("watchdog pid line");
            if let Some(p) = line.strip_prefix("watchdog-pid ") {
                pid = p.trim().parse().expect("watchdog pid");
            } else {
                startup.push(line);
            }
        }
        assert!(base.starts_with("http://127.0.0.1:"), "listening line names a loopback URL: {base}");
        // A started server has created its AWS resources.
        BOOTSTRAPPED.lock().unwrap().push(data_dir.clone());
        let key_after =
            |prefix: &str| startup.iter().find_map(|l| l.strip_prefix(prefix).map(|k| k.trim().to_string()));
        let admin_key = key_after("admin key: ");
        let demo_key = key_after("demo customer key: ");
        for key in admin_key.iter().chain(&demo_key) {
            evidence::note_secret(key);
        }
        Server {
            base,
            pid,
            data_dir,
            root_dir: root_dir.to_path_buf(),
            keep_data_on_drop: false,
            admin_key,
            demo_key,
            startup,
            lines: Mutex::new(rx),
            child: Mutex::new(Some(child)),
            root: None,
            _watchdog: watchdog.map(Mutex::new),
        }
    }

    /// For tests that damage the audit trail on purpose: the evidence check
    /// then only scans this server's logs.
    pub fn mark_audit_tampered(&self) {
        std::fs::write(self.root_dir.join("audit-tampered"), b"").expect("marker");
    }

    pub fn admin(&self) -> &str {
        self.admin_key.as_deref().expect("this start seeded an admin key")
    }

    pub fn demo(&self) -> &str {
        self.demo_key.as_deref().expect("this start seeded a demo key")
    }

    pub fn api(&self) -> Api {
        let mut api = Api::new(&self.base);
        api.evidence = evidence::enabled().then(|| self.root_dir.clone());
        api
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
        if self.keep_data_on_drop {
            evidence::copy_dir(&self.data_dir, &self.root_dir.join("data"));
        }
        drop(self.root.take());
    }
}

/// Limits for servers of tests that are not about limits: the suite sends
/// bursts with one key from one address, which the product's defaults
/// (free: 5/s; 5 free authentication failures per address) would throttle.
/// Tests of limiting start their own servers with their own settings.
pub const SUITE_RATE_LIMITS: &str = r#"{"free": {"rate": 100000, "daily_quota": 10000000}, "paid": {"rate": 100000, "daily_quota": 10000000}}"#;
pub const SUITE_AUTH_GUARD: &str = r#"{"free_failures": 1000000}"#;

/// The environment the product reads, cleared so the host cannot change it;
/// then the suite's own limits.
fn clean_env(cmd: &mut Command) {
    for (var, _) in std::env::vars() {
        if var.starts_with("PHARMAGATE_") || var.starts_with("AWS_") || var == "RUST_LOG" {
            cmd.env_remove(var);
        }
    }
    cmd.env("PHARMAGATE_RATE_LIMITS", SUITE_RATE_LIMITS).env("PHARMAGATE_AUTH_GUARD", SUITE_AUTH_GUARD);
}

// ----------------------------------------------------------------- backend --

/// Whether this run covers the AWS backend (`PHARMAGATE_TEST_BACKEND=aws`).
/// Then the local AWS endpoint must answer: a run meant for AWS never
/// passes by quietly testing something else.
pub fn aws_backend() -> Option<&'static str> {
    static ENDPOINT: OnceLock<Option<String>> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| match std::env::var("PHARMAGATE_TEST_BACKEND").as_deref() {
            Ok("aws") => {
                let endpoint = pharmagate_shared::aws::test_endpoint("black-box suite on AWS");
                Some(endpoint.expect("PHARMAGATE_TEST_BACKEND=aws needs PHARMAGATE_TEST_AWS_ENDPOINT"))
            }
            Ok("embedded") | Err(_) => None,
            Ok(other) => panic!("PHARMAGATE_TEST_BACKEND={other}: choose embedded or aws"),
        })
        .as_deref()
}

/// The AWS resource prefix of a data directory: one per directory.
pub fn aws_prefix(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("bb-{hex}")
}

/// The backend a server of `data_dir` runs on, opened from the test as an
/// insider would (same store, vault and secret store).
pub async fn server_backend(data_dir: &Path) -> pharmagate_shared::config::Backend {
    use pharmagate_shared::aws::{self, AwsResources};
    use pharmagate_shared::config::{Backend, Settings};
    match aws_backend() {
        Some(endpoint) => {
            let sdk = aws::local_sdk_config_with(endpoint, Duration::from_secs(120)).await;
            let resources = AwsResources::with_prefix(&aws_prefix(data_dir));
            Backend::aws_with(&sdk, &resources, Settings::default(), false).await.expect("open AWS backend")
        }
        None => Backend::embedded(data_dir, Settings::default()).expect("open data dir"),
    }
}

/// What the product needs in its environment to run on this run's backend
/// for `data_dir` (nothing for the embedded backend).
pub fn backend_env(data_dir: &Path) -> Vec<(String, String)> {
    let Some(endpoint) = aws_backend() else { return Vec::new() };
    [
        ("PHARMAGATE_BACKEND", "aws".to_string()),
        ("PHARMAGATE_AWS_PREFIX", aws_prefix(data_dir)),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        // moto answers one request at a time and the suite runs servers in
        // parallel, so a call may queue for seconds; a client-side timeout
        // then retries, and moto (unlike DynamoDB) ignores the transaction's
        // idempotency token. Give calls room; the outage test sets 5 s back.
        ("PHARMAGATE_AWS_TIMEOUT_SECS", "120".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

static BOOTSTRAPPED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// On AWS, creates a data directory's resources before a CLI call when no
/// server did (`pharmagate dev` creates them itself on a local endpoint).
fn ensure_bootstrapped(data_dir: &Path) {
    if aws_backend().is_none() {
        return;
    }
    let mut done = BOOTSTRAPPED.lock().unwrap();
    if done.iter().any(|d| d == data_dir) {
        return;
    }
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd);
    cmd.envs(backend_env(data_dir)).arg("--data-dir").arg(data_dir).args(["aws", "bootstrap"]);
    let out = cmd.stdin(Stdio::null()).output().expect("run pharmagate aws bootstrap");
    assert!(out.status.success(), "aws bootstrap failed: {}", String::from_utf8_lossy(&out.stderr));
    done.push(data_dir.to_path_buf());
}

/// Runs `pharmagate --data-dir <dir> <args>` to completion.
pub fn cli(data_dir: &Path, args: &[&str]) -> Output {
    cli_env(data_dir, args, &[])
}

pub fn cli_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    ensure_bootstrapped(data_dir);
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd);
    cmd.envs(backend_env(data_dir));
    cmd.envs(env.iter().copied());
    cmd.arg("--data-dir").arg(data_dir).args(args).stdin(Stdio::null());
    let out = cmd.output().expect("run pharmagate");
    evidence::note_cli_output(&out.stdout, &out.stderr);
    out
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
    /// Evidence mode: the server root that records the request ids.
    evidence: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// How long a test waits for an answer. On the AWS backend every request
/// queues for moto, which serves one call at a time for the whole suite, so
/// a request made during others' bursts may wait its turn for a while.
fn request_timeout() -> Duration {
    Duration::from_secs(if aws_backend().is_some() { 120 } else { 30 })
}

impl Api {
    pub fn new(base: &str) -> Api {
        let client = reqwest::Client::builder().timeout(request_timeout()).build().expect("http client");
        Api { base: base.to_string(), client, evidence: None }
    }

    /// The same API reached from another loopback address (127.0.0.0/8 all
    /// lead here): another source for brute-force protection.
    pub fn via_address(&self, address: &str) -> Api {
        let client = reqwest::Client::builder()
            .timeout(request_timeout())
            .local_address(address.parse::<std::net::IpAddr>().expect("an address"))
            .build()
            .expect("http client");
        Api { base: self.base.clone(), client, evidence: self.evidence.clone() }
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
        let (client, request) = rb.build_split();
        let request = request.expect("a well-formed request");
        if self.evidence.is_some() {
            evidence::note_request_secrets(&request);
        }
        let response = client.execute(request).await.expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("response body").to_vec();
        let resp = Resp { status, headers, body };
        if let Some(root) = &self.evidence {
            evidence::note_response(root, &resp);
        }
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
        "key-limit" | "key-already-rotated" | "key-not-active" | "conflict" | "client-exists" => "Conflict",
        "validation" => "Invalid request",
        "rate-limited" | "too-many-failures" => "Too many requests",
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
        self.assert_problem(401, "unauthorized", None, UNAUTHORIZED_DETAIL);
        let all: Vec<&str> =
            self.headers.get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(all, [WWW_AUTHENTICATE, BEARER_CHALLENGE]);
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

// -------------------------------------------------------------------- OAuth --

/// `application/x-www-form-urlencoded` encoding of one component.
pub fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `Authorization: Basic` for a client, credentials form-encoded first as
/// RFC 6749 §2.3.1 requires.
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    use base64::Engine;
    let pair = format!("{}:{}", form_encode(client_id), form_encode(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// A form body from name/value pairs.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(n, v)| format!("{}={}", form_encode(n), form_encode(v))).collect::<Vec<_>>().join("&")
}

impl Api {
    /// Creates an OAuth client as `admin`; returns (client_id, secret).
    pub async fn create_client(&self, admin: &str, body: &Value) -> (String, String) {
        let created = self.post_json("/v1/clients", admin, body).await.json(201);
        let id = created["client_id"].as_str().expect("client_id").to_string();
        let secret = created["client_secret"].as_str().expect("client_secret").to_string();
        (id, secret)
    }

    /// POSTs a form to an OAuth endpoint, with optional Basic credentials.
    pub async fn post_form(&self, path: &str, basic: Option<(&str, &str)>, body: &str) -> Resp {
        let mut rb = self
            .request(Method::POST, path, ANON)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        if let Some((id, secret)) = basic {
            rb = rb.header("authorization", basic_auth(id, secret));
        }
        self.send(rb).await
    }

    /// A token by client credentials (Basic), asserting success.
    pub async fn token(&self, client_id: &str, secret: &str, scope: Option<&str>) -> String {
        let mut pairs = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            pairs.push(("scope", scope));
        }
        let resp = self.post_form("/oauth/token", Some((client_id, secret)), &form(&pairs)).await;
        let body = resp.json(200);
        body["access_token"].as_str().expect("access_token").to_string()
    }

    /// GET with `Authorization: <value>` and nothing else.
    pub async fn get_auth(&self, path: &str, authorization: &str) -> Resp {
        self.send(self.request(Method::GET, path, ANON).header("authorization", authorization)).await
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> Resp {
        self.get_auth(path, &format!("Bearer {token}")).await
    }
}

impl Resp {
    /// An RFC 6749 §5.2 error: status, `error` code, JSON, never cached.
    pub fn assert_oauth_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"), "{}", self.text());
        assert_eq!(self.header("cache-control"), Some("no-store"));
        let body: Value = serde_json::from_slice(&self.body).expect("OAuth error JSON");
        assert_eq!(body["error"], code, "{body}");
        assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
        if status == 401 {
            assert_eq!(self.header("www-authenticate"), Some("Basic realm=\"pharmagate\""));
        }
        body
    }
}

// ------------------------------------------------------------ raw storage --

/// The server's item store, opened directly as an attacker with write access
/// to the tables (but not to the key vault or secret store) would use it.
pub async fn raw_store(data_dir: &Path) -> std::sync::Arc<dyn pharmagate_shared::ports::ItemStore> {
    use pharmagate_shared::aws::{self, AwsResources, CallCounters, DynamoStore};
    match aws_backend() {
        Some(endpoint) => {
            let sdk = aws::local_sdk_config_with(endpoint, Duration::from_secs(120)).await;
            let tables = AwsResources::with_prefix(&aws_prefix(data_dir)).tables;
            std::sync::Arc::new(DynamoStore::new(&sdk, tables, CallCounters::new()))
        }
        None => {
            let db = data_dir.join(pharmagate_shared::config::DB_FILE);
            std::sync::Arc::new(
                pharmagate_shared::embedded::SqliteStore::open(&db).expect("open the database"),
            )
        }
    }
}

// ------------------------------------------------------------ fault proxy --

/// What a [`FaultProxy`] does with traffic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// Forwards every byte both ways.
    Pass,
    /// The service is gone: open connections are cut, new ones are
    /// accepted and closed at once, before any byte is answered.
    Down,
    /// Every request is answered `ThrottlingException` (HTTP 400), as AWS
    /// answers a throttled call.
    Throttle,
}

/// A TCP proxy in front of one AWS service of the local endpoint (the
/// product is pointed at it with `AWS_ENDPOINT_URL_<SERVICE>`), which a test
/// switches between passing, cutting and throttling mid-run.
pub struct FaultProxy {
    pub url: String,
    mode: std::sync::Arc<Mutex<Fault>>,
    live: std::sync::Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mode = std::sync::Arc::new(Mutex::new(Fault::Pass));
        let live = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (m, l) = (mode.clone(), live.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let fault = *m.lock().unwrap();
                let upstream = upstream.clone();
                let task = tokio::spawn(async move { serve_connection(client, fault, &upstream).await });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        FaultProxy { url, mode, live, accept }
    }

    /// Switches the mode; open connections are cut so the change applies
    /// to the very next request (the SDK keeps connections alive).
    pub fn set(&self, fault: Fault) {
        *self.mode.lock().unwrap() = fault;
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Fault::Down);
    }
}

async fn serve_connection(mut client: tokio::net::TcpStream, fault: Fault, upstream: &str) {
    match fault {
        Fault::Down => drop(client),
        Fault::Pass => {
            if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        }
        Fault::Throttle => throttle(client).await,
    }
}

/// Reads each request (head and `content-length` body) and answers it with
/// a throttling error in the JSON protocol the three services speak.
async fn throttle(mut client: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\n\
         x-amzn-errortype: ThrottlingException\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = Vec::new();
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            let mut chunk = [0u8; 4096];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + 4 + length);
        if client.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Waits out the last minute of an hour, so that what counts in hour-long
/// windows (a burst, a run of failures) stays in one.
pub async fn away_from_the_hour_boundary() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let left = 3600 - now % 3600;
    if left < 60 {
        tokio::time::sleep(std::time::Duration::from_secs(left + 1)).await;
    }
}
