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
use pharmagate_shared::clock::now_secs;
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{Cas, CustomerId, KeyId, Role, Tier};
use pharmagate_shared::repo::keys::{NewKey, expiry_after_days, validate_label};

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
    },
    /// Issue, revoke and list API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Maintain the product catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Grant and revoke customers' entitlements to manufacturing data.
    #[command(subcommand)]
    Entitlements(EntitlementsCommand),
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
    let backend = Backend::embedded(&cli.data_dir, Settings::from_env()?)?;
    match cli.command {
        Command::Dev { host, port, stage, authorizer_cache_ttl, body_timeout } => {
            let timeouts = (Duration::from_secs(authorizer_cache_ttl), Duration::from_secs(body_timeout));
            dev(&backend, &host, port, &stage, timeouts).await?;
        }
        Command::Keys(cmd) => keys(&backend, cmd).await?,
        Command::Catalog(CatalogCommand::Import { file }) => return catalog_import(&backend, &file).await,
        Command::Entitlements(cmd) => entitlements(&backend, cmd).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `timeouts`: the authorizer cache TTL and the request-body timeout.
async fn dev(
    backend: &Backend,
    host: &str,
    port: u16,
    stage: &str,
    timeouts: (Duration, Duration),
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
    let mut out = std::io::stdout();
    match seed::ensure_seeded(backend).await? {
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
    let address = listener.local_addr()?;
    let gateway = Gateway::new(backend, stage, timeouts.0)
        .with_domain(&address.to_string())
        .with_body_timeout(timeouts.1);
    let gateway = Arc::new(gateway);
    writeln!(out, "pharmagate listening on http://{address}")?;
    out.flush()?;
    server::serve(listener, gateway, shutdown_signal()).await?;
    writeln!(out, "pharmagate stopped")?;
    Ok(())
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
                    println!("{}\t{}\t{}\t{}\t{:?}", r.id, r.customer, r.role, r.tier, r.status(now));
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
