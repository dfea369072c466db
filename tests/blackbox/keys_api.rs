//! The keys API: issue, list (never secrets), page, revoke and rotate.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::harness::*;

const KEY_VIEW_MEMBERS: [&str; 11] = [
    "created_at",
    "customer",
    "expires_at",
    "id",
    "label",
    "replaced_by",
    "revoked_at",
    "role",
    "rotation_due_since",
    "status",
    "tier",
];

fn members(v: &Value) -> Vec<String> {
    let mut m: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    m.sort();
    m
}

fn is_rfc3339_utc(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn issue_shows_the_key_once_and_lists_never_do() {
    let s = shared_mutable();
    let api = s.api();
    let owner = s.issue_key("ka-issuer", "developer", "paid");

    let r = api.post_json("/v1/keys", &owner, &json!({"label": "build server", "expires_in_days": 30})).await;
    let issued = r.json(201);
    let id = issued["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), Some(format!("/v1/keys/{id}").as_str()));
    let mut want_members: Vec<String> = KEY_VIEW_MEMBERS.iter().map(|s| s.to_string()).collect();
    want_members.push("key".into());
    want_members.sort();
    assert_eq!(members(&issued), want_members, "the key view plus the key, nothing else: {issued}");
    let key = issued["key"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("pg_dev_{id}_")), "{key}");
    assert_eq!(key.len(), 58);
    assert_eq!(r.text().matches(&key).count(), 1, "the key appears once");
    assert_eq!(issued["customer"], "ka-issuer");
    assert_eq!(issued["role"], "developer");
    assert_eq!(issued["tier"], "paid");
    assert_eq!(issued["label"], "build server");
    assert_eq!(issued["status"], "active");
    assert!(is_rfc3339_utc(&issued["created_at"]), "{issued}");
    assert!(is_rfc3339_utc(&issued["expires_at"]), "{issued}");
    assert_eq!(issued["revoked_at"], Value::Null);
    assert_eq!(issued["replaced_by"], Value::Null);
    assert_eq!(api.get(&format!("/v1/products/{ASPIRIN}"), &key).await.status, 200, "the new key works");

    // Listings (own and admin's) show the key view only.
    for (listing, who) in [("/v1/keys?limit=100", owner.as_str()), ("/v1/keys?customer=ka-issuer", s.admin())]
    {
        let r = api.get(listing, who).await;
        let body = r.json(200);
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{body}");
        for item in items {
            assert_eq!(members(item), KEY_VIEW_MEMBERS, "{item}");
        }
        let text = r.text();
        for secret in [&key, &owner] {
            assert!(!text.contains(&secret[19..]), "a listing shows a secret");
        }
        assert!(!text.contains("\"key\"") && !text.contains("\"hash\""), "{text}");
        let listed = items.iter().find(|k| k["id"] == id.as_str()).unwrap();
        let mut view = issued.clone();
        view.as_object_mut().unwrap().remove("key");
        assert_eq!(listed, &view);
    }

    // The CLI lists the same keys, without secrets either.
    let out = s.cli(&["keys", "list", "--customer", "ka-issuer"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    let mut want = vec![
        format!("{}\tka-issuer\tdeveloper\tpaid\tActive", key_id(&owner)),
        format!("{id}\tka-issuer\tdeveloper\tpaid\tActive"),
    ];
    want.sort();
    assert_eq!(lines, want);
    assert!(!stdout.contains(&key[20..]) && !stdout.contains(&owner[20..]));

    // Bad requests.
    let bad = |body: Value| {
        let (api, owner) = (api.clone(), owner.clone());
        async move { api.post_json("/v1/keys", &owner, &body).await }
    };
    bad(json!({"expires_in_days": 0})).await.assert_problem(
        400,
        "validation",
        Some("expires_in_days"),
        "must be 1 to 3650",
    );
    bad(json!({"expires_in_days": 3651})).await.problem(400, "validation");
    bad(json!({"label": ""})).await.assert_problem(400, "validation", Some("label"), "must not be empty");
    bad(json!({"role": "root"})).await.assert_problem(
        400,
        "validation",
        Some("role"),
        "role must be one of customer, partner, developer, admin",
    );
    bad(json!({"tier": "gold"})).await.problem(400, "validation");
    bad(json!({"customer": "Not Valid"})).await.problem(400, "validation");
    bad(json!({"colour": "red"})).await.problem(400, "malformed-body");
    let r = api
        .send(
            api.request(reqwest::Method::POST, "/v1/keys", &owner)
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    r.problem(415, "unsupported-media-type");
    api.post_empty("/v1/keys", &owner).await.problem(415, "unsupported-media-type");
    // Admins must name the customer.
    bad_admin(&api, s.admin()).await;
    let listed = api.get("/v1/keys", &owner).await.json(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "refused requests issued nothing");
}

async fn bad_admin(api: &Api, admin: &str) {
    let r = api.post_json("/v1/keys", admin, &json!({})).await;
    r.assert_problem(400, "validation", Some("customer"), "required when issuing as an administrator");
    let made = api.post_json("/v1/keys", admin, &json!({"customer": "ka-admin-made"})).await.json(201);
    assert_eq!(
        (made["role"].as_str(), made["tier"].as_str()),
        (Some("customer"), Some("free")),
        "admin defaults"
    );
    let made = api
        .post_json(
            "/v1/keys",
            admin,
            &json!({"customer": "ka-admin-made", "role": "developer", "tier": "internal"}),
        )
        .await
        .json(201);
    assert_eq!((made["role"].as_str(), made["tier"].as_str()), (Some("developer"), Some("internal")));
}

#[tokio::test]
async fn listing_pages_with_cursors() {
    let s = shared_mutable();
    let api = s.api();
    let mut issued = HashSet::new();
    let mut keys = Vec::new();
    for _ in 0..5 {
        let k = s.issue_key("ka-pager", "customer", "free");
        issued.insert(key_id(&k).to_string());
        keys.push(k);
    }
    let key = &keys[0];
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let path = match &cursor {
            None => "/v1/keys?limit=2".to_string(),
            Some(c) => format!("/v1/keys?limit=2&cursor={c}"),
        };
        let page = api.get(&path, key).await.json(200);
        assert_eq!(page["limit"], 2);
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(items.iter().map(|k| k["id"].as_str().unwrap().to_string()));
        cursor = page["next_cursor"].as_str().map(String::from);
        if cursor.is_none() {
            break;
        }
        assert!(sizes.len() < 10);
    }
    assert_eq!(sizes[..2], [2, 2]);
    assert!(sizes[2..].iter().sum::<usize>() == 1, "{sizes:?}");
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), issued, "each key exactly once");
    let default = api.get("/v1/keys", key).await.json(200);
    assert_eq!(default["limit"], 20);
    assert_eq!(default["next_cursor"], Value::Null);

    // The admin's view of every key pages too, and includes these.
    let mut all = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/keys?limit=3".to_string(),
            Some(c) => format!("/v1/keys?limit=3&cursor={c}"),
        };
        let page = api.get(&path, s.admin()).await.json(200);
        for k in page["items"].as_array().unwrap() {
            assert!(all.insert(k["id"].as_str().unwrap().to_string()), "listed twice: {k}");
        }
        cursor = page["next_cursor"].as_str().map(String::from);
        if cursor.is_none() {
            break;
        }
    }
    assert!(issued.is_subset(&all));
    assert!(all.contains(key_id(s.admin())) && all.contains(key_id(s.demo())));

    // Cursors belong to their listing.
    let own_cursor =
        api.get("/v1/keys?limit=1", key).await.json(200)["next_cursor"].as_str().unwrap().to_string();
    let admin_cursor =
        api.get("/v1/keys?limit=1", s.admin()).await.json(200)["next_cursor"].as_str().unwrap().to_string();
    let not_ours = "not a cursor returned by this listing with the same filters";
    for (path, who) in [
        (format!("/v1/keys?cursor={admin_cursor}"), key.as_str()),
        (format!("/v1/keys?cursor={own_cursor}"), s.admin()),
        (format!("/v1/keys?customer=ka-pager&cursor={admin_cursor}"), s.admin()),
        ("/v1/keys?cursor=nonsense".to_string(), key.as_str()),
    ] {
        api.get(&path, who).await.assert_problem(400, "validation", Some("cursor"), not_ours);
    }
    assert_eq!(
        api.get(&format!("/v1/keys?customer=ka-pager&cursor={own_cursor}"), s.admin()).await.status,
        200
    );
    for q in ["limit=0", "limit=101", "limit=x"] {
        let r = api.get(&format!("/v1/keys?{q}"), key).await;
        r.assert_problem(400, "validation", Some("limit"), "must be an integer from 1 to 100");
    }
    let r = api.get("/v1/keys?status=active", key).await;
    r.assert_problem(
        400,
        "validation",
        Some("status"),
        "unknown query parameter; allowed: customer, limit, cursor",
    );
    let r = api.get("/v1/keys?limit=1&limit=2", key).await;
    r.assert_problem(400, "validation", Some("limit"), "give this parameter once");
}

#[tokio::test]
async fn revoke_stops_a_key_at_once() {
    let s = shared_mutable();
    let api = s.api();
    let keeper = s.issue_key("ka-revoker", "customer", "free");
    let victim = s.issue_key("ka-revoker", "customer", "free");
    assert_eq!(api.get("/v1/keys", &victim).await.status, 200);
    let r = api.delete(&format!("/v1/keys/{}", key_id(&victim)), &keeper).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    api.get("/v1/keys", &victim).await.assert_unauthorized();
    let listed = api.get("/v1/keys", &keeper).await.json(200);
    let item =
        listed["items"].as_array().unwrap().iter().find(|k| k["id"] == key_id(&victim)).unwrap().clone();
    assert_eq!(item["status"], "revoked");
    assert!(is_rfc3339_utc(&item["revoked_at"]), "{item}");
    // Revoking again changes nothing; a revoked key cannot be rotated.
    assert_eq!(api.delete(&format!("/v1/keys/{}", key_id(&victim)), &keeper).await.status, 204);
    let again = api.get("/v1/keys", &keeper).await.json(200);
    assert!(again["items"].as_array().unwrap().contains(&item), "revoked_at unchanged");
    let r = api.post_json(&format!("/v1/keys/{}/rotate", key_id(&victim)), &keeper, &json!({})).await;
    r.assert_problem(409, "key-not-active", None, "the key is revoked and cannot be rotated");
    // A key may revoke itself.
    assert_eq!(api.delete(&format!("/v1/keys/{}", key_id(&keeper)), &keeper).await.status, 204);
    api.get("/v1/keys", &keeper).await.assert_unauthorized();
    // Malformed and unknown ids.
    let admin = s.admin();
    let r = api.delete("/v1/keys/NOT-AN-ID", admin).await;
    r.assert_problem(400, "validation", Some("id"), "key id must be 12 characters of 0-9 and a-z");
    api.delete("/v1/keys/000000000000", admin).await.assert_problem(404, "not-found", None, "no such key");
}

#[tokio::test]
async fn rotation_replaces_a_key_once() {
    let s = shared_mutable();
    let api = s.api();
    let path = format!("/v1/products/{ASPIRIN}");

    // Grace 0: the old key stops at once, the new one works at once.
    let old = s.issue_key("ka-rotator", "partner", "paid");
    let r = api
        .post_json(&format!("/v1/keys/{}/rotate", key_id(&old)), &old, &json!({"grace_period_seconds": 0}))
        .await;
    let new = r.json(201);
    let new_id = new["id"].as_str().unwrap().to_string();
    let new_key = new["key"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), Some(format!("/v1/keys/{new_id}").as_str()));
    assert_eq!(
        (new["customer"].as_str(), new["role"].as_str(), new["tier"].as_str()),
        (Some("ka-rotator"), Some("partner"), Some("paid"))
    );
    assert_eq!(new["status"], "active");
    assert_eq!(new["expires_at"], Value::Null);
    api.get(&path, &old).await.assert_unauthorized();
    assert_eq!(api.get(&path, &new_key).await.status, 200);
    let listed = api.get("/v1/keys", &new_key).await.json(200);
    let old_view =
        listed["items"].as_array().unwrap().iter().find(|k| k["id"] == key_id(&old)).unwrap().clone();
    assert_eq!(old_view["status"], "expired");
    assert_eq!(old_view["replaced_by"], new_id.as_str());
    assert_eq!(old_view["revoked_at"], Value::Null);
    // Rotating it again: it is no longer active.
    let again = api
        .post_json(
            &format!("/v1/keys/{}/rotate", key_id(&old)),
            &new_key,
            &json!({"grace_period_seconds": 0}),
        )
        .await;
    again.assert_problem(409, "key-not-active", None, "the key is expired and cannot be rotated");

    // With a grace period, the old key stays active but is rotated only once.
    let graced = s.issue_key("ka-rotator2", "customer", "free");
    let rotate_path = format!("/v1/keys/{}/rotate", key_id(&graced));
    let first = api.post_json(&rotate_path, &graced, &json!({"grace_period_seconds": 30})).await.json(201);
    let twice = api.post_json(&rotate_path, &graced, &json!({"grace_period_seconds": 30})).await;
    twice.assert_problem(409, "key-already-rotated", None, "the key was already rotated");
    let by_successor = api.post_empty(&rotate_path, first["key"].as_str().unwrap()).await;
    by_successor.problem(409, "key-already-rotated");
    assert_eq!(api.get(&path, &graced).await.status, 200, "still in its grace period");

    // Without a body the default grace period (24 h) applies.
    let default_grace = s.issue_key("ka-rotator3", "customer", "free");
    let r = api.post_empty(&format!("/v1/keys/{}/rotate", key_id(&default_grace)), &default_grace).await;
    assert_eq!(r.status, 201);
    assert_eq!(api.get(&path, &default_grace).await.status, 200);
    let listed = api.get("/v1/keys", &default_grace).await.json(200);
    let old_view = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id(&default_grace))
        .unwrap()
        .clone();
    let created = old_view["created_at"].as_str().unwrap();
    let expires = old_view["expires_at"].as_str().unwrap();
    assert!(expires > created, "{old_view}");

    // Concurrent rotations: exactly one wins.
    let racer = s.issue_key("ka-racer", "customer", "free");
    let rotate_path = format!("/v1/keys/{}/rotate", key_id(&racer));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (api, racer, p) = (api.clone(), racer.clone(), rotate_path.clone());
        tasks.spawn(async move { api.post_json(&p, &racer, &json!({"grace_period_seconds": 60})).await });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        if r.status != 201 {
            r.problem(409, "key-already-rotated");
        }
        statuses.push(r.status);
    }
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409]);
    let listed = api.get("/v1/keys", &racer).await.json(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "one successor only");

    // Bad grace periods and bodies.
    let k = s.issue_key("ka-rotator4", "customer", "free");
    let p = format!("/v1/keys/{}/rotate", key_id(&k));
    for grace in [-1, 2_592_001] {
        let r = api.post_json(&p, &k, &json!({"grace_period_seconds": grace})).await;
        r.assert_problem(400, "validation", Some("grace_period_seconds"), "must be 0 to 2592000");
    }
    api.post_json(&p, &k, &json!({"grace": 5})).await.problem(400, "malformed-body");
    let r = api
        .send(api.request(reqwest::Method::POST, &p, &k).header("content-type", "text/plain").body("x"))
        .await;
    r.problem(415, "unsupported-media-type");
    assert_eq!(api.get(&path, &k).await.status, 200, "refused rotations changed nothing");
    let listed = api.get("/v1/keys", &k).await.json(200);
    assert_eq!(listed["items"][0]["replaced_by"], Value::Null);
}
