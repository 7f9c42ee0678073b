//! agentgate: a policy-enforcement reverse proxy for AI agents that sign in with Microsoft
//! Entra Agent ID.
//!
//! The request path, module by module: [`proxy`] (pingora phases) -> [`authorize`] (the
//! transport-free pipeline) -> [`identity`] (keys, token validation, caller kinds) ->
//! [`directory`] (blueprints, agents, agent users) -> [`policy`] (input, Rego, decision).
//! Beside it, [`graph`] reads the directory from Microsoft Graph.

// Unsafe code only where a system interface has no safe form, each use allowed where it is
// and justified (the stream guard duplicating an upstream socket pingora hands over).
#![deny(unsafe_code)]
// The request path must never panic.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// No stubs or debugging leftovers; the project's own rules (clippy.toml): one clock, no
// blocking locks shared by workers; no lock held across an await; the library prints
// nothing (the command line and the demo say so where they do).
#![deny(
    clippy::todo,
    clippy::unimplemented,
    clippy::dbg_macro,
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::await_holding_lock,
    clippy::print_stdout,
    clippy::print_stderr,
    rust_2018_idioms
)]
// Tests may panic, lock and unwrap.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::disallowed_types
    )
)]

pub mod authorize;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dev;
pub mod directory;
pub mod entra;
pub mod graph;
pub mod guid;
pub mod identity;
pub mod outcome;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod routes;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
