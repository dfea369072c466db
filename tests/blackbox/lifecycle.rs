//! Process lifecycle and durability: SIGINT, restart on the same data
//! directory, and what the data directory holds at rest.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;

use crate::authz::aspirin_manufacturing;
use crate::harness::*;

const SECRET_ROUTE: &str = "Proprietary route XK-42 via nitrile hydrolysis";
const SECRET_STEP: &str = "Hydrogenate over Raney nickel at 12 bar";

fn secret_manufacturing() -> serde_json::Value {
    json!({
        "route": SECRET_ROUTE,
        "site": "Plant 7, Basel",
        "steps": [{"step": 1, "operation": SECRET_STEP, "conditions": "80 degC"}],
        "specifications": [{"test": "Assay", "limit": "99.5 %"}]
    })
}

/// Stops a server with SIGINT and checks it shuts down cleanly.
fn interrupt(server: &Server) {
    server.signal("INT");
    let (status, lines) = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "exit status after SIGINT; stdout: {lines:?}");
    assert_eq!(lines, ["pharmagate stopped"], "stdout after the listening line");
}

#[tokio::test]
async fn sigint_stops_cleanly_and_a_restart_keeps_everything() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let first = Server::restart_on(&data_dir);
    assert_eq!(
        first.startup,
        [
            "Seeded the catalog (114 products, sample manufacturing data) in this data directory."
                .to_string(),
            "These keys are shown once; keep them now:".to_string(),
            format!("admin key: {}", first.admin()),
            format!("demo customer key: {}", first.demo()),
            "Made the first token signing key.".to_string(),
            format!("pharmagate listening on {}", first.base),
        ]
    );
    let admin = first.admin().to_string();
    let demo = first.demo().to_string();
    let api = first.api();
    let dev = first.issue_key("life-dev", "developer", "paid");
    let revoked = first.issue_key("life-dev", "developer", "paid");
    first.revoke_cli(&revoked);
    let c = cas(9_500_001, 51);
    let product = json!({"name": "Durabilium", "synonyms": ["persistol"], "molecular_formula": "C4H4", "molecular_weight": 52.07, "manufacturing": secret_manufacturing()});
    assert_eq!(api.put_json(&format!("/v1/products/{c}"), &dev, &product).await.status, 201);
    let deleted = "58-08-2"; // caffeine
    assert_eq!(api.delete(&format!("/v1/products/{deleted}"), &admin).await.status, 204);
    let keys_before = api.get("/v1/keys?limit=100", &admin).await.json(200);
    let product_before = api.get(&format!("/v1/products/{c}"), &dev).await.json(200);

    interrupt(&first);
    drop(first);
    assert!(reqwest::get(format!("{}/health", api.base)).await.is_err(), "nothing listens any more");

    let second = Server::restart_on(&data_dir);
    assert!(second.admin_key.is_none() && second.demo_key.is_none(), "no reseed: {:?}", second.startup);
    assert!(
        !second.startup.iter().any(|l| l.contains("key:") || l.starts_with("Seeded")),
        "{:?}",
        second.startup
    );
    assert_eq!(
        second.startup[0],
        "Using the existing data; keys were shown at first start (issue more with `pharmagate keys issue`)."
    );
    let api = second.api();
    assert_eq!(api.get("/v1/keys?limit=100", &admin).await.json(200), keys_before, "keys persist");
    assert_eq!(api.get(&format!("/v1/products/{c}"), &dev).await.json(200), product_before);
    assert_eq!(api.get(&format!("/v1/products/{c}"), &demo).await.status, 200, "the demo key persists");
    api.get("/v1/products/50-78-2", &revoked).await.assert_unauthorized();
    api.get(&format!("/v1/products/{deleted}"), &admin).await.problem(404, "not-found");
    let mfg = api.get(&format!("/v1/products/{c}/manufacturing"), &admin).await.json(200);
    assert_eq!(mfg["manufacturing"], secret_manufacturing(), "decrypts with the same master key");
    let names = api.get("/v1/products?name=persist", &dev).await.json(200);
    assert_eq!(names["items"][0]["cas"], c.as_str());
    // Still 114 products: one created, one deleted, none reseeded.
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/products?limit=100".to_string(),
            Some(k) => format!("/v1/products?limit=100&cursor={k}"),
        };
        let page = api.get(&path, &demo).await.json(200);
        count += page["items"].as_array().unwrap().len();
        cursor = page["next_cursor"].as_str().map(String::from);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(count, 114);
    interrupt(&second);
}

#[tokio::test]
async fn data_directory_is_private_and_confidential_data_is_encrypted_at_rest() {
    if aws_backend().is_some() {
        eprintln!(
            "note: the data directory is the embedded backend's; on AWS see stored_records_hold_only_ciphertext"
        );
        return;
    }
    let server = Server::start();
    let api = server.api();
    let admin = server.admin().to_string();
    let dev = server.issue_key("rest-dev", "developer", "paid");
    let c = cas(9_500_002, 52);
    let body = json!({"name": "Secretium", "molecular_formula": "C5H5", "molecular_weight": 65.09, "manufacturing": secret_manufacturing()});
    assert_eq!(api.put_json(&format!("/v1/products/{c}"), &dev, &body).await.status, 201);

    // The API serves the confidential data to admins...
    let aspirin = api.get(&format!("/v1/products/{ASPIRIN}/manufacturing"), &admin).await.json(200);
    assert_eq!(aspirin["manufacturing"], aspirin_manufacturing());
    let secret = api.get(&format!("/v1/products/{c}/manufacturing"), &admin).await.json(200);
    assert_eq!(secret["manufacturing"], secret_manufacturing());

    // ...but no file holds it, nor any API key, in clear.
    let needles: Vec<String> = vec![
        "Illustrative 5-step route".into(),
        "Coupling reaction".into(),
        "SAMPLE DATA".into(),
        "Sample site".into(),
        "Charge reactor R-101".into(),
        SECRET_ROUTE.into(),
        SECRET_STEP.into(),
        "Plant 7, Basel".into(),
        admin.clone(),
        server.demo().to_string(),
        dev.clone(),
        admin[20..].to_string(),
        dev[20..].to_string(),
    ];
    let scan = |when: &str| {
        let files = files_under(&server.data_dir);
        let names: Vec<String> =
            files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert!(names.contains(&"master.key".to_string()), "{when}: {names:?}");
        assert!(names.contains(&"pharmagate.db".to_string()), "{when}: {names:?}");
        let mut total = 0;
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            total += bytes.len();
            for needle in &needles {
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
                assert!(!found, "{when}: {} holds {needle:?} in clear", file.display());
            }
        }
        // The scan looked at real data: the public catalog is there in clear.
        let all: Vec<u8> = files.iter().flat_map(|f| std::fs::read(f).unwrap()).collect();
        assert!(all.windows(9).any(|w| w == b"Secretium"), "{when}: public data found ({total} bytes)");
        names
    };
    let running = scan("while running");
    assert!(running.iter().any(|n| n.ends_with("-wal")), "the WAL exists while running: {running:?}");

    let dir_mode = std::fs::metadata(&server.data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "data directory mode {dir_mode:o}");
    let key_file = server.data_dir.join("master.key");
    let key_mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600, "master.key mode {key_mode:o}");
    assert_eq!(std::fs::metadata(&key_file).unwrap().len(), 32);
    // The database (and its -wal and -shm files) is owner-only too.
    for file in files_under(&server.data_dir) {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", file.display());
    }

    interrupt(&server);
    scan("after shutdown");
}
