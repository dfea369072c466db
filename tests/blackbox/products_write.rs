//! Catalog maintenance: PUT and DELETE of products, body validation and
//! limits, and the search index following every change.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

fn names(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["cas"].as_str().unwrap().to_string()).collect()
}

fn manufacturing(route: &str) -> Value {
    json!({
        "route": route,
        "site": "Test site Q",
        "steps": [
            {"step": 1, "operation": "Dissolve in xylol", "conditions": "25 degC"},
            {"step": 2, "operation": "Distil"}
        ],
        "specifications": [{"test": "Purity", "limit": ">= 99 %"}]
    })
}

#[tokio::test]
async fn put_creates_then_replaces_and_search_follows() {
    let s = shared_mutable();
    let api = s.api();
    let dev = s.issue_key("pw-developer", "developer", "paid");
    let c = cas(9_400_001, 41);
    let path = format!("/v1/products/{c}");
    api.get(&path, &dev).await.problem(404, "not-found");

    let first = json!({
        "name": "Zorbulonic acid",
        "synonyms": ["glimmerquat", "Zorbulonic acid", "glimmerquat"],
        "molecular_formula": "C7H5NO9",
        "molecular_weight": 247.12,
        "smiles": "C1=CC=CC=C1",
        "inchikey": "ABCDEFGHIJKLMN-OPQRSTUVWX-Y",
        "iupac_name": "zorbulonic acid",
        "manufacturing": manufacturing("Confidential route ALPHA-7")
    });
    let r = api.put_json(&path, &dev, &first).await;
    let created = r.json(201);
    assert_eq!(r.header("location"), Some(path.as_str()));
    let want = json!({
        "cas": c,
        "name": "Zorbulonic acid",
        "synonyms": ["glimmerquat"],
        "molecular_formula": "C7H5NO9",
        "molecular_weight": 247.12,
        "smiles": "C1=CC=CC=C1",
        "inchikey": "ABCDEFGHIJKLMN-OPQRSTUVWX-Y",
        "iupac_name": "zorbulonic acid"
    });
    assert_eq!(created, want, "synonyms equal to the name or repeated are dropped");
    assert_eq!(api.get(&path, &dev).await.json(200), want);
    assert_eq!(api.get(&path, s.demo()).await.json(200), want, "readable by every role");

    // The confidential record went in with it; admins read it.
    let mfg = api.get(&format!("{path}/manufacturing"), s.admin()).await.json(200);
    assert_eq!(mfg, json!({"cas": c, "manufacturing": manufacturing("Confidential route ALPHA-7")}));

    assert_eq!(names(&api.get("/v1/products?name=glimmer", &dev).await.json(200)), [c.as_str()]);
    assert_eq!(names(&api.get("/v1/products?name=zorbul", &dev).await.json(200)), [c.as_str()]);
    assert_eq!(names(&api.get("/v1/products?formula=C7H5NO9", &dev).await.json(200)), [c.as_str()]);

    // Replace: new synonym and formula, no manufacturing member (kept as is);
    // the leading-zero spelling of the path names the same product.
    let second = json!({
        "cas": format!("00{c}"),
        "name": "Zorbulonic acid",
        "synonyms": ["quixotane"],
        "molecular_formula": "C7H5NO10",
        "molecular_weight": 263.12
    });
    let r = api.put_json(&format!("/v1/products/00{c}"), &dev, &second).await;
    let replaced = r.json(200);
    assert_eq!(r.header("location"), Some(path.as_str()), "Location uses the canonical CAS number");
    let want = json!({
        "cas": c,
        "name": "Zorbulonic acid",
        "synonyms": ["quixotane"],
        "molecular_formula": "C7H5NO10",
        "molecular_weight": 263.12
    });
    assert_eq!(replaced, want);
    assert_eq!(api.get(&path, &dev).await.json(200), want);
    assert_eq!(names(&api.get("/v1/products?name=quixo", &dev).await.json(200)), [c.as_str()]);
    assert_eq!(names(&api.get("/v1/products?name=glimmer", &dev).await.json(200)), Vec::<String>::new());
    assert_eq!(names(&api.get("/v1/products?formula=C7H5NO9", &dev).await.json(200)), Vec::<String>::new());
    assert_eq!(names(&api.get("/v1/products?formula=C7H5NO10", &dev).await.json(200)), [c.as_str()]);
    assert_eq!(names(&api.get("/v1/products?name=zorbul", &dev).await.json(200)), [c.as_str()], "once");
    let mfg = api.get(&format!("{path}/manufacturing"), s.admin()).await.json(200);
    assert_eq!(mfg["manufacturing"]["route"], "Confidential route ALPHA-7", "kept when absent from the body");

    // A new manufacturing record replaces the old one.
    let mut third = second.clone();
    third["manufacturing"] = manufacturing("Confidential route BETA-9");
    assert_eq!(api.put_json(&path, &dev, &third).await.status, 200);
    let mfg = api.get(&format!("{path}/manufacturing"), s.admin()).await.json(200);
    assert_eq!(mfg["manufacturing"], manufacturing("Confidential route BETA-9"));
    // The developer who wrote it still needs an entitlement to read it.
    api.get(&format!("{path}/manufacturing"), &dev).await.problem(403, "forbidden");
    s.grant("pw-developer", &c);
    assert_eq!(api.get(&format!("{path}/manufacturing"), &dev).await.json(200), mfg);

    // A product without a confidential record.
    let bare = cas(9_400_002, 42);
    let body = json!({"name": "Bare product", "molecular_formula": "C", "molecular_weight": 12.011});
    assert_eq!(api.put_json(&format!("/v1/products/{bare}"), &dev, &body).await.status, 201);
    let r = api.get(&format!("/v1/products/{bare}/manufacturing"), s.admin()).await;
    r.assert_problem(404, "not-found", None, &format!("no manufacturing record for {bare}"));
}

#[tokio::test]
async fn delete_is_for_admins_and_removes_everything() {
    let s = shared_mutable();
    let api = s.api();
    let dev = s.issue_key("pw-deleter", "developer", "paid");
    let c = cas(9_400_003, 43);
    let path = format!("/v1/products/{c}");
    let body = json!({
        "name": "Deletable thing",
        "synonyms": ["vanishium"],
        "molecular_formula": "C3H3",
        "molecular_weight": 39.06,
        "manufacturing": manufacturing("Route to be deleted")
    });
    assert_eq!(api.put_json(&path, &dev, &body).await.status, 201);

    api.delete(&path, &dev).await.assert_gateway_forbidden();
    assert_eq!(api.get(&path, &dev).await.status, 200);

    let r = api.delete(&format!("/v1/products/000{c}"), s.admin()).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), None);
    let gone = format!("no product with CAS number {c}");
    api.get(&path, s.admin()).await.assert_problem(404, "not-found", None, &gone);
    api.delete(&path, s.admin()).await.assert_problem(404, "not-found", None, &gone);
    let r = api.get(&format!("{path}/manufacturing"), s.admin()).await;
    r.assert_problem(404, "not-found", None, &format!("no manufacturing record for {c}"));
    assert_eq!(names(&api.get("/v1/products?name=vanish", &dev).await.json(200)), Vec::<String>::new());
    assert_eq!(names(&api.get("/v1/products?formula=C3H3", &dev).await.json(200)), Vec::<String>::new());
    assert_eq!(api.get(&format!("/v1/products?cas={c}"), &dev).await.json(200)["items"], json!([]));

    // Created again from scratch: 201, without the old confidential record.
    let again = json!({"name": "Deletable thing", "molecular_formula": "C3H3", "molecular_weight": 39.06});
    assert_eq!(api.put_json(&path, &dev, &again).await.status, 201);
    api.get(&format!("{path}/manufacturing"), s.admin()).await.problem(404, "not-found");

    // Invalid CAS numbers on DELETE as on PUT.
    let r = api.delete(&format!("/v1/products/{}", bad_check_digit(&c)), s.admin()).await;
    r.problem(400, "invalid-cas");
}

#[tokio::test]
async fn put_validates_path_type_size_and_body() {
    let s = shared_mutable();
    let api = s.api();
    let dev = s.issue_key("pw-validator", "developer", "paid");
    let c = cas(9_400_004, 44);
    let path = format!("/v1/products/{c}");
    let good = json!({"name": "Valid thing", "molecular_formula": "C2H6O", "molecular_weight": 46.07});
    let raw = |ct: Option<&str>, body: Vec<u8>| {
        let mut rb = api.request(Method::PUT, &path, &dev).body(body);
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        rb
    };
    let good_bytes = serde_json::to_vec(&good).unwrap();

    // Content type.
    let unsupported = "send the body as application/json";
    for ct in [Some("text/plain"), None, Some("application/json; charset=latin1"), Some("application/jsonx")]
    {
        let r = api.send(raw(ct, good_bytes.clone())).await;
        r.assert_problem(415, "unsupported-media-type", None, unsupported);
    }
    // Malformed bodies.
    for (body, start) in [
        (b"{bad".to_vec(), "invalid JSON body: "),
        (b"[]".to_vec(), "the body must be a JSON object"),
        (br#"{"name": "x"}"#.to_vec(), "invalid JSON body: missing field"),
        (
            br#"{"name":"x","molecular_formula":"C","molecular_weight":1,"price":3}"#.to_vec(),
            "invalid JSON body: unknown field `price`",
        ),
        (vec![0xff, 0xfe, 0x00], "body is not UTF-8"),
        // A value of the wrong type is named by its JSON kind, never echoed.
        (
            br#"{"name":"x","molecular_formula":"C","molecular_weight":1,"manufacturing":"SECRET-TEXT"}"#
                .to_vec(),
            "invalid JSON body: invalid type: a string where an object is expected (line 1, column 86)",
        ),
    ] {
        let r = api.send(raw(Some("application/json"), body)).await;
        let p = r.problem(400, "malformed-body");
        assert!(p["detail"].as_str().unwrap().starts_with(start), "{p}");
        assert!(!p.to_string().contains("SECRET") && !p.to_string().contains("struct "), "{p}");
        assert!(p.get("field").is_none());
    }
    let r = api.send(raw(Some("application/json"), Vec::new())).await;
    r.assert_problem(400, "malformed-body", None, "a JSON request body is required");

    // Size: 64 KiB is the function's limit, 10 MiB the gateway's.
    let sized = |n: usize| {
        let prefix = br#"{"name":""#;
        let suffix = br#"","molecular_formula":"C","molecular_weight":1}"#;
        let mut body = prefix.to_vec();
        body.resize(n - suffix.len(), b'a');
        body.extend_from_slice(suffix);
        assert_eq!(body.len(), n);
        body
    };
    // At the limit the body is read and validated (the name is far too long).
    let r = api.send(raw(Some("application/json"), sized(64 * 1024))).await;
    assert_eq!(r.problem(400, "validation")["field"], "name");
    let too_big = "request bodies are limited to 65536 bytes";
    let r = api.send(raw(Some("application/json"), sized(64 * 1024 + 1))).await;
    r.assert_problem(413, "payload-too-large", None, too_big);
    let r = api.send(raw(Some("application/json"), sized(10 * 1024 * 1024))).await;
    r.assert_problem(413, "payload-too-large", None, too_big);
    let r = api.send(raw(Some("application/json"), sized(10 * 1024 * 1024 + 1))).await;
    let p = r.problem_maybe_without_id(413, "payload-too-large");
    assert_eq!(p["detail"], "request bodies are limited to 10485760 bytes");
    assert!(p.get("field").is_none());
    // Size is checked before the content type.
    let r = api.send(raw(Some("text/plain"), vec![b'a'; 64 * 1024 + 1])).await;
    r.problem(413, "payload-too-large");

    // Invalid CAS numbers in the path.
    let cases = [
        (bad_check_digit(&c), None),
        ("50-78-3".to_string(), Some("CAS number 50-78-3 fails its check digit: expected 2, found 3")),
        ("50%2078-2".to_string(), Some("CAS number must not contain whitespace")),
        ("%2050-78-2".to_string(), Some("CAS number must not contain whitespace")),
        ("50-78-2%20".to_string(), Some("CAS number must not contain whitespace")),
        ("abc-de-f".to_string(), Some("CAS number must have the form NNNNNNN-NN-N (digits and two hyphens)")),
        ("5O-78-2".to_string(), Some("CAS number must have the form NNNNNNN-NN-N (digits and two hyphens)")),
        ("50-78".to_string(), Some("CAS number must have the form NNNNNNN-NN-N (digits and two hyphens)")),
        ("50_78_2".to_string(), Some("CAS number must have the form NNNNNNN-NN-N (digits and two hyphens)")),
    ];
    for (text, detail) in cases {
        let r = api.put_json(&format!("/v1/products/{text}"), &dev, &good).await;
        let p = r.problem(400, "invalid-cas");
        assert_eq!(p["field"], "cas", "{text}");
        if let Some(detail) = detail {
            assert_eq!(p["detail"], detail, "{text}");
        }
    }
    // The CAS number in the body must name the path's substance.
    let mut mismatch = good.clone();
    mismatch["cas"] = json!("50-78-2");
    let r = api.put_json(&path, &dev, &mismatch).await;
    r.assert_problem(400, "validation", Some("cas"), "does not match the CAS number in the path");
    let mut invalid = good.clone();
    invalid["cas"] = json!("50-78-3");
    let r = api.put_json(&path, &dev, &invalid).await;
    r.assert_problem(
        400,
        "validation",
        Some("cas"),
        "CAS number 50-78-3 fails its check digit: expected 2, found 3",
    );

    // Field validation names the field.
    for (change, field) in [
        (json!({"name": "  "}), "name"),
        (json!({"molecular_formula": "c2h6o"}), "molecular_formula"),
        (json!({"molecular_weight": 0}), "molecular_weight"),
        (json!({"molecular_weight": -3.5}), "molecular_weight"),
        (json!({"inchikey": "not-an-inchikey"}), "inchikey"),
        (json!({"smiles": "C C"}), "smiles"),
        (json!({"synonyms": ["ok", ""]}), "synonyms[1]"),
        (json!({"manufacturing": {"route": "r", "site": "s", "steps": []}}), "manufacturing.steps"),
    ] {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let p = api.put_json(&path, &dev, &body).await.problem(400, "validation");
        assert_eq!(p["field"], field, "{p}");
    }
    // Nothing above created the product.
    api.get(&path, &dev).await.problem(404, "not-found");

    // A charset parameter is fine.
    let r = api.send(raw(Some("application/json; charset=utf-8"), good_bytes)).await;
    assert_eq!(r.json(201)["name"], "Valid thing");
}

/// The gateway's own 413 is a problem like every other: it carries the
/// gateway's request id in `request_id` and in `x-amzn-requestid`.
#[tokio::test]
async fn the_gateway_413_carries_a_request_id() {
    let s = shared_mutable();
    let api = s.api();
    let dev = s.issue_key("pw-huge", "developer", "paid");
    let path = format!("/v1/products/{}", cas(9_400_005, 45));
    let body = vec![b' '; 10 * 1024 * 1024 + 1];
    let rb = api.request(Method::PUT, &path, &dev).header("content-type", "application/json").body(body);
    let r = api.send(rb).await;
    r.assert_problem(413, "payload-too-large", None, "request bodies are limited to 10485760 bytes");
}

/// Concurrent replacements of one product: one creates it, the others replace
/// it or are told to retry; the search index ends up matching the final
/// record exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_leave_a_consistent_index() {
    let s = shared_mutable();
    let api = s.api();
    let dev = s.issue_key("pw-racer", "developer", "paid");
    let c = cas(9_400_006, 46);
    let path = format!("/v1/products/{c}");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (api, dev, path) = (api.clone(), dev.clone(), path.clone());
        let body = json!({
            "name": "Racing compound",
            "synonyms": [format!("racevariant{i}")],
            "molecular_formula": format!("C{}H4", i + 2),
            "molecular_weight": 40.0 + f64::from(i)
        });
        tasks.spawn(async move { api.put_json(&path, &dev, &body).await });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        if r.status == 409 {
            r.assert_problem(409, "conflict", None, "the resource changed concurrently; retry");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses.iter().filter(|&&st| st == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|st| [200, 201, 409].contains(st)), "{statuses:?}");
    let last = api.get(&path, &dev).await.json(200);
    let winner =
        last["synonyms"][0].as_str().unwrap().trim_start_matches("racevariant").parse::<u32>().unwrap();
    assert_eq!(last["molecular_formula"], format!("C{}H4", winner + 2));
    for i in 0..8 {
        let by_name = names(&api.get(&format!("/v1/products?name=racevariant{i}"), &dev).await.json(200));
        let by_formula = names(&api.get(&format!("/v1/products?formula=C{}H4", i + 2), &dev).await.json(200));
        let want: Vec<String> = if i == winner { vec![c.clone()] } else { vec![] };
        assert_eq!(by_name, want, "synonym of variant {i}");
        assert!(by_formula.iter().all(|x| x != &c) || i == winner, "stale formula entry of variant {i}");
        if i == winner {
            assert_eq!(by_formula, [c.as_str()]);
        }
    }
    assert_eq!(names(&api.get("/v1/products?name=racevariant", &dev).await.json(200)), [c.as_str()]);
}
