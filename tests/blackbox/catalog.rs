//! Catalog reads: products, search, paging and query validation, on a server
//! whose catalog no test changes.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::harness::*;

fn blz945() -> Value {
    json!({
        "cas": "953769-46-5",
        "name": "BLZ-945 (sotuletinib)",
        "synonyms": [],
        "molecular_formula": "C20H22N4O3S",
        "molecular_weight": 398.488,
        "smiles": "CNC(=O)c1cc(Oc2ccc3nc(N[C@@H]4CCCC[C@H]4O)sc3c2)ccn1",
        "inchikey": "ADZBMFGQQWPHMJ-RHSMWYFYSA-N",
        "iupac_name": "4-[[2-[[(1R,2R)-2-hydroxycyclohexyl]amino]-1,3-benzothiazol-6-yl]oxy]-N-methylpyridine-2-carboxamide"
    })
}

fn cas_list(page: &Value) -> Vec<String> {
    page["items"].as_array().expect("items").iter().map(|i| i["cas"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn product_by_cas_has_exact_properties() {
    let s = shared_readonly();
    let api = s.api();
    let r = api.get(&format!("/v1/products/{BLZ945}"), s.demo()).await;
    assert_eq!(r.json(200), blz945());
    assert!(r.header("x-amzn-requestid").is_some_and(|id| id.len() == 36));
    // Leading zeros name the same substance; the answer uses the canonical form.
    assert_eq!(api.get("/v1/products/0953769-46-5", s.demo()).await.json(200), blz945());
    assert_eq!(api.get("/v1/products/000953769-46-5", s.admin()).await.json(200), blz945());
    // Percent-encoded path segments are decoded.
    assert_eq!(api.get("/v1/products/953769%2D46%2D5", s.demo()).await.json(200), blz945());
    // A valid CAS number that is not in the catalog.
    let absent = cas(9_900_001, 1);
    let r = api.get(&format!("/v1/products/{absent}"), s.demo()).await;
    r.assert_problem(404, "not-found", None, &format!("no product with CAS number {absent}"));
    // Invalid ones are refused with the reason.
    let cases = [
        ("953769-46-4", "CAS number 953769-46-4 fails its check digit: expected 5, found 4"),
        ("953769%2046-5", "CAS number must not contain whitespace"),
        ("abc-de-f", "CAS number must have the form NNNNNNN-NN-N (digits and two hyphens)"),
        ("5-78-2", "the first group of a CAS number must have 2 to 7 digits (not counting leading zeros)"),
        ("12345678901234567", "CAS number is longer than 16 characters"),
    ];
    for (text, detail) in cases {
        let r = api.get(&format!("/v1/products/{text}"), s.demo()).await;
        r.assert_problem(400, "invalid-cas", Some("cas"), detail);
    }
}

#[tokio::test]
async fn name_search_matches_prefixes_of_words_case_insensitively() {
    let s = shared_readonly();
    let api = s.api();
    let tob = api.get("/v1/products?name=tob", s.demo()).await.json(200);
    assert_eq!(
        tob,
        json!({
            "items": [{"cas": TOBRAMYCIN, "name": "tobramycin", "molecular_formula": "C18H37N5O9", "molecular_weight": 467.51448}],
            "limit": 20,
            "next_cursor": null
        })
    );
    for q in ["TOB", "Tobra", "tobramycin", "%20tob"] {
        assert_eq!(api.get(&format!("/v1/products?name={q}"), s.demo()).await.json(200), tob, "{q}");
    }
    let hydro: HashSet<String> =
        cas_list(&api.get("/v1/products?name=hydro", s.demo()).await.json(200)).into_iter().collect();
    let want: HashSet<String> = ["1115-70-4", AMANTADINE_HCL, "58-93-5", "50-23-7", "118-42-3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(hydro, want, "'hydro' finds amantadine hydrochloride through its inner word");
    let upper = cas_list(&api.get("/v1/products?name=HyDrO", s.demo()).await.json(200));
    assert_eq!(upper.into_iter().collect::<HashSet<_>>(), want);
    // Several words, with '+' or %20 for the space.
    for q in ["amantadine+hydro", "amantadine%20hydro", "Amantadine+Hydrochloride"] {
        let page = api.get(&format!("/v1/products?name={q}"), s.demo()).await.json(200);
        assert_eq!(cas_list(&page), [AMANTADINE_HCL], "{q}");
    }
    // Words after '(' and '-' are words too.
    assert_eq!(cas_list(&api.get("/v1/products?name=sotu", s.demo()).await.json(200)), [BLZ945]);
    assert_eq!(cas_list(&api.get("/v1/products?name=945", s.demo()).await.json(200)), [BLZ945]);
    // Not a word start, and no match at all.
    assert_eq!(
        cas_list(&api.get("/v1/products?name=ydrochloride", s.demo()).await.json(200)),
        Vec::<String>::new()
    );
    let none = api.get("/v1/products?name=zzzznotathing", s.demo()).await.json(200);
    assert_eq!(none, json!({"items": [], "limit": 20, "next_cursor": null}));
}

#[tokio::test]
async fn formula_and_cas_filters_are_exact() {
    let s = shared_readonly();
    let api = s.api();
    let aspirin = json!({"cas": ASPIRIN, "name": "acetylsalicylic acid", "molecular_formula": "C9H8O4", "molecular_weight": 180.15742});
    let page = api.get("/v1/products?formula=C9H8O4", s.demo()).await.json(200);
    assert_eq!(page, json!({"items": [aspirin], "limit": 20, "next_cursor": null}));
    // Exact, not a prefix.
    assert_eq!(
        cas_list(&api.get("/v1/products?formula=C9H8", s.demo()).await.json(200)),
        Vec::<String>::new()
    );
    let r = api.get("/v1/products?formula=c9h8o4", s.demo()).await;
    r.assert_problem(
        400,
        "validation",
        Some("formula"),
        "must be a molecular formula such as C9H8O4 (at most 100 characters)",
    );

    for q in ["cas=50-78-2", "cas=0050-78-2", "cas=50-78-2&limit=5"] {
        let page = api.get(&format!("/v1/products?{q}"), s.demo()).await.json(200);
        assert_eq!(page["items"], json!([aspirin]), "{q}");
        assert_eq!(page["next_cursor"], Value::Null);
    }
    let absent = cas(9_900_002, 2);
    assert_eq!(api.get(&format!("/v1/products?cas={absent}"), s.demo()).await.json(200)["items"], json!([]));
    let r = api.get("/v1/products?cas=50-78-3", s.demo()).await;
    r.assert_problem(
        400,
        "invalid-cas",
        Some("cas"),
        "CAS number 50-78-3 fails its check digit: expected 2, found 3",
    );
    let r = api.get("/v1/products?cas=50-78-2&cursor=abc", s.demo()).await;
    r.assert_problem(400, "validation", Some("cursor"), "a CAS lookup has a single page");
}

/// Follows `next_cursor` through a listing; returns the pages.
async fn walk(api: &Api, key: &str, query: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/products?{query}"),
            Some(c) => format!("/v1/products?{query}&cursor={c}"),
        };
        let page = api.get(&path, key).await.json(200);
        cursor = page["next_cursor"].as_str().map(String::from);
        pages.push(page);
        assert!(pages.len() <= 200, "paging does not end");
        if cursor.is_none() {
            return pages;
        }
    }
}

#[tokio::test]
async fn paging_visits_every_product_exactly_once() {
    let s = shared_readonly();
    let api = s.api();
    let pages = walk(&api, s.demo(), "limit=7").await;
    assert_eq!(pages.len(), 17, "114 products in pages of 7");
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page["limit"], 7);
        let n = page["items"].as_array().unwrap().len();
        if i < 16 {
            assert_eq!(n, 7, "page {i} is full");
        } else {
            assert_eq!(n, 2, "last page");
        }
    }
    let seen: Vec<String> = pages.iter().flat_map(cas_list).collect();
    assert_eq!(seen.len(), 114);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 114, "no product twice");
    assert_eq!(unique, seed_cas_numbers(), "exactly the seeded products");
    // Summaries carry exactly these members.
    for item in pages.iter().flat_map(|p| p["items"].as_array().unwrap().clone()) {
        let mut keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["cas", "molecular_formula", "molecular_weight", "name"]);
    }
    // One big page agrees with the walk, and the default page size is 20.
    let big: Vec<String> = walk(&api, s.demo(), "limit=100").await.iter().flat_map(cas_list).collect();
    assert_eq!(big, seen, "the same order whatever the page size");
    let default = api.get("/v1/products", s.demo()).await.json(200);
    assert_eq!(default["limit"], 20);
    assert_eq!(cas_list(&default), seen[..20]);

    // A name search pages the same way.
    let all_a: Vec<String> =
        walk(&api, s.demo(), "name=a&limit=100").await.iter().flat_map(cas_list).collect();
    let paged_a: Vec<String> =
        walk(&api, s.demo(), "name=a&limit=3").await.iter().flat_map(cas_list).collect();
    assert!(all_a.len() > 6, "'a' matches many products");
    assert_eq!(paged_a, all_a);
    assert_eq!(paged_a.iter().collect::<HashSet<_>>().len(), paged_a.len(), "no product twice");
}

#[tokio::test]
async fn bad_query_parameters_are_refused() {
    let s = shared_readonly();
    let api = s.api();
    let limit = "must be an integer from 1 to 100";
    for q in ["limit=0", "limit=101", "limit=abc", "limit=-1", "limit=", "limit=1.5", "limit=99999"] {
        let r = api.get(&format!("/v1/products?{q}"), s.demo()).await;
        r.assert_problem(400, "validation", Some("limit"), limit);
    }
    assert_eq!(
        api.get("/v1/products?limit=1", s.demo()).await.json(200)["items"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        api.get("/v1/products?limit=100", s.demo()).await.json(200)["items"].as_array().unwrap().len(),
        100
    );

    let not_ours = "not a cursor returned by this listing with the same filters";
    let first = api.get("/v1/products?name=a&limit=1", s.demo()).await.json(200);
    let a_cursor = first["next_cursor"].as_str().unwrap().to_string();
    let all_cursor = api.get("/v1/products?limit=1", s.demo()).await.json(200)["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = [
        "cursor=xyz".to_string(),
        "cursor=".to_string(),
        "cursor=%21%21%21".to_string(),
        format!("cursor={}", "A".repeat(2000)),
        // base64url of {"v":2,"q":"x","a":"y"}
        "cursor=eyJ2IjoyLCJxIjoieCIsImEiOiJ5In0".to_string(),
        format!("name=b&cursor={a_cursor}"),
        format!("cursor={a_cursor}"),
        format!("formula=C9H8O4&cursor={a_cursor}"),
        format!("name=a&cursor={all_cursor}"),
    ];
    for q in &bad {
        let r = api.get(&format!("/v1/products?{q}"), s.demo()).await;
        r.assert_problem(400, "validation", Some("cursor"), not_ours);
    }
    // The same cursor works with its own query, whatever the case of the name.
    assert_eq!(
        api.get(&format!("/v1/products?name=A&limit=1&cursor={a_cursor}"), s.demo()).await.status,
        200
    );

    let r = api.get("/v1/products?foo=1", s.demo()).await;
    r.assert_problem(
        400,
        "validation",
        Some("foo"),
        "unknown query parameter; allowed: name, formula, cas, limit, cursor",
    );
    let r = api.get("/v1/products?Name=tob", s.demo()).await;
    r.assert_problem(
        400,
        "validation",
        Some("Name"),
        "unknown query parameter; allowed: name, formula, cas, limit, cursor",
    );

    let one = "filter by one of name, formula or cas at a time";
    for (q, field) in [
        ("name=a&formula=C9H8O4", "name,formula"),
        ("name=a&cas=50-78-2", "name,cas"),
        ("formula=C9H8O4&cas=50-78-2", "formula,cas"),
        ("cas=50-78-2&formula=C9H8O4&name=a", "name,formula,cas"),
    ] {
        let r = api.get(&format!("/v1/products?{q}"), s.demo()).await;
        r.assert_problem(400, "validation", Some(field), one);
    }
    for (q, field) in [
        ("limit=5&limit=6", "limit"),
        ("limit=5&limit=5", "limit"),
        ("name=a&name=b", "name"),
        ("cas=50-78-2&cas=50-78-2", "cas"),
        ("formula=C9H8O4&formula=C9H8O4", "formula"),
    ] {
        let r = api.get(&format!("/v1/products?{q}"), s.demo()).await;
        r.assert_problem(400, "validation", Some(field), "give this parameter once");
    }
    let r = api.get("/v1/products?name=", s.demo()).await;
    r.assert_problem(400, "validation", Some("name"), "must be 1 to 100 characters of text");
    let long = "a".repeat(101);
    let r = api.get(&format!("/v1/products?name={long}"), s.demo()).await;
    r.assert_problem(400, "validation", Some("name"), "must be 1 to 100 characters of text");
}

/// A query parameter whose %-escape is broken must be refused, not dropped:
/// dropping `cas` or `name` silently turns a lookup into a full listing, and
/// dropping an unknown parameter skips its rejection.
#[tokio::test]
async fn broken_percent_escapes_in_the_query_are_refused() {
    let s = shared_readonly();
    let api = s.api();
    for q in ["cas=%zz", "name=%zz", "limit=%zz", "foo=%zz", "%zz=1", "name=tob%"] {
        let r = api.get(&format!("/v1/products?{q}"), s.demo()).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(PROBLEM_JSON), "{q}");
    }
}
