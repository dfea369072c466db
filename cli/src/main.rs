//! `pharmagate`: run the whole API locally (`pharmagate dev`) and administer
//! the same data directory from scripts, whether the server runs or not.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pharmagate_cli::gateway::Gateway;
use pharmagate_cli::{import, seed, server};
use pharmagate_shared::aws::{self, AwsResources};
use pharmagate_shared::clock::{now_secs, rfc3339};
use pharmagate_shared::config::{Backend, BackendKind, Settings, validate_issuer};
use pharmagate_shared::domain::client::{parse_scope_list, scope_text, validate_grant};
use pharmagate_shared::domain::{Cas, ClientId, CustomerId, KeyId, Role, Tier};
use pharmagate_shared::jwt::SigningKey;
use pharmagate_shared::metrics::MetricsTarget;
use pharmagate_shared::ports::Stage;
use pharmagate_shared::repo::AuditRepo;
use pharmagate_shared::repo::clients::{NewClient, validate_name as validate_client_name};
use pharmagate_shared::repo::keys::{NewKey, expiry_after_days, validate_label};
use pharmagate_shared::repo::{DEFAULT_GRACE_SECS, validate_grace};
use pharmagate_shared::rotation::{self, RotationError};
use pharmagate_shared::{integrity, lifecycle};

#[derive(Parser)]
#[command(
    name = "pharmagate",
    version,
    about = "pharmagate: the secure API for an active-pharmaceutical-ingredient catalog, run locally and administered"
)]
struct Cli {
    /// Data directory of the embedded backend (database and master key).
    #[arg(long, global = true, env = "PHARMAGATE_DATA_DIR", default_value = ".pharmagate")]
    data_dir: PathBuf,
    /// Backend behind the ports: `embedded` (the data directory) or `aws`
    /// (DynamoDB, KMS and Secrets Manager at the endpoint the standard AWS
    /// environment names, e.g. AWS_ENDPOINT_URL, AWS_REGION).
    #[arg(long, global = true, env = "PHARMAGATE_BACKEND", default_value = "embedded",
          value_parser = ["embedded", "aws"])]
    backend: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the whole API on loopback through the local API Gateway.
    Dev {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on (0 picks a free one).
        #[arg(long, env = "PHARMAGATE_PORT", default_value_t = 8080)]
        port: u16,
        /// Stage name; URLs may start with /<stage>/ like execute-api URLs.
        #[arg(long, default_value = "dev")]
        stage: String,
        /// Seconds the gateway caches an authorizer answer per key (0: off).
        #[arg(long, default_value_t = 0)]
        authorizer_cache_ttl: u64,
        /// Seconds a client may take to send a request body (then 408).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        body_timeout: u64,
        /// Seconds a client may take to send a request's headers, and a
        /// kept-alive connection may stay idle (then it is closed).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        header_timeout: u64,
        /// Open connections allowed from one source address (more are closed at once).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_connections_per_address: u64,
        /// Open connections allowed in all (more are closed at once); lowered
        /// to fit the process's open-file limit.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_connections: u64,
        /// Append CloudWatch EMF metric lines to this file (default: no
        /// metrics, unless PHARMAGATE_METRICS says otherwise).
        #[arg(long)]
        metrics_file: Option<PathBuf>,
        /// Rotate the token signing key every this many seconds, as the
        /// Secrets Manager schedule does in AWS (0: never). A rotation that
        /// would withdraw a key whose tokens may still be valid waits.
        #[arg(long, default_value_t = 0)]
        rotate_every: u64,
        /// Run the API-key lifecycle job every this many seconds (0: never).
        #[arg(long, default_value_t = 3600)]
        jobs_every: u64,
    },
    /// Rotate a secret now, through the same four steps the rotation
    /// function runs for Secrets Manager.
    Rotate {
        /// `signing`: the token signing key; `integrity`: the key that signs
        /// authorization records (every record is re-sealed under the new key).
        #[arg(long, default_value = "signing", value_parser = ["signing", "integrity"])]
        secret: String,
        /// The current key leaked: replace it at once and withdraw it, so
        /// what it signed stops being accepted (within the readers' cache time).
        #[arg(long)]
        compromised: bool,
    },
    /// Scheduled jobs, run once now.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Issue, revoke and list API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Maintain the product catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Grant and revoke customers' entitlements to manufacturing data.
    #[command(subcommand)]
    Entitlements(EntitlementsCommand),
    /// Create, list and delete OAuth clients; rotate their secrets.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// AWS backend maintenance.
    #[command(subcommand)]
    Aws(AwsCommand),
}

#[derive(Subcommand)]
enum JobsCommand {
    /// The API-key lifecycle sweep: expire dead keys, flag keys older than
    /// PHARMAGATE_KEY_ROTATE_AFTER_DAYS (default 90) for rotation, purge
    /// expired items.
    Run,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every hash chain and index entry; report the first break of
    /// each broken stream (exit status 1).
    Verify,
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Create a client; prints its id and secret. The secret is shown once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        customer: String,
        /// Space- or comma-separated scopes, e.g. "catalog:read manufacturing:read".
        #[arg(long)]
        scopes: String,
        #[arg(long, default_value = "free")]
        tier: String,
        /// Choose the client id instead of generating one.
        #[arg(long)]
        id: Option<String>,
    },
    /// List clients (id, customer, tier, scopes, name), never secrets.
    List {
        #[arg(long)]
        customer: Option<String>,
    },
    /// Delete a client; its tokens stop working at once.
    Delete { id: String },
    /// Give a client a new secret (printed once); the old one works for the
    /// grace period (default one day, like the API; 0 ends it and every token
    /// minted with it at once).
    RotateSecret {
        id: String,
        #[arg(long, default_value_t = DEFAULT_GRACE_SECS)]
        grace_seconds: i64,
    },
}

#[derive(Subcommand)]
enum AwsCommand {
    /// Create the tables (with TTL), the KMS key alias and the integrity
    /// secret named by the environment, where missing. For local servers
    /// such as moto; in an AWS account the SAM template creates them.
    Bootstrap,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key and print it (alone) on stdout. It is shown only once.
    Issue {
        #[arg(long)]
        customer: String,
        #[arg(long, default_value = "customer")]
        role: String,
        #[arg(long, default_value = "free")]
        tier: String,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
    /// Revoke a key now, by id.
    Revoke { id: String },
    /// List keys (id, customer, role, tier, status), never secrets.
    List {
        #[arg(long)]
        customer: Option<String>,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Import products from a TSV file shaped like the seed file.
    Import { file: PathBuf },
}

#[derive(Subcommand)]
enum EntitlementsCommand {
    Grant {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        cas: String,
    },
    Revoke {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        cas: String,
    },
    List {
        #[arg(long)]
        customer: String,
    },
}

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    pharmagate_shared::telemetry::init_pretty();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let backend = open_backend(&cli).await?;
    match cli.command {
        Command::Dev {
            host,
            port,
            stage,
            authorizer_cache_ttl,
            body_timeout,
            header_timeout,
            max_connections_per_address,
            max_connections,
            rotate_every,
            jobs_every,
            ..
        } => {
            let timeouts = (Duration::from_secs(authorizer_cache_ttl), Duration::from_secs(body_timeout));
            let limits = server::Limits {
                header_timeout: Duration::from_secs(header_timeout),
                per_address: max_connections_per_address as usize,
                total: max_connections as usize,
            }
            .within_open_file_limit();
            schedule(&backend, rotate_every, jobs_every);
            dev(&backend, &host, port, &stage, timeouts, limits).await?;
        }
        Command::Rotate { secret, compromised } => rotate(&backend, &secret, compromised).await?,
        Command::Jobs(JobsCommand::Run) => {
            let report = lifecycle::sweep(
                &backend.keys(),
                backend.store.as_ref(),
                &backend.settings.lifecycle,
                now_secs(),
            )
            .await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Audit(AuditCommand::Verify) => return audit_verify(&backend).await,
        Command::Keys(cmd) => keys(&backend, cmd).await?,
        Command::Catalog(CatalogCommand::Import { file }) => return catalog_import(&backend, &file).await,
        Command::Entitlements(cmd) => entitlements(&backend, cmd).await?,
        Command::Clients(cmd) => clients(&backend, cmd).await?,
        Command::Aws(AwsCommand::Bootstrap) => eprintln!("AWS resources are in place"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The backend the command runs on. On AWS, `aws bootstrap` creates the
/// resources, and so does `dev` when the endpoint is on this machine (a
/// local server, never a real account).
async fn open_backend(cli: &Cli) -> Result<Backend, Failure> {
    let mut settings = Settings::from_env()?;
    if let Command::Dev { metrics_file, .. } = &cli.command {
        settings.metrics = dev_metrics(metrics_file.as_deref(), &settings.metrics)?;
    }
    match BackendKind::parse(&cli.backend)? {
        BackendKind::Embedded => Ok(Backend::embedded(&cli.data_dir, settings)?),
        BackendKind::Aws => {
            let bootstrap = match cli.command {
                Command::Aws(AwsCommand::Bootstrap) => true,
                Command::Dev { .. } => aws::is_local_endpoint(),
                _ => false,
            };
            Ok(Backend::aws(&AwsResources::from_env()?, settings, bootstrap).await?)
        }
    }
}

/// Where `dev` writes metric lines: the file given (checked now, so a bad
/// path fails at start), else what `PHARMAGATE_METRICS` says, else nowhere:
/// EMF lines on the console would drown the readable log.
fn dev_metrics(file: Option<&std::path::Path>, configured: &MetricsTarget) -> Result<MetricsTarget, Failure> {
    match file {
        Some(path) => {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--metrics-file {}: {e}", path.display()))?;
            Ok(MetricsTarget::File(path.to_path_buf()))
        }
        None if std::env::var_os("PHARMAGATE_METRICS").is_some() => Ok(configured.clone()),
        None => Ok(MetricsTarget::Off),
    }
}

/// `pharmagate audit verify`: exit status 1 at the first break of any chain.
async fn audit_verify(backend: &Backend) -> Result<ExitCode, Failure> {
    let retention_secs = backend.settings.audit_retention_days * 86_400;
    let report = AuditRepo::new(backend.store.clone(), retention_secs).verify(now_secs()).await?;
    let mut out = std::io::stdout();
    for broken in &report.breaks {
        writeln!(out, "chain broken: {broken}")?;
    }
    let summary = format!(
        "{} records in {} streams, {} index entries",
        report.records, report.streams, report.index_entries
    );
    if report.breaks.is_empty() {
        writeln!(out, "audit trail intact: {summary}")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "audit trail BROKEN in {} of {} streams ({summary})",
            report.breaks.len(),
            report.streams
        )?;
        Ok(ExitCode::FAILURE)
    }
}

/// `timeouts`: the authorizer cache TTL and the request-body timeout.
async fn dev(
    backend: &Backend,
    host: &str,
    port: u16,
    stage: &str,
    timeouts: (Duration, Duration),
    limits: server::Limits,
) -> Result<(), Failure> {
    let valid_stage = !stage.is_empty()
        && stage.len() <= 32
        && stage.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_stage {
        return Err("--stage must be 1-32 characters of letters, digits and _".into());
    }
    // Bind first: if the port is taken, fail before seeding, so the keys
    // shown once are never printed by a run that cannot serve.
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}: {e} (choose another with --port)"))?;
    let address = listener.local_addr()?;
    // Tokens name the gateway they came from, unless configured otherwise;
    // bound to a non-loopback address, say which URL clients use.
    let mut backend = backend.clone();
    if std::env::var_os("PHARMAGATE_ISSUER").is_none() {
        backend.settings.issuer = validate_issuer(&format!("http://{address}")).map_err(|_| {
            format!(
                "listening on {address}, not loopback: set PHARMAGATE_ISSUER to the https URL clients use"
            )
        })?;
    }
    let mut out = std::io::stdout();
    match seed::ensure_seeded(&backend).await? {
        Some(keys) => {
            writeln!(
                out,
                "Seeded the catalog (114 products, sample manufacturing data) in this data directory."
            )?;
            writeln!(out, "These keys are shown once; keep them now:")?;
            writeln!(out, "admin key: {}", keys.admin.expose())?;
            writeln!(out, "demo customer key: {}", keys.demo.expose())?;
        }
        None => writeln!(
            out,
            "Using the existing data; keys were shown at first start (issue more with `pharmagate keys issue`)."
        )?,
    }
    if backend.signing_keys().bootstrap().await? {
        writeln!(out, "Made the first token signing key.")?;
    }
    let gateway = Gateway::new(&backend, stage, timeouts.0)
        .with_domain(&address.to_string())
        .with_body_timeout(timeouts.1);
    let gateway = Arc::new(gateway);
    writeln!(out, "pharmagate listening on http://{address}")?;
    out.flush()?;
    server::serve(listener, gateway, limits, shutdown_signal()).await?;
    writeln!(out, "pharmagate stopped")?;
    Ok(())
}

/// `pharmagate rotate`: the four steps now (or the compromised-key
/// rotation), then what the secret holds.
async fn rotate(backend: &Backend, secret: &str, compromised: bool) -> Result<(), Failure> {
    let rotation = if secret == "integrity" {
        integrity::ensure_key(backend.secrets.as_ref(), backend.integrity.secret_id()).await?;
        backend.integrity_rotation()
    } else {
        backend.signing_keys().bootstrap().await?;
        backend.signing_rotation()
    };
    let token = rotation::new_token(now_secs());
    if compromised {
        rotation.rotate_compromised(&token).await?;
    } else {
        rotation.rotate(&token).await?;
    }
    let mut out = std::io::stdout();
    writeln!(out, "rotated {} (version {token})", rotation.secret_id())?;
    for stage in Stage::ALL {
        let Some(version) = backend.secrets.get_stage(rotation.secret_id(), stage).await? else { continue };
        if secret == "integrity" {
            writeln!(out, "{}: version {}", stage.as_str(), version.version_id)?;
            continue;
        }
        let key = SigningKey::from_secret(&version.value)?;
        let from = key.sign_from().map(|t| format!(", signs from {}", rfc3339(t))).unwrap_or_default();
        writeln!(out, "{}: key {} (version {}){from}", stage.as_str(), key.kid(), version.version_id)?;
    }
    Ok(())
}

/// `dev`'s background schedules: signing-key rotation and the key lifecycle
/// job, like the Secrets Manager and EventBridge schedules in AWS.
fn schedule(backend: &Backend, rotate_every: u64, jobs_every: u64) {
    if rotate_every > 0 {
        let backend = backend.clone();
        tokio::spawn(every(rotate_every, move || {
            let backend = backend.clone();
            async move {
                let rotation = backend.signing_rotation();
                match rotation.rotate(&rotation::new_token(now_secs())).await {
                    Ok(()) => tracing::info!(secret = rotation.secret_id(), "scheduled rotation done"),
                    Err(e @ RotationError::TooSoon { .. }) => tracing::info!("scheduled rotation waits: {e}"),
                    Err(e) => tracing::error!("scheduled rotation failed: {e}"),
                }
            }
        }));
    }
    if jobs_every > 0 {
        let backend = backend.clone();
        tokio::spawn(every(jobs_every, move || {
            let backend = backend.clone();
            async move {
                let keys = backend.keys();
                let policy = backend.settings.lifecycle;
                if let Err(e) = lifecycle::sweep(&keys, backend.store.as_ref(), &policy, now_secs()).await {
                    tracing::error!("key lifecycle job failed: {e}");
                }
            }
        }));
    }
}

/// Runs `job` every `secs` seconds, the first time `secs` from now.
async fn every<F, Fut>(secs: u64, job: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let period = Duration::from_secs(secs);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        job().await;
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {},
    }
}

async fn keys(backend: &Backend, cmd: KeysCommand) -> Result<(), Failure> {
    let repo = backend.keys();
    match cmd {
        KeysCommand::Issue { customer, role, tier, label, expires_in_days } => {
            let expires_at = expires_in_days.map(expiry_after_days).transpose();
            let expires_at = expires_at.map_err(|e| format!("--expires-in-days: {e}"))?;
            let new = NewKey {
                customer: CustomerId::parse(&customer).map_err(|e| format!("--customer: {e}"))?,
                role: role.parse::<Role>().map_err(|e| format!("--role: {e}"))?,
                tier: tier.parse::<Tier>().map_err(|e| format!("--tier: {e}"))?,
                label: label.map(|l| validate_label(&l)).transpose().map_err(|e| format!("--label: {e}"))?,
                expires_at,
            };
            let (key, record) = repo.issue(new, None).await?;
            eprintln!("issued key {} for {} ({}, {})", record.id, record.customer, record.role, record.tier);
            println!("{}", key.expose());
        }
        KeysCommand::Revoke { id } => {
            let id = KeyId::parse(&id).map_err(|e| format!("key id: {e}"))?;
            match repo.revoke(&id).await? {
                Some(_) => eprintln!("revoked key {id}"),
                None => return Err(format!("no key with id {id}").into()),
            }
        }
        KeysCommand::List { customer } => {
            let customer = customer
                .map(|c| CustomerId::parse(&c))
                .transpose()
                .map_err(|e| format!("--customer: {e}"))?;
            let now = now_secs();
            let mut after = None;
            loop {
                let (records, next) = repo.list_page(customer.as_ref(), after, 100).await?;
                for r in records {
                    let due = if r.rotation_due_since.is_some() { "\trotation due" } else { "" };
                    println!("{}\t{}\t{}\t{}\t{:?}{due}", r.id, r.customer, r.role, r.tier, r.status(now));
                }
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
    }
    Ok(())
}

async fn catalog_import(backend: &Backend, file: &std::path::Path) -> Result<ExitCode, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let rows = import::parse_tsv(&text)?;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(rows.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = import::import(&backend.catalog(), rows, || bar.inc(1)).await?;
    bar.finish_and_clear();
    for (line, reason) in &report.rejected {
        eprintln!("line {line}: {reason}");
    }
    println!(
        "imported {}: {} created, {} updated, {} unchanged, {} rejected",
        file.display(),
        report.created,
        report.updated,
        report.unchanged,
        report.rejected.len()
    );
    Ok(if report.rejected.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn entitlements(backend: &Backend, cmd: EntitlementsCommand) -> Result<(), Failure> {
    let repo = backend.customers();
    let customer_of = |c: &str| CustomerId::parse(c).map_err(|e| format!("--customer: {e}"));
    let cas_of = |c: &str| Cas::parse(c).map_err(|e| format!("--cas: {e}"));
    match cmd {
        EntitlementsCommand::Grant { customer, cas } => {
            let cas = cas_of(&cas)?;
            if backend.catalog().get(cas).await?.is_none() {
                eprintln!("note: {cas} is not in the catalog (yet); the entitlement applies once it is");
            }
            repo.grant(&customer_of(&customer)?, cas).await?;
        }
        EntitlementsCommand::Revoke { customer, cas } => {
            repo.revoke(&customer_of(&customer)?, cas_of(&cas)?).await?
        }
        EntitlementsCommand::List { customer } => {
            for cas in repo.entitlements(&customer_of(&customer)?).await? {
                println!("{cas}");
            }
        }
    }
    Ok(())
}

async fn clients(backend: &Backend, cmd: ClientsCommand) -> Result<(), Failure> {
    let repo = backend.clients();
    let mut out = std::io::stdout();
    match cmd {
        ClientsCommand::Create { name, customer, scopes, tier, id } => {
            let scopes = parse_scope_list(&scopes.replace(',', " ")).map_err(|m| format!("--scopes: {m}"))?;
            validate_grant(&scopes).map_err(|m| format!("--scopes: {m}"))?;
            let new = NewClient {
                id: id.as_deref().map(ClientId::parse).transpose().map_err(|m| format!("--id: {m}"))?,
                name: validate_client_name(&name).map_err(|m| format!("--name: {m}"))?,
                customer: CustomerId::parse(&customer).map_err(|m| format!("--customer: {m}"))?,
                tier: tier.parse::<Tier>().map_err(|m| format!("--tier: {m}"))?,
                scopes,
            };
            let (secret, record) = repo.create(new).await?;
            writeln!(out, "client_id: {}", record.id)?;
            writeln!(out, "client_secret: {}", secret.expose())?;
        }
        ClientsCommand::List { customer } => {
            let customer = customer.as_deref().map(CustomerId::parse).transpose()?;
            let mut after = None;
            loop {
                let (records, next) = repo.list_page(customer.as_ref(), after, 100).await?;
                for r in &records {
                    let scopes = scope_text(&r.scopes);
                    writeln!(out, "{}\t{}\t{}\t{}\t{}", r.id, r.customer, r.tier, scopes, r.name)?;
                }
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        ClientsCommand::Delete { id } => {
            if !repo.delete(&ClientId::parse(&id)?).await? {
                return Err(format!("no client {id}").into());
            }
        }
        ClientsCommand::RotateSecret { id, grace_seconds } => {
            validate_grace(grace_seconds).map_err(|m| format!("--grace-seconds: {m}"))?;
            let (secret, _) = repo
                .rotate_secret(&ClientId::parse(&id)?, grace_seconds)
                .await?
                .ok_or(format!("no client {id}"))?;
            writeln!(out, "client_secret: {}", secret.expose())?;
        }
    }
    Ok(())
}
