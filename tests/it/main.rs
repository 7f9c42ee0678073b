//! Integration tests: the real `agentgate` binary on loopback, with an in-process dev issuer
//! (OIDC discovery + JWKS) and an echo upstream. Every test starts its own gateway on fresh
//! ports, so tests run in parallel.

// Tests and tools may lock and read the clock as they like: the rules are for the gateway.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

mod attacks;
mod bundles;
mod caller_kinds;
mod cli;
mod decision_cache;
mod demo;
mod fixtures;
mod graph;
mod grpc;
mod http2;
mod http_abuse;
mod input_schema;
mod key_faults;
mod keys;
mod kubernetes;
mod operations;
mod path_confusion;
mod policy_rules;
mod proxy_protocol;
mod proxying;
mod rego;
mod streams;
mod tls;
mod token_checks;
mod upstream_tls;
mod wycheproof;
