//! The signing-key rotation protocol driven the way Secrets Manager drives
//! it (moto does not run rotation code: these tests are the driver), with the
//! same bodies on the embedded secret store and on Secrets Manager (moto):
//! a full rotation, re-runs of every step, a crash after each step, tokens
//! that are neither pending nor current, the retirement guard, the
//! compromised-key rotation, the first rotation of an empty secret (how the
//! key first appears in AWS), and verifiers picking up new keys without a
//! restart. Then the integrity key's rotation, which re-seals every signed
//! record, on both whole backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pharmagate_shared::aws::{self, AwsResources, CallCounters, SecretsManagerStore};
use pharmagate_shared::clock::{Clock, now_secs};
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{Cas, CustomerId, Permission, Role, Tier};
use pharmagate_shared::embedded::{EmbeddedSecrets, LocalVault, SqliteStore};
use pharmagate_shared::integrity::{INITIAL_KEY_VERSION, Integrity, MAC_KEY_ATTR};
use pharmagate_shared::jwt::{self, Claims, Expectations, JwtError};
use pharmagate_shared::ports::{Condition, Item, Table};
use pharmagate_shared::ports::{SecretError, SecretStore, SecretVersion, Stage};
use pharmagate_shared::repo::RepoError;
use pharmagate_shared::repo::clients::NewClient;
use pharmagate_shared::repo::keys::NewKey;
use pharmagate_shared::rotation::{Outcome, RotationError, RotationPolicy, SecretRotation, Step};
use pharmagate_shared::signing::{SigningError, SigningKeys};

const T0: i64 = 1_900_000_000;
const POLICY: RotationPolicy = RotationPolicy { publish_delay_secs: 62, retire_after_secs: 990 };

/// One secret under rotation, with a hand-moved clock.
struct Fixture {
    store: Arc<dyn SecretStore>,
    id: String,
    time: Arc<AtomicI64>,
}

impl Fixture {
    async fn new(store: Arc<dyn SecretStore>, name: &str) -> Self {
        let fixture = Fixture::empty(store, name).await;
        assert!(fixture.verifier().bootstrap().await.expect("bootstrap"));
        fixture
    }

    /// The secret with no version at all, as the template creates it.
    async fn empty(store: Arc<dyn SecretStore>, name: &str) -> Self {
        let id = format!("{}/{name}", aws::unique_prefix("rot"));
        store.ensure_secret(&id).await.expect("create the secret");
        Fixture { store, id, time: Arc::new(AtomicI64::new(T0)) }
    }

    fn rotation(&self) -> SecretRotation {
        SecretRotation::signing_key(self.store.clone(), self.id.clone(), POLICY)
            .with_clock(Clock::manual(self.time.clone()))
    }

    /// A verifier that reads the store on every call.
    fn verifier(&self) -> SigningKeys {
        SigningKeys::new(self.store.clone(), self.id.clone()).with_cache(Duration::ZERO, Duration::ZERO)
    }

    fn set_time(&self, t: i64) {
        self.time.store(t, Ordering::SeqCst);
    }

    async fn staged(&self) -> Vec<(String, Vec<Stage>)> {
        self.store.staged_versions(&self.id).await.expect("staged versions")
    }

    async fn kid_at(&self, stage: Stage) -> Option<String> {
        let version = self.store.get_stage(&self.id, stage).await.expect("get stage")?;
        Some(jwt::SigningKey::from_secret(&version.value).expect("key").kid().to_string())
    }

    async fn run_all(&self, token: &str) -> Vec<Outcome> {
        let rotation = self.rotation();
        let mut outcomes = Vec::new();
        for step in Step::ALL {
            let outcome = rotation.run(step, token).await;
            outcomes.push(outcome.unwrap_or_else(|e| panic!("{}: {e}", step.as_str())));
        }
        outcomes
    }
}

fn expect() -> Expectations {
    Expectations { issuer: "https://as.test".into(), audience: "api".into(), max_lifetime_secs: 900 }
}

fn claims(now: i64) -> Claims {
    Claims {
        iss: "https://as.test".into(),
        sub: "pgc_test".into(),
        aud: "api".into(),
        client_id: "pgc_test".into(),
        client_gen: "g1".into(),
        scope: "catalog:read".into(),
        iat: now,
        exp: now + 900,
        nbf: None,
        jti: jwt::new_jti(),
    }
}

fn staged(entries: &[(&str, &[Stage])]) -> Vec<(String, Vec<Stage>)> {
    entries.iter().map(|(id, stages)| (id.to_string(), stages.to_vec())).collect()
}

// ------------------------------------------------------------ the bodies --

async fn a_scheduled_rotation_publishes_first_and_signs_later(store: Arc<dyn SecretStore>) {
    let f = Fixture::new(store, "scheduled").await;
    let old_kid = f.kid_at(Stage::Current).await.expect("initial key");
    let rotation = f.rotation();
    let old_token = f.verifier().signer_at(T0).await.expect("signer").sign(&claims(T0));

    assert_eq!(rotation.run(Step::Create, "tok-0001").await.expect("create"), Outcome::Changed);
    let new_kid = f.kid_at(Stage::Pending).await.expect("pending key");
    assert_ne!(new_kid, old_kid);
    let pending = f.store.get_version(&f.id, "tok-0001").await.expect("get").expect("written");
    let key = jwt::SigningKey::from_secret(&pending.value).expect("pending key parses");
    assert_eq!(key.sign_from(), Some(T0 + 62));
    // Published: verifiers accept it before anything is signed with it.
    let keys = f.verifier().key_set().await.expect("key set");
    assert!(keys.find(&new_kid).is_some() && keys.find(&old_kid).is_some());
    assert_eq!(f.verifier().signer_at(T0 + 1_000).await.expect("signer").kid(), old_kid);

    // Secrets Manager retries: a repeated create writes nothing new.
    assert_eq!(rotation.run(Step::Create, "tok-0001").await.expect("create again"), Outcome::Unchanged);
    assert_eq!(f.kid_at(Stage::Pending).await, Some(new_kid.clone()));
    assert_eq!(rotation.run(Step::Set, "tok-0001").await.expect("set"), Outcome::Unchanged);
    assert_eq!(rotation.run(Step::Test, "tok-0001").await.expect("test"), Outcome::Unchanged);
    assert_eq!(rotation.run(Step::Finish, "tok-0001").await.expect("finish"), Outcome::Changed);
    assert_eq!(f.staged().await, staged(&[("initial", &[Stage::Previous]), ("tok-0001", &[Stage::Current])]));

    // Finishing (or any step on) an already-current version is a no-op.
    for step in Step::ALL {
        assert_eq!(rotation.run(step, "tok-0001").await.expect("re-run"), Outcome::Unchanged, "{step:?}");
    }
    assert_eq!(f.staged().await, staged(&[("initial", &[Stage::Previous]), ("tok-0001", &[Stage::Current])]));

    // The old key signs until the new key's sign_from, then the new one.
    let verifier = f.verifier();
    assert_eq!(verifier.signer_at(T0 + 61).await.expect("signer").kid(), old_kid);
    assert_eq!(verifier.signer_at(T0 + 62).await.expect("signer").kid(), new_kid);
    // Tokens from before, during and after all verify.
    let during = verifier.signer_at(T0 + 30).await.expect("signer").sign(&claims(T0 + 30));
    let after = verifier.signer_at(T0 + 70).await.expect("signer").sign(&claims(T0 + 70));
    let keys = verifier.key_set().await.expect("key set");
    for (name, token, at) in
        [("before", &old_token, T0), ("during", &during, T0 + 30), ("after", &after, T0 + 70)]
    {
        assert!(jwt::verify(token, &keys, &expect(), at + 10).is_ok(), "{name} token");
    }
}

async fn a_token_neither_pending_nor_current_is_refused_without_writing(store: Arc<dyn SecretStore>) {
    let f = Fixture::new(store, "notpending").await;
    f.run_all("tok-0001").await;
    let before = f.staged().await;
    let rotation = f.rotation();
    // "initial" is AWSPREVIOUS now; "tok-none" was never created.
    for (token, steps) in [("initial", &Step::ALL[..]), ("tok-none", &Step::ALL[1..])] {
        for step in steps {
            match rotation.run(*step, token).await {
                Err(RotationError::NotPending { token: t, .. }) => assert_eq!(t, token),
                other => panic!("{step:?} with {token}: expected NotPending, got {other:?}"),
            }
        }
    }
    assert_eq!(f.staged().await, before);
    assert!(f.store.get_version(&f.id, "tok-none").await.expect("get").is_none());
}

async fn rotating_again_while_previous_tokens_live_is_refused(store: Arc<dyn SecretStore>) {
    let f = Fixture::new(store, "toosoon").await;
    f.run_all("tok-0001").await;
    let before = f.staged().await;
    let initial_kid = f.kid_at(Stage::Previous).await.expect("previous");
    // The initial key signed until T0 + 62; its tokens live 990 s more.
    let until = T0 + 62 + 990;
    f.set_time(until - 1);
    match f.rotation().run(Step::Create, "tok-0002").await {
        Err(RotationError::TooSoon { reason, until: u, .. }) => {
            assert_eq!(u, until);
            assert_eq!(
                reason,
                format!("key {initial_kid} would be withdrawn, and its tokens may be accepted")
            );
        }
        other => panic!("expected TooSoon, got {other:?}"),
    }
    assert_eq!(f.staged().await, before);
    assert!(f.store.get_version(&f.id, "tok-0002").await.expect("get").is_none());
    f.set_time(until);
    assert_eq!(f.run_all("tok-0002").await[0], Outcome::Changed);
    assert_eq!(
        f.staged().await,
        staged(&[("tok-0001", &[Stage::Previous]), ("tok-0002", &[Stage::Current])])
    );
}

async fn a_crash_after_any_step_converges_on_re_run(store: Arc<dyn SecretStore>) {
    for crashed_after in 1..=4 {
        // The same rotation retried with its token, as Secrets Manager does.
        let f = Fixture::new(store.clone(), &format!("crash{crashed_after}")).await;
        let rotation = f.rotation();
        for step in &Step::ALL[..crashed_after] {
            rotation.run(*step, "tok-0001").await.expect("before the crash");
        }
        let pending_kid = f.kid_at(Stage::Pending).await.or(f.kid_at(Stage::Current).await);
        f.run_all("tok-0001").await;
        assert_eq!(
            f.staged().await,
            staged(&[("initial", &[Stage::Previous]), ("tok-0001", &[Stage::Current])]),
            "retried after a crash after step {crashed_after}"
        );
        assert_eq!(f.kid_at(Stage::Current).await, pending_kid, "the key made before the crash is kept");

        // A new rotation after a crash before finish: the stale AWSPENDING
        // moves to the new version; the crashed version is left unstaged.
        if crashed_after < 4 {
            let f = Fixture::new(store.clone(), &format!("stale{crashed_after}")).await;
            for step in &Step::ALL[..crashed_after] {
                f.rotation().run(*step, "tok-0001").await.expect("before the crash");
            }
            let stale_kid = f.kid_at(Stage::Pending).await.expect("stale pending");
            f.run_all("tok-0002").await;
            assert_eq!(
                f.staged().await,
                staged(&[("initial", &[Stage::Previous]), ("tok-0002", &[Stage::Current])]),
                "new rotation after a crash after step {crashed_after}"
            );
            assert_ne!(f.kid_at(Stage::Current).await, Some(stale_kid));
            match f.rotation().run(Step::Finish, "tok-0001").await {
                Err(RotationError::NotPending { .. }) => {}
                other => panic!("finishing the abandoned version: expected NotPending, got {other:?}"),
            }
        }
    }
}

async fn a_compromised_key_is_withdrawn_at_once(store: Arc<dyn SecretStore>) {
    let f = Fixture::new(store, "compromised").await;
    let verifier = f.verifier();
    let leaked = verifier.signer_at(T0).await.expect("signer").sign(&claims(T0));
    f.rotation().rotate_compromised("tok-0001").await.expect("compromised rotation");
    assert_eq!(f.staged().await, staged(&[("tok-0001", &[Stage::Current])]));
    let keys = verifier.key_set().await.expect("key set");
    assert_eq!(jwt::verify(&leaked, &keys, &expect(), T0 + 1), Err(JwtError::UnknownKey));
    let fresh = verifier.signer_at(T0).await.expect("signer").sign(&claims(T0));
    assert!(jwt::verify(&fresh, &keys, &expect(), T0 + 1).is_ok());
}

async fn the_first_rotation_of_an_empty_secret_creates_the_first_key_and_converges(
    store: Arc<dyn SecretStore>,
) {
    let f = Fixture::empty(store.clone(), "empty").await;
    assert!(f.staged().await.is_empty());
    assert!(matches!(f.verifier().signer_at(T0).await, Err(SigningError::NoCurrentKey(_))));
    let rotation = f.rotation();
    // Versions that are neither pending nor current: refused, nothing written.
    for step in &Step::ALL[1..] {
        match rotation.run(*step, "tok-none").await {
            Err(RotationError::NotPending { .. }) => {}
            other => panic!("{step:?} on an empty secret: expected NotPending, got {other:?}"),
        }
    }
    assert!(f.staged().await.is_empty());

    let outcomes = f.run_all("tok-0001").await;
    let expected = [Outcome::Changed, Outcome::Unchanged, Outcome::Unchanged, Outcome::Changed];
    assert_eq!(outcomes, expected);
    assert_eq!(f.staged().await, staged(&[("tok-0001", &[Stage::Current])]));
    let first_kid = f.kid_at(Stage::Current).await.expect("the first key");
    // No key to hand over from: the first one signs at once, and verifies.
    let verifier = f.verifier();
    assert_eq!(verifier.signer_at(T0).await.expect("signer").kid(), first_kid);
    let token = verifier.signer_at(T0).await.expect("signer").sign(&claims(T0));
    let keys = verifier.key_set().await.expect("key set");
    assert!(jwt::verify(&token, &keys, &expect(), T0 + 1).is_ok());
    // Secrets Manager retries: every step again changes nothing.
    for step in Step::ALL {
        assert_eq!(rotation.run(step, "tok-0001").await.expect("re-run"), Outcome::Unchanged, "{step:?}");
    }
    assert_eq!(f.staged().await, staged(&[("tok-0001", &[Stage::Current])]));

    // The next rotation is an ordinary one: publish first, sign later.
    f.set_time(T0 + 100);
    f.run_all("tok-0002").await;
    assert_eq!(
        f.staged().await,
        staged(&[("tok-0001", &[Stage::Previous]), ("tok-0002", &[Stage::Current])])
    );
    let second_kid = f.kid_at(Stage::Current).await.expect("second key");
    assert_eq!(verifier.signer_at(T0 + 161).await.expect("signer").kid(), first_kid);
    assert_eq!(verifier.signer_at(T0 + 162).await.expect("signer").kid(), second_kid);
    let keys = verifier.key_set().await.expect("key set");
    assert!(jwt::verify(&token, &keys, &expect(), T0 + 170).is_ok(), "a token of the first key");

    for crashed_after in 1..=4 {
        // Crashed after a step, then retried with its token.
        let f = Fixture::empty(store.clone(), &format!("emptycrash{crashed_after}")).await;
        for step in &Step::ALL[..crashed_after] {
            f.rotation().run(*step, "tok-0001").await.expect("before the crash");
        }
        let made = f.kid_at(Stage::Pending).await.or(f.kid_at(Stage::Current).await);
        assert!(made.is_some());
        f.run_all("tok-0001").await;
        assert_eq!(
            f.staged().await,
            staged(&[("tok-0001", &[Stage::Current])]),
            "retried after a crash after step {crashed_after}"
        );
        assert_eq!(f.kid_at(Stage::Current).await, made, "the key made before the crash is kept");

        // Or a new rotation after a crash before finish: the stale
        // AWSPENDING moves to the new version, the crashed one is unstaged.
        // (Secrets Manager made the first version written AWSCURRENT at
        // once: then the new rotation is an ordinary one from that key.)
        if crashed_after < 4 {
            let f = Fixture::empty(store.clone(), &format!("emptystale{crashed_after}")).await;
            for step in &Step::ALL[..crashed_after] {
                f.rotation().run(*step, "tok-0001").await.expect("before the crash");
            }
            let stale_kid = f.kid_at(Stage::Pending).await.expect("stale pending");
            let made_current = f.kid_at(Stage::Current).await.is_some();
            f.run_all("tok-0002").await;
            let expected = if made_current {
                staged(&[("tok-0001", &[Stage::Previous]), ("tok-0002", &[Stage::Current])])
            } else {
                staged(&[("tok-0002", &[Stage::Current])])
            };
            assert_eq!(f.staged().await, expected, "new rotation after a crash after step {crashed_after}");
            assert_ne!(f.kid_at(Stage::Current).await, Some(stale_kid));
            match f.rotation().run(Step::Finish, "tok-0001").await {
                Err(RotationError::NotPending { .. }) => {}
                other => panic!("finishing the abandoned version: expected NotPending, got {other:?}"),
            }
        }
    }

    // A current key bootstrapped between createSecret and finishSecret: the
    // rotation finishes as an ordinary one, the bootstrapped key keeps
    // signing until the new key's sign_from. (On Secrets Manager the first
    // key is current from createSecret on: there is nothing to bootstrap.)
    let f = Fixture::empty(store, "emptyraced").await;
    f.rotation().run(Step::Create, "tok-0001").await.expect("create");
    if !f.verifier().bootstrap().await.expect("bootstrap") {
        assert_eq!(f.staged().await, staged(&[("tok-0001", &[Stage::Current, Stage::Pending])]));
        f.run_all("tok-0001").await;
        assert_eq!(f.staged().await, staged(&[("tok-0001", &[Stage::Current])]));
        return;
    }
    let initial_kid = f.kid_at(Stage::Current).await.expect("bootstrapped key");
    f.run_all("tok-0001").await;
    assert_eq!(f.staged().await, staged(&[("initial", &[Stage::Previous]), ("tok-0001", &[Stage::Current])]));
    assert_eq!(f.verifier().signer_at(T0 + 61).await.expect("signer").kid(), initial_kid);
    assert_ne!(f.verifier().signer_at(T0 + 62).await.expect("signer").kid(), initial_kid);
}

async fn run_suite(store: Arc<dyn SecretStore>) {
    a_scheduled_rotation_publishes_first_and_signs_later(store.clone()).await;
    a_token_neither_pending_nor_current_is_refused_without_writing(store.clone()).await;
    rotating_again_while_previous_tokens_live_is_refused(store.clone()).await;
    a_crash_after_any_step_converges_on_re_run(store.clone()).await;
    a_compromised_key_is_withdrawn_at_once(store.clone()).await;
    the_first_rotation_of_an_empty_secret_creates_the_first_key_and_converges(store).await;
}

// ---------------------------------------------------------- the backends --

fn embedded(dir: &tempfile::TempDir) -> EmbeddedSecrets {
    let db = SqliteStore::open(&dir.path().join("db.sqlite")).expect("open store");
    let vault = LocalVault::open_or_create(&dir.path().join("master.key")).expect("vault");
    EmbeddedSecrets::new(db, Arc::new(vault))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_protocol_on_the_embedded_secret_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_suite(Arc::new(embedded(&dir))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_protocol_on_secrets_manager() {
    let Some(endpoint) = aws::test_endpoint("rotation_protocol_on_secrets_manager") else { return };
    let sdk = aws::local_sdk_config(&endpoint).await;
    run_suite(Arc::new(SecretsManagerStore::new(&sdk, CallCounters::new()))).await;
}

// ------------------------------------------------------- verifier caches --

/// Counts reads, to see when a verifier goes back to the store.
struct Counting {
    inner: EmbeddedSecrets,
    reads: AtomicU64,
}

#[async_trait]
impl SecretStore for Counting {
    async fn ensure_secret(&self, id: &str) -> Result<(), SecretError> {
        self.inner.ensure_secret(id).await
    }
    async fn get_stage(&self, id: &str, stage: Stage) -> Result<Option<SecretVersion>, SecretError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_stage(id, stage).await
    }
    async fn get_version(&self, id: &str, version: &str) -> Result<Option<SecretVersion>, SecretError> {
        self.inner.get_version(id, version).await
    }
    async fn staged_versions(&self, id: &str) -> Result<Vec<(String, Vec<Stage>)>, SecretError> {
        self.inner.staged_versions(id).await
    }
    async fn put_version(&self, id: &str, v: &str, value: &str, stages: &[Stage]) -> Result<(), SecretError> {
        self.inner.put_version(id, v, value, stages).await
    }
    async fn move_stage(
        &self,
        id: &str,
        stage: Stage,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), SecretError> {
        self.inner.move_stage(id, stage, to, from).await
    }
}

#[tokio::test]
async fn a_verifier_learns_a_new_key_on_its_kid_but_unknown_kids_cannot_force_re_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Counting { inner: embedded(&dir), reads: AtomicU64::new(0) });
    let id = "pharmagate/test/jwt-signing-key";
    let min_refresh = Duration::from_millis(300);
    let verifier = SigningKeys::new(store.clone(), id).with_cache(Duration::from_secs(3600), min_refresh);
    verifier.bootstrap().await.expect("bootstrap");
    let first = verifier.key_set().await.expect("keys");
    assert_eq!(first.keys().len(), 1);

    // Another process rotates (here: a compromised-key rotation, effective now).
    let rotation = SecretRotation::signing_key(store.clone(), id, POLICY);
    rotation.rotate_compromised("tok-0001").await.expect("rotate");
    let new_kid = {
        let current = store.get_stage(id, Stage::Current).await.expect("read").expect("current");
        jwt::SigningKey::from_secret(&current.value).expect("key").kid().to_string()
    };

    // Made-up kids within min_refresh of the last read: no store read.
    tokio::time::sleep(min_refresh).await;
    let reads = store.reads.load(Ordering::SeqCst);
    assert!(verifier.key_set_for(&new_kid).await.expect("refresh").find(&new_kid).is_some());
    assert_eq!(store.reads.load(Ordering::SeqCst), reads + 3, "one re-read: three stages");
    for n in 0..50 {
        let keys = verifier.key_set_for(&format!("made-up-{n}")).await.expect("keys");
        assert!(keys.find(&new_kid).is_some());
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), reads + 3, "made-up kids forced no re-read");
}

// ------------------------------------------------------ the integrity key --

/// The integrity key's rotation on a whole backend: every signed record is
/// re-sealed under the new key and still reads; a rotation too soon after
/// the last waits; a record a stale writer signs with the key about to be
/// retired fails `testSecret` until `setSecret` runs again; a forged record
/// is never re-sealed.
async fn integrity_rotation_reseals_every_signed_record(backend: Backend) {
    let tag = &aws::unique_prefix("c")[4..];
    let customer = CustomerId::parse(&format!("int-{tag}")).unwrap();
    let new_key = NewKey {
        customer: customer.clone(),
        role: Role::Customer,
        tier: Tier::Free,
        label: None,
        expires_at: None,
    };
    let (_, key) = backend.keys().issue(new_key, None).await.expect("issue");
    let aspirin = Cas::parse("50-78-2").unwrap();
    backend.customers().grant(&customer, aspirin).await.expect("grant");
    let new_client = NewClient {
        id: None,
        name: "integrity".into(),
        customer: customer.clone(),
        tier: Tier::Paid,
        scopes: vec![Permission::CatalogRead],
    };
    let (_, client) = backend.clients().create(new_client).await.expect("client");
    let store = backend.store.clone();
    let key_item =
        || async { store.get(Table::Keys, &format!("KEY#{}", key.id), "KEY").await.unwrap().unwrap() };
    let mac_key = |item: &Item| item.attrs[MAC_KEY_ATTR].as_str().unwrap().to_string();
    assert_eq!(mac_key(&key_item().await), INITIAL_KEY_VERSION);

    let t1 = now_secs() + 601;
    let time = Arc::new(AtomicI64::new(t1));
    let rotation = backend.integrity_rotation().with_clock(Clock::manual(time.clone()));
    let secret = rotation.secret_id().to_string();
    rotation.rotate("int-0001").await.expect("first rotation");
    assert_eq!(mac_key(&key_item().await), "int-0001");

    match rotation.run(Step::Create, "int-0002").await {
        Err(RotationError::TooSoon { until, .. }) => assert_eq!(until, t1 + 600),
        other => panic!("a second rotation at once: expected TooSoon, got {other:?}"),
    }
    time.store(t1 + 600, Ordering::SeqCst);
    assert_eq!(rotation.run(Step::Create, "int-0002").await.expect("create"), Outcome::Changed);
    assert_eq!(rotation.run(Step::Set, "int-0002").await.expect("set"), Outcome::Changed);
    assert_eq!(rotation.run(Step::Set, "int-0002").await.expect("set again"), Outcome::Unchanged);
    assert_eq!(mac_key(&key_item().await), "int-0002");

    // A writer still using the key finishing would retire (int-0001 is
    // current and stays accepted; the initial key is previous and goes).
    let stale = backend.integrity.reseal(Table::Keys, &key_item().await, INITIAL_KEY_VERSION).await.unwrap();
    store.put(Table::Keys, stale, Condition::Always).await.unwrap();
    match rotation.run(Step::Test, "int-0002").await {
        Err(RotationError::TestFailed { message, .. }) => {
            assert_eq!(message, "1 signed records still use a key finishing would retire")
        }
        other => panic!("expected TestFailed, got {other:?}"),
    }
    rotation.rotate("int-0002").await.expect("the retried rotation converges");
    let staged = backend.secrets.staged_versions(&secret).await.unwrap();
    assert_eq!(
        staged,
        vec![("int-0001".into(), vec![Stage::Previous]), ("int-0002".into(), vec![Stage::Current])]
    );

    // Everything still reads, under the new key.
    let fresh = Integrity::new(backend.secrets.clone(), secret.clone());
    fresh.verify(Table::Keys, &key_item().await).await.expect("key record verifies");
    assert_eq!(backend.keys().get(&key.id).await.unwrap(), Some(key.clone()));
    assert_eq!(backend.customers().entitlements(&customer).await.unwrap(), vec![aspirin]);
    assert_eq!(backend.clients().get(&client.id).await.unwrap().map(|c| c.id), Some(client.id.clone()));

    // A forged record (a raised role, its MAC made up) is never re-sealed.
    let mut forged = key_item().await;
    forged.attrs.insert("role".into(), serde_json::json!("admin"));
    store.put(Table::Keys, forged.clone(), Condition::Always).await.unwrap();
    time.store(t1 + 1_200, Ordering::SeqCst);
    rotation.rotate("int-0003").await.expect("rotation with a forged record in the store");
    assert_eq!(key_item().await, forged, "the forged record was left as it was");
    assert!(matches!(backend.keys().get(&key.id).await, Err(RepoError::Integrity(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_key_rotation_on_the_embedded_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    integrity_rotation_reseals_every_signed_record(
        Backend::embedded(dir.path(), Settings::default()).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_key_rotation_on_the_aws_backend() {
    let Some(endpoint) = aws::test_endpoint("integrity_key_rotation_on_the_aws_backend") else { return };
    let resources = AwsResources::with_prefix(&aws::unique_prefix("introt"));
    let sdk = aws::local_sdk_config(&endpoint).await;
    let backend = Backend::aws_with(&sdk, &resources, Settings::default(), true).await.expect("bootstrap");
    integrity_rotation_reseals_every_signed_record(backend).await;
}
