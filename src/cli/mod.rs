//! The command line: `serve` (the default), `demo`, `check`, `eval`, `test`, `bundle`,
//! `directory`, `token`, `completions`.

// The command line: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bundle_cmd;
mod directory;
mod eval;
mod test_cmd;
mod token;

use crate::config::Config;
use crate::dev::demo;
use crate::policy::{PolicySnapshot, TestLimits};
use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Refuses a configuration with a [dev] section: that is the demo's.
    ///
    /// Example: agentgate serve --config /etc/agentgate/agentgate.toml
    Serve(ServeArgs),
    /// Run the offline demo: the gateway with an in-process dev issuer and sample API.
    ///
    /// Needs a configuration with a [dev] section (the shipped one has it); prints
    /// ready-to-paste curl commands with freshly minted tokens.
    ///
    /// Example: agentgate demo
    Demo(ServeArgs),
    /// Validate the configuration, directory data and policies, and run the Rego tests.
    ///
    /// Exit status: 0 valid, 1 invalid, 2 usage error.
    ///
    /// With [policy.bundle] the bundle is fetched once (or read) and checked as the gateway
    /// would; --bundle FILE checks that bundle file instead.
    ///
    /// Example: agentgate check --config config/agentgate.toml --bundle bundle.tar.gz
    Check(CheckArgs),
    /// Show the decision the gateway would make for one request, and why.
    ///
    /// Uses the same routing, token validation, caller classification, input building and
    /// policy evaluation as the running gateway. Keys come from the configured tenants (fetched),
    /// from --jwks FILE, or are skipped with --no-verify (the result is then marked unverified).
    ///
    /// Examples:
    ///   agentgate eval --token @token.txt --method GET --path /orders/42
    ///   agentgate eval --token "$T" --method POST --path /orders --explain --format json
    Eval(Box<EvalArgs>),
    /// Run the Rego unit tests (rules named test_*) of a policy directory or bundle file.
    ///
    /// A bundle's signature is not checked here (`check` and the gateway check it).
    ///
    /// Examples:
    ///   agentgate test policies --coverage --run 'access' -v
    ///   agentgate test bundle.tar.gz
    Test(TestArgs),
    /// Work with policy bundles (OPA bundle format).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Work with tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read the agent directory from Microsoft Graph ([directory.graph]).
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Print shell completions.
    ///
    /// Example: agentgate completions bash > /etc/bash_completion.d/agentgate
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args, Clone)]
struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, default_value = "config/agentgate.toml")]
    config: PathBuf,
}

#[derive(Debug, Args, Clone)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Check this bundle file instead of the configured policy source.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Build a bundle from a policy directory: data/<name>.json becomes <name>/data.json.
    ///
    /// The same directory and options give the same bytes. The output file is replaced
    /// atomically.
    ///
    /// Example: agentgate bundle build policies -o bundle.tar.gz --revision "$(git rev-parse HEAD)" --signing-key bundle-key.pem
    Build {
        /// The policy directory.
        dir: PathBuf,
        /// Where to write the gzipped bundle.
        #[arg(short, long)]
        output: PathBuf,
        /// The manifest revision (default: the content hash of the policy files).
        #[arg(long)]
        revision: Option<String>,
        /// Sign with this PEM private key: RSA (RS256) or P-256 in PKCS#8 (ES256).
        #[arg(long)]
        signing_key: Option<PathBuf>,
    },
}

#[derive(Debug, Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Take over the listening sockets of a running instance (then send it SIGQUIT).
    #[arg(long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(long)]
    daemon: bool,
}

#[derive(Debug, Args)]
struct EvalArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The bearer token: the token itself, @FILE, or - for standard input.
    #[arg(long)]
    token: String,
    #[arg(long, default_value = "GET")]
    method: String,
    /// Path with optional query, e.g. /orders/42?expand=1.
    #[arg(long)]
    path: String,
    #[arg(long, default_value = "localhost")]
    host: String,
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: String,
    /// Evaluate at this time (RFC 3339, e.g. 2026-01-01T09:30:00Z) instead of now.
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    at: Option<std::time::SystemTime>,
    /// Show the policy lines evaluated and the caller's directory entries.
    #[arg(long)]
    explain: bool,
    /// Read the directory from Microsoft Graph once ([directory.graph]) and merge the
    /// policy set's directory file on top, as the gateway does; --explain then says where
    /// each directory value came from.
    #[arg(long)]
    graph: bool,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Verify signatures with this JWKS file instead of fetching the tenants' keys.
    #[arg(long, conflicts_with = "no_verify")]
    jwks: Option<PathBuf>,
    /// Do not verify the signature (prints a warning; the result is marked unverified).
    #[arg(long)]
    no_verify: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct TestArgs {
    /// The policy directory or bundle file (default: the configured directory, or
    /// ./policies).
    dir: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
    /// Report line coverage of each policy module, naming the lines never evaluated.
    #[arg(long)]
    coverage: bool,
    /// Only run tests whose name (data.package.test_name) matches this regular expression.
    #[arg(long)]
    run: Option<String>,
    /// List every test with its time, and show uncovered source lines.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a token's header and claims, its caller kind and what its facets mean.
    ///
    /// Nothing is verified unless --jwks is given.
    ///
    /// Example: agentgate token decode @token.txt --jwks jwks.json
    Decode {
        /// The token, @FILE, or - for standard input.
        token: String,
        /// Verify the signature and claims against this JWKS file.
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
    /// Mint a dev token signed with the dev key (development only).
    ///
    /// Example: agentgate token mint --kind agent_app --client dddddddd-4444-4444-4444-000000000001
    ///          --blueprint cccccccc-3333-3333-3333-000000000001 --role Orders.Read.All
    Mint(Box<MintArgs>),
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Read the directory from Graph once, merge the local directory file on top, validate,
    /// and write the result atomically.
    ///
    /// Example: agentgate directory sync --config config/agentgate.toml --out /var/lib/agentgate/directory.json
    Sync {
        #[command(flatten)]
        config: ConfigArg,
        /// Where to write the directory JSON (replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// Write Graph's directory alone, without the local overrides.
        #[arg(long)]
        graph_only: bool,
    },
    /// Show what a sync would change compared with the current directory file: entities
    /// added, removed and changed, with the fields.
    ///
    /// Example: agentgate directory diff --config config/agentgate.toml --against last-sync.json
    Diff {
        #[command(flatten)]
        config: ConfigArg,
        /// Compare with this directory file instead of the policy directory's data/directory.json.
        #[arg(long)]
        against: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
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
    /// Mint this many distinct tokens (each its own `uti`), one per line: load tests.
    #[arg(long, default_value_t = 1)]
    count: usize,
}

/// Runs the parsed command line; `Ok(false)` means "ran, but the answer is no" (exit 1).
pub fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        None => serve(cli.serve).map(|()| true),
        Some(Command::Serve(args)) => serve(args).map(|()| true),
        Some(Command::Demo(args)) => demo(args).map(|()| true),
        Some(Command::Check(args)) => check(&args).map(|()| true),
        Some(Command::Eval(args)) => eval_cmd(*args).map(|()| true),
        Some(Command::Test(args)) => {
            let config = Config::load(&args.config.config).ok();
            let dir = args.dir.unwrap_or_else(|| {
                config
                    .as_ref()
                    .map_or(PathBuf::from("policies"), |c| c.policy.dir.clone())
            });
            let per_test = config
                .as_ref()
                .map_or(TestLimits::PER_TEST, |c| c.policy.test_timeout);
            test_cmd::run(
                &dir,
                args.run.as_deref(),
                args.coverage,
                args.verbose,
                per_test,
            )
        }
        Some(Command::Bundle(BundleCommand::Build {
            dir,
            output,
            revision,
            signing_key,
        })) => bundle_cmd::build(&dir, &output, revision, signing_key.as_deref()).map(|()| true),
        Some(Command::Token(TokenCommand::Decode { token, jwks })) => {
            token::decode(&token, jwks.as_deref()).map(|()| true)
        }
        Some(Command::Token(TokenCommand::Mint(args))) => {
            let args = *args;
            let config = load(&args.config)?;
            let minted = token::mint(
                &config,
                token::MintOptions {
                    kind: args.kind,
                    client: args.client,
                    blueprint: args.blueprint,
                    subject: args.subject,
                    roles: args.roles,
                    scopes: args.scopes,
                    tenant: args.tenant,
                    aud: args.aud,
                    version: args.version,
                    ttl: args.ttl,
                    key: args.key,
                    count: args.count,
                },
            )?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for token in minted {
                writeln!(out, "{token}")?;
            }
            out.flush()?;
            Ok(true)
        }
        Some(Command::Directory(DirectoryCommand::Sync {
            config,
            out,
            graph_only,
        })) => directory::sync(&load(&config)?, &out, graph_only).map(|()| true),
        Some(Command::Directory(DirectoryCommand::Diff {
            config,
            against,
            format,
        })) => directory::diff_cmd(
            &load(&config)?,
            against.as_deref(),
            matches!(format, Format::Json),
        )
        .map(|()| true),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "agentgate",
                &mut std::io::stdout(),
            );
            Ok(true)
        }
    }
}

fn load(config: &ConfigArg) -> Result<Config> {
    Ok(Config::load(&config.config)?)
}

fn serve(args: ServeArgs) -> Result<()> {
    let config = load(&args.config)?;
    if config.dev.is_some() {
        anyhow::bail!(
            "{} has a [dev] section, which makes the gateway trust the committed dev key: it is for `agentgate demo` only. Remove [dev] to serve.",
            config.path.display()
        );
    }
    // Everything that can be refused is checked before any socket opens.
    let parts = crate::proxy::build_parts(&config, config.listeners.clone())?;
    start(&config, &args, parts)
}

fn demo(args: ServeArgs) -> Result<()> {
    let config = load(&args.config)?;
    let Some(dev) = &config.dev else {
        anyhow::bail!(
            "{} has no [dev] section; the demo needs one (see config/agentgate.toml)",
            config.path.display()
        );
    };
    // The TLS listener's certificate files live in a temporary directory as long as `tls`.
    let tls = dev
        .tls_listener
        .map(demo::DemoTls::create)
        .transpose()
        .context("failed to make the demo's TLS certificate")?;
    let mut listeners = config.listeners.clone();
    listeners.extend(tls.as_ref().map(|t| t.listener.clone()));
    // Everything that can be refused is checked before any socket opens.
    let parts = crate::proxy::build_parts(&config, listeners)?;
    demo::start(&config, dev, tls.as_ref()).context("failed to start the demo servers")?;
    let served = start(&config, &args, parts);
    // Shut down: the certificate directory goes with the demo.
    drop(tls);
    served
}

fn start(config: &Config, args: &ServeArgs, parts: crate::proxy::Parts) -> Result<()> {
    let opts = crate::proxy::RunOptions {
        upgrade: args.upgrade,
        daemon: args.daemon,
    };
    crate::proxy::run(config, opts, parts)?;
    Ok(())
}

fn check(args: &CheckArgs) -> Result<()> {
    let config = load(&args.config)?;
    let (files, manifest) = bundle_cmd::read_configured(&config, args.bundle.as_deref())?;
    let origin = match (&args.bundle, &config.policy.bundle) {
        (Some(file), _) => format!("bundle {}", file.display()),
        (None, Some(_)) => "the configured bundle".to_string(),
        (None, None) => config.policy.dir.display().to_string(),
    };
    let snapshot = PolicySnapshot::from_files(
        &files,
        config.policy.timeout,
        Some(TestLimits::per_test(config.policy.test_timeout)),
    )
    .with_context(|| format!("policy set in {origin}"))?;
    if let Some(shadow) = &config.shadow {
        PolicySnapshot::load(
            &shadow.dir,
            config.policy.timeout,
            Some(TestLimits::per_test(config.policy.test_timeout)),
        )
        .with_context(|| format!("shadow policy set in {}", shadow.dir.display()))?;
    }
    if config.dev.is_some() {
        println!(
            "note: [dev] makes this a demo configuration: `agentgate demo` runs it, `agentgate serve` refuses it"
        );
    }
    let bundle = manifest
        .map(|m| format!(", bundle revision {:?}", m.revision))
        .unwrap_or_default();
    println!(
        "ok: {} routes, {} tenants, policy revision {}{bundle}, {} blueprints, {} agents",
        config.routes.len(),
        config.identity.tenants.len(),
        snapshot.revision,
        snapshot.directory.blueprints.len(),
        snapshot.directory.agents.len(),
    );
    Ok(())
}

fn eval_cmd(args: EvalArgs) -> Result<()> {
    let config = load(&args.config)?;
    let keys = match (args.jwks, args.no_verify) {
        (Some(f), _) => eval::Keys::File(f),
        (None, true) => {
            eprintln!("WARNING: --no-verify: the token's signature is NOT checked; anyone could have made this token.");
            eval::Keys::NoVerify
        }
        (None, false) => eval::Keys::Configured,
    };
    let request = eval::EvalRequest {
        token: token::read_token(&args.token)?,
        method: args.method,
        path: args.path,
        host: args.host,
        client_ip: args.client_ip,
        at: args.at,
        explain: args.explain,
        graph: args.graph,
        keys,
    };
    let report = eval::evaluate(&config, &request)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", eval::render_text(&report)),
    }
    Ok(())
}
