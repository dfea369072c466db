//! The rotation handler fed with Secrets Manager's rotation event, as JSON,
//! the way Secrets Manager calls it: the four steps in order with one token,
//! then retried; the first rotation of the empty secret the template
//! creates; plus the events it must refuse.

use lambda_runtime::{Context, LambdaEvent};
use pharmagate_rotation::{RotationEvent, RotationHandler};
use pharmagate_shared::aws::{self, AwsResources};
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::jwt::SigningKey;
use pharmagate_shared::ports::Stage;
use serde_json::{Value, json};

const SECRET: &str = "pharmagate/dev/jwt-signing-key";
/// The fixture's `ClientRequestToken`.
const TOKEN: &str = "5b0c2f8e-1d2a-4c3b-9e4f-6a7b8c9d0e1f";

fn event(step: &str) -> LambdaEvent<RotationEvent> {
    event_for(step, SECRET)
}

/// The fixture event for `step`, naming `secret` by an ARN as Secrets
/// Manager does.
fn event_for(step: &str, secret: &str) -> LambdaEvent<RotationEvent> {
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/events/secretsmanager-rotation.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["Step"] = json!(step);
    event["SecretId"] =
        json!(format!("arn:aws:secretsmanager:eu-west-1:123456789012:secret:{secret}-Ab12Cd"));
    LambdaEvent::new(serde_json::from_value(event).unwrap(), Context::default())
}

async fn setup() -> (tempfile::TempDir, Backend, RotationHandler) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings { signing_secret_id: SECRET.into(), ..Settings::default() };
    let backend = Backend::embedded(dir.path(), settings).unwrap();
    assert!(backend.signing_keys().bootstrap().await.unwrap());
    let handler = RotationHandler::new(&backend);
    (dir, backend, handler)
}

#[tokio::test]
async fn the_four_steps_rotate_the_signing_key_and_a_retry_changes_nothing() {
    let (_dir, backend, handler) = setup().await;
    let token = TOKEN;
    let mut answers = Vec::new();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        answers.push(handler.handle(event(step)).await.unwrap());
    }
    assert_eq!(
        answers,
        vec![
            json!({"step": "createSecret", "changed": true}),
            json!({"step": "setSecret", "changed": false}),
            json!({"step": "testSecret", "changed": false}),
            json!({"step": "finishSecret", "changed": true}),
        ]
    );
    let staged = backend.secrets.staged_versions(SECRET).await.unwrap();
    let expected =
        vec![(token.to_string(), vec![Stage::Current]), ("initial".to_string(), vec![Stage::Previous])];
    assert_eq!(staged, expected);
    assert_eq!(backend.secrets.get_stage(SECRET, Stage::Current).await.unwrap().unwrap().version_id, token);
    for step in ["createSecret", "finishSecret"] {
        let again = handler.handle(event(step)).await.unwrap();
        assert_eq!(again, json!({"step": step, "changed": false}));
    }
}

/// The template creates the signing key's secret with no version and
/// Secrets Manager rotates it at once: the four events make the first key,
/// which signs at once; a retry of every step changes nothing.
async fn the_first_rotation_of_an_empty_secret_makes_the_first_key(backend: Backend) {
    let secret = backend.settings.signing_secret_id.clone();
    backend.secrets.ensure_secret(&secret).await.unwrap();
    assert!(backend.secrets.staged_versions(&secret).await.unwrap().is_empty());
    let handler = RotationHandler::new(&backend);
    let mut answers = Vec::new();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        answers.push(handler.handle(event_for(step, &secret)).await.unwrap());
    }
    assert_eq!(
        answers,
        vec![
            json!({"step": "createSecret", "changed": true}),
            json!({"step": "setSecret", "changed": false}),
            json!({"step": "testSecret", "changed": false}),
            json!({"step": "finishSecret", "changed": true}),
        ]
    );
    let staged = backend.secrets.staged_versions(&secret).await.unwrap();
    assert_eq!(staged, vec![(TOKEN.to_string(), vec![Stage::Current])]);
    let current = backend.secrets.get_stage(&secret, Stage::Current).await.unwrap().unwrap();
    let kid = SigningKey::from_secret(&current.value).unwrap().kid().to_string();
    let signing = backend.signing_keys();
    assert_eq!(signing.signer().await.unwrap().kid(), kid, "the first key signs at once");
    assert!(signing.key_set().await.unwrap().find(&kid).is_some());
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let again = handler.handle(event_for(step, &secret)).await.unwrap();
        assert_eq!(again, json!({"step": step, "changed": false}));
    }
    assert_eq!(backend.secrets.staged_versions(&secret).await.unwrap(), staged);
}

#[tokio::test]
async fn the_first_rotation_of_an_empty_secret_on_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings { signing_secret_id: SECRET.into(), ..Settings::default() };
    let backend = Backend::embedded(dir.path(), settings).unwrap();
    the_first_rotation_of_an_empty_secret_makes_the_first_key(backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_rotation_of_an_empty_secret_on_secrets_manager() {
    let Some(endpoint) = aws::test_endpoint("the_first_rotation_of_an_empty_secret_on_secrets_manager")
    else {
        return;
    };
    let sdk = aws::local_sdk_config(&endpoint).await;
    // Only the secrets are used: no tables or key to create.
    let resources = AwsResources::with_prefix(&aws::unique_prefix("rotev"));
    let backend = Backend::aws_with(&sdk, &resources, Settings::default(), false).await.unwrap();
    the_first_rotation_of_an_empty_secret_makes_the_first_key(backend).await;
}

#[tokio::test]
async fn events_for_other_secrets_or_unknown_steps_are_refused_without_writing() {
    let (_dir, backend, handler) = setup().await;
    let mut other = event("createSecret");
    other.payload.secret_id =
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pharmagate/dev/db-password-Xy12Zw".into();
    let error = handler.handle(other).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "this function rotates pharmagate/dev/jwt-signing-key and pharmagate/integrity-key, not \
         arn:aws:secretsmanager:eu-west-1:123456789012:secret:pharmagate/dev/db-password-Xy12Zw"
    );
    let error = handler.handle(event("CreateSecret")).await.unwrap_err().to_string();
    assert_eq!(error, "unknown rotation step \"CreateSecret\"");
    let error = handler.handle(event("setSecret")).await.unwrap_err().to_string();
    assert!(error.contains("is neither AWSPENDING nor AWSCURRENT; nothing was written"), "{error}");
    let staged = backend.secrets.staged_versions(SECRET).await.unwrap();
    assert_eq!(staged, vec![("initial".to_string(), vec![Stage::Current])]);
}

#[tokio::test]
async fn an_integrity_key_event_reaches_the_integrity_key_rotation() {
    use pharmagate_shared::domain::{CustomerId, Role, Tier};
    use pharmagate_shared::repo::keys::NewKey;
    let (_dir, backend, handler) = setup().await;
    let customer = CustomerId::parse("rot-co").unwrap();
    let new = NewKey { customer, role: Role::Customer, tier: Tier::Free, label: None, expires_at: None };
    let (_, record) = backend.keys().issue(new, None).await.unwrap();
    // The key made at first use is new: a rotation now must wait ten minutes.
    let secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pharmagate/integrity-key-Xy12Zw";
    let mut create = event("createSecret");
    create.payload.secret_id = secret.into();
    let error = handler.handle(create).await.unwrap_err().to_string();
    assert!(
        error.starts_with("not rotating pharmagate/integrity-key yet: key integrity-key-0001 is new"),
        "{error}"
    );
    assert_eq!(backend.keys().get(&record.id).await.unwrap(), Some(record));
}
