//! The whole black-box suite as evidence: no secret in any log line, every
//! request audited exactly once, every chain intact, every metric line
//! valid EMF.
//!
//! `the_whole_suite_…` runs this test binary again, every test but itself,
//! with `PHARMAGATE_EVIDENCE_DIR` set. In that run the harness keeps each
//! server's directory (`data/`, `server.log`, `metrics.jsonl`, and
//! `requests.txt`: the request id of every response the suite read), runs
//! servers at `RUST_LOG=trace` with a metrics file, notes every secret the
//! suite handles in `secrets.txt` (API keys shown or sent, client secrets,
//! access tokens, credentials in headers and forms, manufacturing text sent
//! or read) and keeps the admin CLI's stderr in `cli.log`. Then the check
//! reads all of it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use pharmagate_shared::embedded::SqliteStore;
use pharmagate_shared::metrics::validate_emf;
use pharmagate_shared::repo::audit::{AuditFilter, AuditRepo, Decision};
use serde_json::Value;

use crate::harness::{BIN, Resp, files_under};

pub const EVIDENCE_VAR: &str = "PHARMAGATE_EVIDENCE_DIR";
/// Only secrets at least this long are noted: shorter test values ("x",
/// "garbage") would match ordinary words.
const MIN_SECRET_LEN: usize = 12;

fn dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os(EVIDENCE_VAR).map(PathBuf::from)).as_ref()
}

pub fn enabled() -> bool {
    dir().is_some()
}

/// A fresh directory for one server, kept after the run.
pub fn new_server_root() -> Option<PathBuf> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let root = dir()?.join("servers").join(NEXT.fetch_add(1, Ordering::SeqCst).to_string());
    std::fs::create_dir_all(&root).expect("evidence server root");
    Some(root)
}

/// Evidence mode: log everything down to TRACE, keep the directory.
pub fn server_env(cmd: &mut Command) {
    if enabled() {
        cmd.env("RUST_LOG", "trace").env("PG_KEEP_ROOT", "1");
    }
}

/// Evidence mode: metric lines to the server's root.
pub fn server_args(root: &Path) -> Vec<OsString> {
    if enabled() {
        vec!["--metrics-file".into(), root.join("metrics.jsonl").into_os_string()]
    } else {
        vec![]
    }
}

fn append(path: &Path, text: &str) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("evidence file");
    file.write_all(text.as_bytes()).expect("evidence write");
}

pub fn note_secret(text: &str) {
    if let Some(dir) = dir()
        && text.len() >= MIN_SECRET_LEN
        && !text.contains('\n')
    {
        append(&dir.join("secrets.txt"), &format!("{text}\n"));
    }
}

/// Credentials and confidential text a request carries.
pub fn note_request_secrets(request: &reqwest::Request) {
    for value in request.headers().get_all("x-api-key") {
        note_secret(value.to_str().unwrap_or_default());
    }
    for value in request.headers().get_all("authorization") {
        let text = value.to_str().unwrap_or_default();
        note_secret(text);
        match text.split_once(' ') {
            Some(("Bearer", token)) => note_secret(token),
            Some(("Basic", encoded)) => note_basic(encoded),
            _ => {}
        }
    }
    let Some(body) = request.body().and_then(|b| b.as_bytes()) else { return };
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Value>(&text) {
        Ok(json) => note_json(&json, false),
        Err(_) => note_form(&text),
    }
}

fn note_basic(encoded: &str) {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return };
    if let Some((_, secret)) = String::from_utf8_lossy(&bytes).split_once(':') {
        note_secret(secret);
        note_secret(&form_decode(secret));
    }
}

fn form_decode(text: &str) -> String {
    pharmagate_shared::routes::percent_decode(&text.replace('+', " ")).unwrap_or_default()
}

fn note_form(text: &str) {
    for pair in text.split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && matches!(name, "client_secret" | "token")
        {
            note_secret(&form_decode(value));
        }
    }
}

/// Secrets in a JSON document: keys, client secrets, tokens, and every
/// string of a manufacturing record.
fn note_json(value: &Value, confidential: bool) {
    match value {
        Value::String(text) if confidential => note_secret(text),
        Value::Object(map) => {
            for (name, member) in map {
                let secret = matches!(name.as_str(), "key" | "client_secret" | "access_token" | "token");
                note_json(member, confidential || secret || name == "manufacturing");
            }
        }
        Value::Array(items) => items.iter().for_each(|v| note_json(v, confidential)),
        _ => {}
    }
}

/// The response's secrets, and its request id for the audit check.
pub fn note_response(root: &Path, resp: &Resp) {
    if let Ok(json) = serde_json::from_slice::<Value>(&resp.body) {
        note_json(&json, false);
    }
    if let Some(id) = resp.headers.get("x-amzn-requestid").and_then(|v| v.to_str().ok()) {
        append(&root.join("requests.txt"), &format!("{id}\n"));
    }
}

/// The admin CLI prints keys and client secrets on stdout by design (shown
/// once); its stderr is a log like any other.
pub fn note_cli_output(stdout: &[u8], stderr: &[u8]) {
    let Some(dir) = dir() else { return };
    for word in String::from_utf8_lossy(stdout).split_whitespace() {
        if word.starts_with("pg_") || word.starts_with("pgcs_") {
            note_secret(word);
        }
    }
    append(&dir.join("cli.log"), &String::from_utf8_lossy(stderr));
}

pub fn copy_dir(from: &Path, to: &Path) {
    for file in files_under(from) {
        let target = to.join(file.strip_prefix(from).expect("under the source"));
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("copy dir");
        std::fs::copy(&file, &target).expect("copy file");
    }
    std::fs::write(to.join("..").join("data-copied"), b"").expect("marker");
}

// ------------------------------------------------------------------ check --

/// Finds any of many strings in a text: every secret is at least
/// `MIN_SECRET_LEN` bytes, so each text position is looked up by its next
/// `MIN_SECRET_LEN` bytes.
struct Scanner<'a> {
    by_prefix: HashMap<&'a [u8], Vec<&'a str>>,
}

impl<'a> Scanner<'a> {
    fn new(secrets: &'a [String]) -> Self {
        let mut by_prefix: HashMap<&[u8], Vec<&str>> = HashMap::new();
        for s in secrets {
            by_prefix.entry(&s.as_bytes()[..MIN_SECRET_LEN]).or_default().push(s);
        }
        Scanner { by_prefix }
    }

    fn find(&self, text: &str) -> Vec<&'a str> {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        for i in 0..bytes.len().saturating_sub(MIN_SECRET_LEN - 1) {
            if let Some(candidates) = self.by_prefix.get(&bytes[i..i + MIN_SECRET_LEN]) {
                found.extend(candidates.iter().filter(|s| bytes[i..].starts_with(s.as_bytes())));
            }
        }
        found
    }
}

/// Credential-shaped text, noted or not: a whole API key, a client secret,
/// a JWT (three base64url parts, the first two JSON objects).
fn credential_shapes(text: &str) -> Vec<String> {
    let b62 = |s: &str| s.bytes().all(|c| c.is_ascii_alphanumeric());
    let b64url =
        |s: &str| s.len() >= 10 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    let mut found = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "_-.".contains(c))) {
        let parts: Vec<&str> = word.split('_').collect();
        let api_key = parts.len() == 4
            && parts[0] == "pg"
            && parts[2].len() == 12
            && parts[3].len() == 38
            && b62(parts[3]);
        let client_secret = word.len() == 48 && word.starts_with("pgcs_") && b62(&word[5..]);
        let jwt_parts: Vec<&str> = word.split('.').collect();
        let jwt = jwt_parts.len() == 3 && word.starts_with("eyJ") && jwt_parts.iter().all(|p| b64url(p));
        if api_key || client_secret || jwt {
            found.push(word.to_string());
        }
    }
    found
}

struct Figures {
    servers: usize,
    log_files: usize,
    log_lines: usize,
    requests: usize,
    records: usize,
    emf_lines: usize,
}

#[test]
fn the_whole_suite_logs_no_secret_audits_every_request_once_and_keeps_its_chains() {
    if crate::harness::aws_backend().is_some() {
        // The same code runs on both backends; re-running the whole suite on
        // the one-request-at-a-time local AWS server would double CI time.
        eprintln!("evidence: checked on the embedded pass of the test command");
        return;
    }
    let evidence = tempfile::tempdir().expect("evidence dir");
    let exe = std::env::current_exe().expect("this test binary");
    let out = Command::new(exe)
        .args(["--skip", "evidence::"])
        .env(EVIDENCE_VAR, evidence.path())
        .output()
        .expect("run the suite again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = stdout.lines().rev().take(40).collect();
    assert!(
        out.status.success(),
        "the suite failed in evidence mode: {tail:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = stdout.lines().find_map(|l| l.strip_prefix("test result: ok. ")).unwrap_or_default();
    let passed: usize = passed.split(' ').next().unwrap_or_default().parse().unwrap_or(0);
    assert!(passed >= 60, "the evidence run passed only {passed} tests");

    let secrets = secrets(evidence.path());
    let mut figures =
        Figures { servers: 0, log_files: 0, log_lines: 0, requests: 0, records: 0, emf_lines: 0 };
    scan_logs(evidence.path(), &secrets, &mut figures);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for root in server_roots(evidence.path()) {
        figures.servers += 1;
        rt.block_on(check_server(&root, &mut figures));
    }
    assert!(
        figures.servers >= 15 && figures.requests >= 1000,
        "too little evidence: {} servers, {} requests",
        figures.servers,
        figures.requests
    );
    eprintln!(
        "evidence: {} tests, {} servers, {} secrets, {} log lines in {} files scanned, {} requests, {} audit records, {} EMF lines",
        passed,
        figures.servers,
        secrets.len(),
        figures.log_lines,
        figures.log_files,
        figures.requests,
        figures.records,
        figures.emf_lines
    );
}

/// The secrets the suite noted, deduplicated, with a floor per kind so that
/// a broken collection cannot pass for a clean log.
fn secrets(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("secrets.txt")).expect("secrets noted");
    let mut secrets: Vec<String> = text.lines().map(String::from).collect();
    secrets.sort();
    secrets.dedup();
    let count = |p: fn(&&String) -> bool| secrets.iter().filter(p).count();
    let keys = count(|s| s.starts_with("pg_"));
    let client_secrets = count(|s| s.starts_with("pgcs_"));
    let tokens = count(|s| s.starts_with("eyJ"));
    let manufacturing = count(|s| s.contains(' ') && !s.starts_with("Bearer") && !s.starts_with("Basic"));
    assert!(
        keys >= 60 && client_secrets >= 10 && tokens >= 30 && manufacturing >= 15,
        "too few secrets noted: {keys} keys, {client_secrets} client secrets, {tokens} tokens, {manufacturing} texts"
    );
    secrets
}

/// Every log line of every server and of the admin CLI, and every metric line.
fn scan_logs(dir: &Path, secrets: &[String], figures: &mut Figures) {
    let scanner = Scanner::new(secrets);
    let logs = files_under(dir).into_iter().filter(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        matches!(name, "server.log" | "cli.log" | "metrics.jsonl")
    });
    let mut leaks = Vec::new();
    for path in logs {
        let text = std::fs::read_to_string(&path).expect("a log file");
        figures.log_files += 1;
        figures.log_lines += text.lines().count();
        for leak in scanner.find(&text).into_iter().map(String::from).chain(credential_shapes(&text)) {
            leaks.push(format!("{}: {leak}", path.display()));
        }
    }
    assert!(leaks.is_empty(), "secrets in logs: {leaks:#?}");
}

fn server_roots(dir: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir(dir.join("servers"))
        .expect("server roots")
        .map(|e| e.expect("entry").path())
        .collect();
    roots.sort();
    roots
}

/// One server: each request it answered has exactly one audit record, its
/// chains verify with the real command, its metric lines are valid EMF and
/// account for every record.
async fn check_server(root: &Path, figures: &mut Figures) {
    if root.join("audit-tampered").exists() {
        return; // its test damaged the trail on purpose, and checks verify says so
    }
    let requests: Vec<String> = std::fs::read_to_string(root.join("requests.txt"))
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default();
    figures.requests += requests.len();
    let data = root.join("data");
    let store = SqliteStore::open(&data.join("pharmagate.db")).expect("the server's database");
    let repo = AuditRepo::new(std::sync::Arc::new(store), 365 * 86_400);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let filter = AuditFilter {
        principal: None,
        customer: None,
        from_ms: now_ms - 3 * 86_400_000,
        to_ms: now_ms + 86_400_000,
    };
    let mut per_request: HashMap<String, usize> = HashMap::new();
    let mut records = 0;
    let mut after = None;
    loop {
        let (page, next) = repo.list(&filter, after, 100).await.expect("list the audit trail");
        for r in page.iter().filter(|r| r.record.decision != Decision::Suspended) {
            records += 1;
            *per_request.entry(r.record.request_id.clone()).or_default() += 1;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    figures.records += records;
    let twice: Vec<_> = per_request.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{}: requests audited more than once: {twice:?}", root.display());
    let missing: Vec<&String> = requests.iter().filter(|id| !per_request.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{}: requests without an audit record: {missing:?}", root.display());

    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["audit", "verify"])
        .output()
        .expect("audit verify");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.starts_with("audit trail intact: "), "{}: {said}", root.display());

    let Ok(metrics) = std::fs::read_to_string(root.join("metrics.jsonl")) else { return };
    let mut request_lines = 0;
    let mut authorizer_allows = 0;
    for line in metrics.lines() {
        let json: Value = serde_json::from_str(line).expect("a JSON metric line");
        validate_emf(&json).unwrap_or_else(|e| panic!("{}: not EMF ({e}): {line}", root.display()));
        figures.emf_lines += 1;
        if json.get("Requests").is_some() {
            request_lines += 1;
            authorizer_allows +=
                usize::from(json["Function"] == "authorizer" && json["StatusClass"] == "2xx");
        }
    }
    // Two processes shared a restarted server's data: its records are theirs together.
    if !root.join("data-copied").exists() {
        assert_eq!(
            request_lines,
            records + authorizer_allows,
            "{}: one metric line per answer",
            root.display()
        );
    }
}

#[test]
fn the_scanners_find_what_they_look_for() {
    let secrets = vec!["pgcs_0123456789abcdef".to_string(), "Charge reactor R-101 with".to_string()];
    let scanner = Scanner::new(&secrets);
    let log = "INFO request reason=ok\nWARN Charge reactor R-101 with x\nend pgcs_0123456789abcdef";
    assert_eq!(scanner.find(log), ["Charge reactor R-101 with", "pgcs_0123456789abcdef"]);
    assert!(scanner.find("pgcs_0123456789abcde").is_empty());
    let key = format!("pg_dev_abcdefghijkl_{}", "A".repeat(38));
    let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0xx.c2lnbmF0dXJlc2ln";
    let text = format!("x-api-key: {key} token={jwt} id=abcdefghijkl pg_dev_ok");
    assert_eq!(credential_shapes(&text), [key, jwt.to_string()]);
}
