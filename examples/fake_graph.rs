//! The fake Microsoft Graph (src/dev/graph/) on its own, serving a synthetic tenant: what
//! the directory sync benchmark (`benches/graph-sync/run`) reads, and a Graph to try
//! `agentgate directory sync` against by hand.
//!
//! Usage:
//!   cargo run --release --example fake_graph -- --blueprints 1000 --agents-per-blueprint 100
//!
//! Serves HTTPS with a certificate from a CA it makes at start and writes to `--ca-out`
//! (agentgate reaches Graph over https:// only: point `directory.graph.ca_file` at it).
//! Prints `listening https://ADDR` once it accepts connections, then serves until killed.
//! The token endpoint accepts `--client-id` with the secret in `--secret-file`.

// Tests and tools may lock and read the clock as they like: the rules are for the gateway.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use agentgate::dev::graph::{serve_graph_tls, FakeCredentials, FakeTenant, GraphState, Synthetic};
use agentgate::dev::tls::TestCa;
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    #[arg(long, default_value = "aaaaaaaa-1111-1111-1111-000000000001")]
    tenant: String,
    #[arg(long, default_value = "bbbbbbbb-2222-2222-2222-0000000000c1")]
    client_id: String,
    /// File holding the client secret the token endpoint accepts.
    #[arg(long)]
    secret_file: PathBuf,
    /// Where to write the PEM of the CA that issued the served certificate.
    #[arg(long)]
    ca_out: PathBuf,
    #[arg(long, default_value_t = 1000)]
    blueprints: usize,
    #[arg(long, default_value_t = 100)]
    agents_per_blueprint: usize,
    /// Every Nth agent has an agent user (0: none).
    #[arg(long, default_value_t = 10)]
    agent_user_every: usize,
    /// Every Nth agent is at risk (0: none).
    #[arg(long, default_value_t = 100)]
    risky_every: usize,
    /// Objects per page, at most (Graph's own limit is 999).
    #[arg(long, default_value_t = 999)]
    page_size: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let secret = std::fs::read_to_string(&args.secret_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        let ca = TestCa::named("fake Graph CA")?;
        std::fs::write(&args.ca_out, &ca.cert_pem)?;
        let tls = ca.issue(&["127.0.0.1", "localhost"])?.server_config(None)?;
        let tenant = FakeTenant {
            synthetic: Some(Synthetic {
                blueprints: args.blueprints,
                agents_per_blueprint: args.agents_per_blueprint,
                agent_user_every: args.agent_user_every,
                risky_every: args.risky_every,
            }),
            ..FakeTenant::default()
        };
        let state = GraphState::new(
            listener.local_addr()?,
            &args.tenant,
            FakeCredentials {
                client_id: args.client_id.clone(),
                client_secret: Some(secret.trim_end().to_string()),
                ..FakeCredentials::default()
            },
            tenant,
        )?;
        state.set_page_size(args.page_size);
        println!("listening https://{}", state.addr);
        std::io::stdout().flush()?;
        serve_graph_tls(listener, tls, state).await?;
        Ok(())
    })
}
