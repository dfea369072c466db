//! The audit trail, metrics and anomaly signals seen from outside: the
//! record each kind of request gets (and from which hop), exactly one per
//! request under concurrent load, `pharmagate audit verify` naming the first
//! break after tampering, EMF metric lines, and a CAS scan signalled and its
//! key suspended.

use std::collections::HashMap;
use std::sync::Arc;

use pharmagate_shared::metrics::validate_emf;
use pharmagate_shared::ports::{Condition, ItemStore, Table};
use pharmagate_shared::repo::audit::AuditRepo;
use serde_json::{Value, json};

use crate::harness::*;

/// Every audit record of the server, by request id, read as an admin
/// through `GET /v1/audit` (page by page); the ids of those reads too.
async fn audit_trail(api: &Api, admin: &str, query: &str) -> (HashMap<String, Vec<Value>>, Vec<String>) {
    let mut records: HashMap<String, Vec<Value>> = HashMap::new();
    let mut reads = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/audit?limit=100{query}"),
            Some(c) => format!("/v1/audit?limit=100{query}&cursor={c}"),
        };
        let r = api.get(&path, admin).await;
        reads.push(r.header("x-amzn-requestid").unwrap().to_string());
        let page = r.json(200);
        for record in page["items"].as_array().unwrap() {
            let id = record["request_id"].as_str().unwrap().to_string();
            records.entry(id).or_default().push(record.clone());
        }
        cursor = page["next_cursor"].as_str().map(String::from);
        if cursor.is_none() {
            return (records, reads);
        }
    }
}

fn id_of(r: &Resp) -> String {
    r.header("x-amzn-requestid").expect("a request id").to_string()
}

/// (function, principal, customer, role, method, route, cas, decision, reason, status)
type Expected =
    (&'static str, Value, Value, Value, &'static str, Value, Value, &'static str, &'static str, u16);

#[tokio::test]
async fn each_request_gets_one_record_from_the_hop_that_answered_it() {
    let s = Server::start();
    let api = s.api();
    let (admin, demo) = (s.admin().to_string(), s.demo().to_string());
    let partner = s.issue_key("aud-partner", "partner", "paid");
    let (demo_id, partner_id, admin_id) = (key_id(&demo), key_id(&partner), key_id(&admin));
    let missing = cas(9_600_001, 11);
    let mut expected: Vec<(String, Expected)> = Vec::new();
    let n = Value::Null;
    let demo_who = (json!(demo_id), json!("demo-customer"), json!("customer"));
    let partner_who = (json!(partner_id), json!("aud-partner"), json!("partner"));

    let r = api.get("/health", ANON).await;
    expected.push((
        id_of(&r),
        (
            "catalog",
            n.clone(),
            n.clone(),
            n.clone(),
            "GET",
            json!("/health"),
            n.clone(),
            "allowed",
            "ok",
            200,
        ),
    ));
    let r = api.get(&format!("/v1/products/{BLZ945}"), &demo).await;
    let (p, c, role) = demo_who.clone();
    expected.push((
        id_of(&r),
        ("catalog", p, c, role, "GET", json!("/v1/products/{cas}"), json!(BLZ945), "allowed", "ok", 200),
    ));
    let r = api.get("/v1/products?cas=0050-78-2", &demo).await;
    let (p, c, role) = demo_who.clone();
    expected.push((
        id_of(&r),
        ("catalog", p, c, role, "GET", json!("/v1/products"), json!(ASPIRIN), "allowed", "ok", 200),
    ));
    let r = api.get(&format!("/v1/products/{BLZ945}/manufacturing"), &demo).await;
    r.assert_gateway_forbidden();
    let (p, c, role) = demo_who.clone();
    let route = json!("/v1/products/{cas}/manufacturing");
    expected.push((
        id_of(&r),
        ("authorizer", p, c, role, "GET", route.clone(), json!(BLZ945), "denied", "policy", 403),
    ));
    let r = api.get(&format!("/v1/products/{ASPIRIN}/manufacturing"), &partner).await;
    let (p, c, role) = partner_who.clone();
    expected
        .push((id_of(&r), ("catalog", p, c, role, "GET", route, json!(ASPIRIN), "denied", "forbidden", 403)));
    let r = api.get(&format!("/v1/products/{missing}"), &demo).await;
    let (p, c, role) = demo_who.clone();
    expected.push((
        id_of(&r),
        (
            "catalog",
            p,
            c,
            role,
            "GET",
            json!("/v1/products/{cas}"),
            json!(missing),
            "rejected",
            "not-found",
            404,
        ),
    ));
    let r = api.get("/v1/nothing", &demo).await;
    expected.push((
        id_of(&r),
        (
            "gateway",
            n.clone(),
            n.clone(),
            n.clone(),
            "GET",
            n.clone(),
            n.clone(),
            "rejected",
            "not-found",
            404,
        ),
    ));
    let r = api.method("PATCH", "/v1/products/50-78-2", &demo).await;
    expected.push((
        id_of(&r),
        (
            "gateway",
            n.clone(),
            n.clone(),
            n.clone(),
            "PATCH",
            n.clone(),
            n.clone(),
            "rejected",
            "method-not-allowed",
            405,
        ),
    ));
    let r = api.get("/v1/products", ANON).await;
    expected.push((
        id_of(&r),
        (
            "gateway",
            n.clone(),
            n.clone(),
            n.clone(),
            "GET",
            json!("/v1/products"),
            n.clone(),
            "denied",
            "missing_credentials",
            401,
        ),
    ));
    let r = api.get("/v1/products", "garbage").await;
    expected.push((
        id_of(&r),
        (
            "authorizer",
            n.clone(),
            n.clone(),
            n.clone(),
            "GET",
            json!("/v1/products"),
            n.clone(),
            "denied",
            "malformed_length",
            401,
        ),
    ));
    let r = api.get("/v1/products", forge_key("dev", "abcdefghijkl").as_str()).await;
    expected.push((
        id_of(&r),
        (
            "authorizer",
            n.clone(),
            n.clone(),
            n.clone(),
            "GET",
            json!("/v1/products"),
            n.clone(),
            "denied",
            "unknown_key",
            401,
        ),
    ));
    let r = api.get("/v1/audit", &demo).await;
    let (p, c, role) = demo_who.clone();
    expected.push((
        id_of(&r),
        ("authorizer", p, c, role, "GET", json!("/v1/audit"), n.clone(), "denied", "policy", 403),
    ));
    let body = json!({"name": "audited client", "customer": "aud-client", "scopes": ["catalog:read"]});
    let r = api.post_json("/v1/clients", &admin, &body).await;
    let client = r.json(201);
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let secret = client["client_secret"].as_str().unwrap().to_string();
    let who = (json!(admin_id), json!("pharmagate"), json!("admin"));
    expected.push((
        id_of(&r),
        ("oauth", who.0, who.1, who.2, "POST", json!("/v1/clients"), n.clone(), "allowed", "ok", 201),
    ));
    let grant = form(&[("grant_type", "client_credentials")]);
    let r = api.post_form("/oauth/token", Some((&client_id, &secret)), &grant).await;
    assert_eq!(r.status, 200);
    let client_who = (json!(client_id), json!("aud-client"), json!("partner"));
    expected.push((
        id_of(&r),
        (
            "oauth",
            client_who.0,
            client_who.1,
            client_who.2,
            "POST",
            json!("/oauth/token"),
            n.clone(),
            "allowed",
            "ok",
            200,
        ),
    ));
    let r = api.post_form("/oauth/token", Some((&client_id, "pgcs_wrong")), &grant).await;
    expected.push((
        id_of(&r),
        (
            "oauth",
            n.clone(),
            n.clone(),
            n.clone(),
            "POST",
            json!("/oauth/token"),
            n.clone(),
            "denied",
            "invalid_client",
            401,
        ),
    ));

    let (trail, _) = audit_trail(&api, &admin, "").await;
    for (id, want) in &expected {
        let records = trail.get(id).unwrap_or_else(|| panic!("no record of {want:?}"));
        assert_eq!(records.len(), 1, "{want:?}: {records:#?}");
        let r = &records[0];
        let fields = [
            "function",
            "principal",
            "customer",
            "role",
            "method",
            "route",
            "cas",
            "decision",
            "reason",
            "status",
        ];
        let got: Vec<&Value> = fields.iter().map(|f| &r[*f]).collect();
        let (function, principal, customer, role, method, route, cas, decision, reason, status) =
            want.clone();
        let want = [
            json!(function),
            principal,
            customer,
            role,
            json!(method),
            route,
            cas,
            json!(decision),
            json!(reason),
            json!(status),
        ];
        assert_eq!(got, want.iter().collect::<Vec<_>>(), "{r}");
        assert_eq!(r["source_ip"], "127.0.0.1");
        assert!(r["stream"].as_str().unwrap().starts_with(&format!("{function}-")), "{r}");
        assert!(r["hash"].as_str().is_some_and(|h| h.len() == 64), "{r}");
        assert!(r["latency_ms"].as_f64().is_some_and(|l| l >= 0.0), "{r}");
        assert!(r["time"].as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z')), "{r}");
    }
    let out = s.cli(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// 240 requests at once (60 on the local AWS server), of every kind: the audit trail holds exactly one
/// record per request id, and nothing else but the admin's own reads of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_count_equals_request_count_under_concurrent_load() {
    let s = Server::start();
    let api = s.api();
    let demo = s.demo().to_string();
    let partner = s.issue_key("load-partner", "partner", "paid");
    let kinds: Vec<(&str, String, Option<String>)> = vec![
        ("GET", format!("/v1/products/{BLZ945}"), Some(demo.clone())),
        ("GET", format!("/v1/products/{}", cas(9_600_002, 22)), Some(demo.clone())),
        ("GET", format!("/v1/products/{ASPIRIN}/manufacturing"), Some(demo.clone())),
        ("GET", format!("/v1/products/{ASPIRIN}/manufacturing"), Some(partner.clone())),
        ("GET", "/v1/products?name=tob".into(), None),
        ("GET", "/v1/products?name=tob".into(), Some("garbage".into())),
        ("PATCH", "/v1/products".into(), Some(demo.clone())),
        ("GET", "/health".into(), None),
        ("GET", "/v1/nope".into(), None),
        ("GET", "/v1/keys".into(), Some(partner.clone())),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    // The local AWS server answers one call at a time: a smaller load there.
    let load = if aws_backend().is_some() { 60 } else { 240 };
    for i in 0..load {
        let (method, path, key) = kinds[i % kinds.len()].clone();
        let api = api.clone();
        tasks.spawn(async move { id_of(&api.method(method, &path, Key(key.as_deref())).await) });
    }
    let mut sent = Vec::new();
    while let Some(id) = tasks.join_next().await {
        sent.push(id.unwrap());
    }
    // A listing's pages share the range of its first page: one reaching into
    // the future shows the earlier pages' own records on the later pages.
    let hour = chrono::Duration::hours(1);
    let (from, to) = (chrono::Utc::now() - hour, chrono::Utc::now() + hour);
    let range = format!("&from={}&to={}", from.format("%Y-%m-%dT%H:%M:%SZ"), to.format("%Y-%m-%dT%H:%M:%SZ"));
    let (trail, reads) = audit_trail(&api, s.admin(), &range).await;
    // Each read of the trail is audited after it is answered: all but the
    // last are in the listing.
    let mut want: Vec<String> = sent.iter().chain(&reads[..reads.len() - 1]).cloned().collect();
    want.sort();
    let mut got: Vec<String> =
        trail.iter().flat_map(|(id, records)| vec![id.clone(); records.len()]).collect();
    got.sort();
    assert_eq!(got.len(), load + reads.len() - 1);
    assert_eq!(got, want);
}

/// An edited record and a deleted one are each named by `audit verify`,
/// which exits 1; restoring the record makes the trail whole again.
#[tokio::test]
async fn verify_names_the_first_break_after_tampering() {
    let s = Server::start();
    let api = s.api();
    for _ in 0..5 {
        assert_eq!(api.get(&format!("/v1/products/{BLZ945}"), s.demo()).await.status, 200);
    }
    let verify = || {
        let out = s.cli(&["audit", "verify"]);
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, said) = verify();
    assert_eq!(code, Some(0), "{said}");
    assert!(said.starts_with("audit trail intact: "), "{said}");

    s.mark_audit_tampered();
    let store: Arc<dyn ItemStore> = raw_store(&s.data_dir).await;
    let streams = AuditRepo::new(store.clone(), 86_400).streams().await.unwrap();
    let stream = streams.iter().find(|s| s.starts_with("catalog-")).expect("the catalog's stream").clone();
    let pk = format!("STREAM#{stream}");
    let original = store.get(Table::Audit, &pk, "SEQ#000000000002").await.unwrap().unwrap();
    let mut edited = original.clone();
    edited.attrs["record"]["decision"] = json!("denied");
    store.put(Table::Audit, edited, Condition::Exists).await.unwrap();
    let (code, said) = verify();
    assert_eq!(code, Some(1), "{said}");
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "chain broken: stream {stream} at seq 2: record was altered: its content does not match its hash"
        )
    );
    assert!(lines[1].starts_with(&format!("audit trail BROKEN in 1 of {} streams", streams.len())), "{said}");

    store.put(Table::Audit, original, Condition::Exists).await.unwrap();
    assert_eq!(verify().0, Some(0));
    store.delete(Table::Audit, &pk, "SEQ#000000000003", Condition::Exists).await.unwrap();
    let (code, said) = verify();
    assert_eq!(code, Some(1), "{said}");
    assert_eq!(
        said.lines().next().unwrap(),
        format!("chain broken: stream {stream} at seq 4: record 3 is missing")
    );
}

/// `--metrics-file`: one valid EMF line per answer and hop, with exact
/// members, low-cardinality dimensions; none on the console.
#[tokio::test]
async fn metrics_are_valid_emf_lines_in_the_metrics_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.jsonl");
    let s = Server::start_with(Opts {
        extra_args: vec!["--metrics-file".into(), file.display().to_string()],
        ..Opts::default()
    });
    let api = s.api();
    let ok = id_of(&api.get(&format!("/v1/products/{BLZ945}"), s.demo()).await);
    let unknown = id_of(&api.get("/v1/products", forge_key("dev", "abcdefghijkl").as_str()).await);
    let missing = id_of(&api.get(&format!("/v1/products/{}", cas(9_600_003, 33)), s.demo()).await);
    let lines: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for line in &lines {
        validate_emf(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Pharmagate");
    }
    let of = |id: &str| -> Vec<&Value> { lines.iter().filter(|l| l["request_id"] == id).collect() };
    let summary = |l: &Value| {
        (l["Function"].clone(), l["Route"].clone(), l["StatusClass"].clone(), l["status"].clone())
    };
    let route = json!("GET /v1/products/{cas}");
    assert_eq!(
        of(&ok).into_iter().map(summary).collect::<Vec<_>>(),
        [
            (json!("authorizer"), route.clone(), json!("2xx"), json!(200)),
            (json!("catalog"), route.clone(), json!("2xx"), json!(200))
        ]
    );
    let served = of(&ok)[1];
    for (name, value) in
        [("Requests", 1), ("Throttles", 0), ("StoreErrors", 0), ("VaultErrors", 0), ("AuditWriteFailures", 0)]
    {
        assert_eq!(served[name], value, "{name}: {served}");
    }
    assert_eq!(
        served["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function", "Route", "StatusClass"], ["Function"]])
    );
    let refused = of(&unknown);
    assert_eq!(refused.len(), 1);
    assert_eq!(
        summary(refused[0]),
        (json!("authorizer"), json!("GET /v1/products"), json!("4xx"), json!(401))
    );
    assert_eq!((&refused[0]["Reason"], &refused[0]["AuthFailures"]), (&json!("unknown_key"), &json!(1)));
    let not_found = of(&missing);
    assert_eq!(summary(not_found[1]), (json!("catalog"), route, json!("4xx"), json!(404)));
    assert!(not_found[1].get("Reason").is_none());
    let console = std::fs::read_to_string(s.root_dir.join("server.log")).unwrap();
    assert!(!console.contains("\"_aws\""), "metric lines stay off the console");
}

/// A key asking for one missing CAS number after another is a scan: the
/// fifth is signalled (log line, metric), the eighth suspends the key, and
/// the suspension is in the audit trail.
#[tokio::test]
async fn a_cas_scan_is_signalled_and_past_the_hard_threshold_the_key_is_suspended() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.jsonl");
    let env = [("PHARMAGATE_ANOMALY_SCAN_THRESHOLD", "5"), ("PHARMAGATE_ANOMALY_SUSPEND_THRESHOLD", "8")];
    let s = Server::start_with(Opts {
        extra_args: vec!["--metrics-file".into(), file.display().to_string()],
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    });
    let api = s.api();
    let scanner = s.issue_key("scanner", "customer", "free");
    let mut last = String::new();
    for n in 0..8 {
        let r = api.get(&format!("/v1/products/{}", cas(9_700_000 + n, 11)), &scanner).await;
        r.problem(404, "not-found");
        last = id_of(&r);
    }
    api.get(&format!("/v1/products/{BLZ945}"), &scanner).await.assert_unauthorized();

    let log = std::fs::read_to_string(s.root_dir.join("server.log")).unwrap();
    let id = key_id(&scanner);
    let signalled: Vec<&str> = log.lines().filter(|l| l.contains(" anomaly ") && l.contains(id)).collect();
    assert_eq!(signalled.len(), 2, "{log}");
    assert!(
        signalled[0].contains("kind=\"cas_scan\"") && signalled[0].contains("observed=5"),
        "{}",
        signalled[0]
    );
    assert!(
        signalled[1].contains("kind=\"suspend\"") && signalled[1].contains("observed=8"),
        "{}",
        signalled[1]
    );
    assert!(log.contains(&format!("key suspended: revoked after anomalous use key_id={id}")), "{log}");

    let metrics = std::fs::read_to_string(&file).unwrap();
    let kinds: Vec<String> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["Anomalies"] == 1)
        .map(|l| l["Kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["cas_scan", "suspend"]);

    let (trail, _) = audit_trail(&api, s.admin(), &format!("&principal={id}")).await;
    let suspension = &trail[&format!("suspend:{last}")];
    assert_eq!(suspension.len(), 1);
    assert_eq!(
        (&suspension[0]["decision"], &suspension[0]["reason"]),
        (&json!("suspended"), &json!("suspend:8"))
    );
    assert_eq!(trail.len(), 9, "eight 404s and the suspension; the 401 has no principal");
    let listed = String::from_utf8(s.cli(&["keys", "list", "--customer", "scanner"]).stdout).unwrap();
    assert!(listed.trim_end().ends_with("Revoked"), "{listed}");
}
