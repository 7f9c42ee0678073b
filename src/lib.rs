//! agentgate: a policy-enforcement reverse proxy for AI agents that sign in with Microsoft
//! Entra Agent ID.
//!
//! The request path, module by module: [`proxy`] (pingora phases) -> [`authorize`] (the
//! transport-free pipeline) -> [`identity`] (keys, token validation, caller kinds) ->
//! [`directory`] (blueprints, agents, agent users) -> [`policy`] (input, Rego, decision).
//! Beside it, [`graph`] reads the directory from Microsoft Graph.

#![forbid(unsafe_code)]
// The request path must never panic; tests may.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

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
