//! `pharmagate catalog import` against a running server's data directory.

use std::io::{BufRead, BufReader};

use serde_json::json;

use crate::harness::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/pubchem-identifiers.tsv.gz");

/// The fixture's header and its first `n` data lines.
fn fixture_head(n: usize) -> (String, Vec<String>) {
    let file = std::fs::File::open(FIXTURE).expect("fixture");
    let mut lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    let header = lines.next().unwrap().unwrap();
    let rows = lines.take(n).map(|l| l.unwrap()).collect();
    (header, rows)
}

#[tokio::test]
async fn import_reports_rejected_lines_and_is_idempotent() {
    let server = Server::start();
    let api = server.api();
    let admin = server.admin().to_string();
    let (header, rows) = fixture_head(200);
    assert_eq!(header, "cas\tmolecular_formula\tmolecular_weight\tinchikey\tcommon_name");
    assert_eq!(rows.len(), 200);
    // One fixture row is also a seeded product (melatonin), with fewer fields.
    let melatonin = "73-31-4";
    assert_eq!(rows.iter().filter(|r| r.starts_with(&format!("{melatonin}\t"))).count(), 1);
    let seeded = seed_cas_numbers();
    let overlap = rows.iter().filter(|r| seeded.contains(r.split('\t').next().unwrap())).count();
    assert_eq!(overlap, 1);

    let first_cas = rows[0].split('\t').next().unwrap().to_string();
    let mut text = format!("{header}\n{}\n", rows.join("\n"));
    // Lines 202 onwards: bad rows, and a blank line that still counts.
    text.push_str("50-78-3\tC9H8O4\t180.16\tBSYNRYMUTXBXSQ-UHFFFAOYSA-N\tbad check digit\n");
    text.push('\n');
    text.push_str("only\ttwo\n");
    text.push_str("64-17-5\tC2H6O\theavy\t\tethanol\n");
    text.push_str(&format!("{}\n", rows[0]));
    text.push_str("7732-18-5\th2o\t18.015\t\twater\n");
    text.push_str("7440-44-0\tC\t12.011\tnot-a-key\tcarbon\n");
    let file = server.data_dir.parent().unwrap().join("import.tsv");
    std::fs::write(&file, text).unwrap();
    let shown = file.display().to_string();

    let expected_rejections = vec![
        "line 202: cas: CAS number 50-78-3 fails its check digit: expected 2, found 3".to_string(),
        "line 204: expected 5 tab-separated fields, found 2".to_string(),
        "line 205: molecular_weight: not a number".to_string(),
        format!("line 206: cas: {first_cas} duplicates line 2"),
        "line 207: molecular_formula: must be a molecular formula such as C9H8O4".to_string(),
        "line 208: inchikey: must be a standard InChIKey such as BSYNRYMUTXBXSQ-UHFFFAOYSA-N".to_string(),
    ];
    let run = || {
        let out = server.cli(&["catalog", "import", &shown]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let rejected: Vec<String> =
            stderr.lines().filter(|l| l.starts_with("line ")).map(String::from).collect();
        (out.status, stdout, rejected)
    };

    let (status, stdout, rejected) = run();
    assert_eq!(stdout, format!("imported {shown}: 199 created, 1 updated, 0 unchanged, 6 rejected\n"));
    assert_eq!(rejected, expected_rejections);
    assert_eq!(status.code(), Some(1), "rejections make the exit status non-zero");

    let (status, stdout, rejected) = run();
    assert_eq!(stdout, format!("imported {shown}: 0 created, 0 updated, 200 unchanged, 6 rejected\n"));
    assert_eq!(rejected, expected_rejections);
    assert_eq!(status.code(), Some(1));

    // The running server serves the imported products at once.
    let first = api.get("/v1/products/2715-68-6", server.demo()).await.json(200);
    assert_eq!(
        first,
        json!({
            "cas": "2715-68-6",
            "name": "9-ethyladenine",
            "synonyms": [],
            "molecular_formula": "C7H9N5",
            "molecular_weight": 163.17986,
            "inchikey": "MUIPLRMGAXZWSQ-UHFFFAOYSA-N"
        })
    );
    let search = api.get("/v1/products?name=tartronic", server.demo()).await.json(200);
    assert_eq!(
        search["items"],
        json!([{"cas": "80-69-3", "name": "tartronic acid", "molecular_formula": "C3H4O5", "molecular_weight": 120.06086}])
    );
    let by_formula = api.get("/v1/products?formula=C7H6O4", server.demo()).await.json(200);
    let found: Vec<&str> =
        by_formula["items"].as_array().unwrap().iter().map(|i| i["cas"].as_str().unwrap()).collect();
    assert!(found.contains(&"303-38-8") && found.contains(&"99-50-3"), "{by_formula}");
    // Every valid row is there, exactly once, next to the seed.
    for row in &rows {
        let cas = row.split('\t').next().unwrap();
        let r = api.get(&format!("/v1/products?cas={cas}"), server.demo()).await.json(200);
        assert_eq!(r["items"].as_array().unwrap().len(), 1, "{cas}");
    }
    let mut total = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/products?limit=100".to_string(),
            Some(c) => format!("/v1/products?limit=100&cursor={c}"),
        };
        let page = api.get(&path, &admin).await.json(200);
        total += page["items"].as_array().unwrap().len();
        cursor = page["next_cursor"].as_str().map(String::from);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(total, 114 + 199);
    // Rejected rows were not imported.
    api.get("/v1/products/64-17-5", &admin).await.problem(404, "not-found");
    api.get("/v1/products/7732-18-5", &admin).await.problem(404, "not-found");
    // The import replaced melatonin's public record but kept its confidential one.
    let mel = api.get(&format!("/v1/products/{melatonin}"), &admin).await.json(200);
    assert_eq!(mel["inchikey"], "DRLFMBDRBRZALE-UHFFFAOYSA-N");
    assert!(mel.get("smiles").is_none(), "{mel}");
    let mfg = api.get(&format!("/v1/products/{melatonin}/manufacturing"), &admin).await.json(200);
    assert_eq!(mfg["manufacturing"]["route"], "Illustrative 5-step route to melatonin (C13H16N2O2)");
}
