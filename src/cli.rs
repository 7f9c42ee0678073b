//! The command line: `serve` (the default), `check`, and `token mint`.

use crate::config::Config;
use crate::dev::demo;
use crate::dev::TokenSpec;
use crate::identity::CallerKind;
use crate::policy::PolicySnapshot;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Policy-enforcement reverse proxy for AI agents that sign in with Microsoft Entra Agent ID.
#[derive(Debug, Parser)]
#[command(name = "agentgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default when no command is given).
    ///
    /// Example: agentgate serve --config config/agentgate.toml
    Serve(ServeArgs),
    /// Validate the configuration, directory data and policies, and run the Rego tests.
    ///
    /// Example: agentgate check --config config/agentgate.toml
    Check(ConfigArg),
    /// Work with tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args, Clone)]
struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, default_value = "config/agentgate.toml")]
    config: PathBuf,
}

#[derive(Debug, Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Take over the listening sockets of a running instance (after sending it SIGQUIT).
    #[arg(long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(long)]
    daemon: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a dev token signed with the dev key (development only).
    ///
    /// Example: agentgate token mint --kind agent_app --client dddddddd-4444-4444-4444-000000000001
    ///          --blueprint cccccccc-3333-3333-3333-000000000001 --role Orders.Read.All
    Mint(Box<MintArgs>),
}

#[derive(Debug, Args)]
struct MintArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Caller kind: agent_app, agent_obo, agent_user, app, user, app_obo_agent_user.
    #[arg(long, default_value = "agent_app")]
    kind: String,
    /// Client id: the agent identity for agent kinds, the application otherwise.
    #[arg(long)]
    client: String,
    /// Blueprint app id (agent kinds).
    #[arg(long)]
    blueprint: Option<String>,
    /// User or agent user object id (delegated kinds).
    #[arg(long)]
    subject: Option<String>,
    /// App role (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Delegated scope (repeatable).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Tenant id (default: the first configured tenant).
    #[arg(long)]
    tenant: Option<String>,
    /// Audience (default: the first route's first audience).
    #[arg(long)]
    aud: Option<String>,
    /// Token version: 1.0 or 2.0.
    #[arg(long, default_value = "1.0")]
    version: String,
    /// Lifetime, e.g. 1h or 90m.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Signing key (default: the [dev] key of the configuration).
    #[arg(long)]
    key: Option<PathBuf>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Token(TokenCommand::Mint(args))) => mint(args),
    }
}

fn load(config: &ConfigArg) -> Result<Config> {
    Ok(Config::load(&config.config)?)
}

fn serve(args: ServeArgs) -> Result<()> {
    let config = load(&args.config)?;
    // Everything that can be refused is checked before any socket opens.
    let parts = crate::proxy::build_parts(&config)?;
    if let Some(dev) = &config.dev {
        demo::start(&config, dev).context("failed to start the demo servers")?;
    }
    let opts = crate::proxy::RunOptions {
        upgrade: args.upgrade,
        daemon: args.daemon,
    };
    crate::proxy::run(&config, opts, parts)?;
    Ok(())
}

fn check(args: &ConfigArg) -> Result<()> {
    let config = load(args)?;
    let snapshot = PolicySnapshot::load(&config.policy.dir, config.policy.timeout, true)
        .with_context(|| format!("policy set in {}", config.policy.dir.display()))?;
    println!(
        "ok: {} routes, {} tenants, policy revision {}, {} blueprints, {} agents",
        config.routes.len(),
        config.identity.tenants.len(),
        snapshot.revision,
        snapshot.directory.blueprints.len(),
        snapshot.directory.agents.len(),
    );
    Ok(())
}

fn mint(args: Box<MintArgs>) -> Result<()> {
    let args = *args;
    let config = load(&args.config)?;
    let Some(kind) = CallerKind::parse(&args.kind) else {
        bail!("unknown kind {:?}: use one of agent_app, agent_obo, agent_user, app, user, app_obo_agent_user", args.kind);
    };
    let key_path = match (&args.key, &config.dev) {
        (Some(k), _) => k.clone(),
        (None, Some(dev)) => dev.key.clone(),
        (None, None) => bail!("no signing key: pass --key or add a [dev] section with key = ..."),
    };
    let pem = std::fs::read(&key_path)
        .with_context(|| format!("failed to read {}", key_path.display()))?;
    let key = crate::dev::SigningIdentity::from_pem(&pem)?;
    let spec = TokenSpec {
        kind,
        tenant: match args.tenant {
            Some(t) => t,
            None => config
                .identity
                .tenants
                .first()
                .map(|t| t.id.clone())
                .context("no tenant configured")?,
        },
        version: args.version,
        audience: match args.aud {
            Some(a) => a,
            None => config
                .routes
                .first()
                .and_then(|r| r.audiences.first().cloned())
                .context("no route audience configured; pass --aud")?,
        },
        client: args.client,
        blueprint: args.blueprint,
        subject: args.subject,
        roles: args.roles,
        scopes: args.scopes,
        issued_at: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        lifetime_secs: args.ttl.as_secs(),
        extra: Default::default(),
    };
    println!("{}", key.sign(&spec.claims())?);
    Ok(())
}
