//! `agentgate eval`: the decision the running gateway would make for one request, with the
//! same routing, validation, classification, input building and policy code as the proxy.

use crate::authorize::{Authenticated, Authorizer};
use crate::config::{Config, IdentityConfig, KeySource};
use crate::graph::{EntityKind, MergeOptions, MergedDirectory};
use crate::identity::{KeyStore, TokenValidator};
use crate::outcome::{Outcome, Refusal, RequestError};
use crate::policy::input::RequestFacts;
use crate::policy::PolicySnapshot;
use crate::reload::with_graph_directory;
use crate::routes::RouteTable;
use crate::snapshot::Snapshot;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where `eval` takes signing keys from.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Fetch from the configured tenants, as the gateway does.
    Configured,
    /// A JWKS file for every configured tenant.
    File(PathBuf),
    /// No signature check at all; the result is marked unverified.
    NoVerify,
}

/// One request to evaluate.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub token: String,
    pub method: String,
    pub path: String,
    pub host: String,
    pub client_ip: String,
    pub at: Option<SystemTime>,
    pub explain: bool,
    /// Merge the directory read from Graph under the set's file, as the gateway does.
    pub graph: bool,
    pub keys: Keys,
}

/// Evaluates the request and returns the report as JSON (the text form is derived from it).
pub fn evaluate(config: &Config, req: &EvalRequest) -> Result<Value> {
    let at = req.at.unwrap_or_else(crate::clock::now);
    if at < UNIX_EPOCH {
        anyhow::bail!("--at is before 1970");
    }
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let mut report = json!({
        "verified": !matches!(req.keys, Keys::NoVerify),
        "request": {"method": req.method, "host": req.host, "path": path, "query": query, "client_ip": req.client_ip},
    });
    let Ok(uri) = req.path.parse::<http::Uri>() else {
        return Ok(refused(
            report,
            &Refusal::Request(RequestError::InvalidPath),
        ));
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(host) = req.host.parse() {
        headers.insert(http::header::HOST, host);
    }
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", req.token)
            .parse()
            .context("the token is not a valid header value")?,
    );
    let target = match crate::request::read(
        &uri,
        req.path.as_bytes(),
        true,
        &headers,
        http::Version::HTTP_11,
        config.server.max_uri_bytes,
    ) {
        Ok(t) => t,
        Err(e) => return Ok(refused(report, &Refusal::Request(e.into()))),
    };
    report["request"]["host"] = json!(target.host);
    report["request"]["path"] = json!(target.path);
    // The set the gateway enforces: the configured bundle, or the policy directory.
    let (mut files, manifest) = super::bundle_cmd::read_configured(config, None)?;
    let merged = if req.graph {
        let graph = super::directory::read_graph(config)?;
        let merged = with_graph_directory(&mut files, &graph, MergeOptions::default())?;
        report["directory"] = json!({"graph": true, "revision": merged.revision});
        Some(merged)
    } else {
        None
    };
    let policy = PolicySnapshot::from_files(&files, config.policy.timeout, None)
        .with_context(|| format!("policy set in {}", config.policy.dir.display()))?;
    let snapshot = Snapshot {
        routes: RouteTable::new(&config.routes)?,
        policy: Arc::new(policy),
        shadow: None,
        bundle_revision: manifest.map(|m| m.revision.into()),
    };
    let Some(route) = snapshot.routes.find(target.host_name(), &target.path) else {
        return Ok(refused(report, &Refusal::Request(RequestError::NoRoute)));
    };
    report["route"] = json!({"id": &*route.id, "path_prefix": route.config.path_prefix});

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let identity = identity_for(config, &req.keys)?;
    let keys = Arc::new(KeyStore::new(&identity)?);
    if !matches!(req.keys, Keys::NoVerify) {
        runtime.block_on(keys.refresh_due());
    }
    let mut cache = config.token_cache.clone();
    cache.enabled = false;
    let authorizer = Authorizer::new(
        TokenValidator::new(keys.clone(), &identity),
        &identity,
        &cache,
        &config.policy,
    );
    let facts = RequestFacts {
        method: &req.method,
        host: &target.host,
        path: &target.path,
        query: target.query,
        client_ip: &req.client_ip,
        headers: &headers,
        time_ns: crate::clock::unix_nanos(at),
        upgrade: None,
        client_certificate: None,
    };
    let verdict = match req.keys {
        Keys::NoVerify => {
            let now = crate::clock::unix_secs(at);
            let token = runtime
                .block_on(authorizer.validator().verify_unsigned(&req.token, now))
                .and_then(|t| t.check_audience(&route.access.audiences).map(|()| t));
            match token {
                Ok(token) => authorizer.decide_for(
                    Authenticated::uncached(token),
                    &snapshot,
                    &route.access,
                    &facts,
                    true,
                ),
                Err(e) => return Ok(refused(report, &Refusal::Token(e))),
            }
        }
        _ => runtime.block_on(authorizer.authorize(&snapshot, &route.access, &facts, true)),
    };
    let policy = &snapshot.policy;
    report["revision"] = json!(policy.revision);
    if let Some(caller) = &verdict.caller {
        report["caller"] = caller_report(caller, policy);
    }
    report["outcome"] = json!(verdict.outcome.label());
    report["status"] = json!(verdict.outcome.status());
    report["reason"] = json!(verdict.outcome.reason());
    if let Outcome::Refused(Refusal::PolicyError(e)) = &verdict.outcome {
        report["policy_error"] = json!(e.to_string());
    }
    if let Some(input) = verdict.input {
        report["input"] = serde_json::from_str(&input.to_json_str()?)?;
        match policy.explain(input) {
            Ok((value, coverage)) => {
                report["decision"] =
                    serde_json::from_str(&value.to_json_str()?).unwrap_or(Value::Null);
                if req.explain {
                    report["explain"] =
                        explain(&coverage, &report["caller"], policy, merged.as_ref());
                }
            }
            Err(e) => report["decision"] = json!({"error": e.to_string()}),
        }
    }
    Ok(report)
}

/// The identity settings with keys taken where `keys` says.
fn identity_for(config: &Config, keys: &Keys) -> Result<IdentityConfig> {
    let mut identity = config.identity.clone();
    let replacement = match (keys, &config.dev) {
        (Keys::File(path), _) => Some(KeySource::File { path: path.clone() }),
        // The demo's tokens are signed by its dev key: verify against it directly, so the
        // policy-editing loop works without the demo running.
        (Keys::Configured, Some(dev)) => Some(KeySource::Inline {
            jwks: json!({"keys": [crate::dev::demo::load_key(dev)?.jwk]}),
        }),
        _ => None,
    };
    if let Some(keys) = replacement {
        for t in &mut identity.tenants {
            t.keys = keys.clone();
        }
    }
    Ok(identity)
}

fn refused(mut report: Value, refusal: &Refusal) -> Value {
    report["outcome"] = json!(refusal.label());
    report["status"] = json!(refusal.status());
    report["reason"] = json!(refusal.reason());
    report
}

fn caller_report(caller: &Authenticated, snapshot: &PolicySnapshot) -> Value {
    let c = &caller.token.caller;
    let agent = c.agent_id().and_then(|a| snapshot.directory.agents.get(a));
    let blueprint = c
        .blueprint_id
        .as_deref()
        .and_then(|b| snapshot.directory.blueprints.get(b));
    json!({
        "kind": c.kind.as_str(),
        "tenant": &*c.tenant,
        "client_id": &*c.actor_id,
        "agent": c.agent_id().map(|id| json!({"id": id, "display_name": agent.map(|a| &a.display_name), "known": agent.is_some()})),
        "blueprint": c.blueprint_id.as_deref().map(|id| json!({"id": id, "name": blueprint.map(|b| &b.name), "publisher": blueprint.and_then(|b| b.publisher.as_ref()), "known": blueprint.is_some()})),
        "sponsors": agent.map(|a| a.sponsors.iter().map(|s| json!({"id": s.id, "name": s.name})).collect::<Vec<_>>()).unwrap_or_default(),
        "user": c.user_oid(),
    })
}

/// The lines each module evaluated, and the data entries that describe the caller.
fn explain(
    coverage: &regorus::coverage::Report,
    caller: &Value,
    snapshot: &PolicySnapshot,
    merged: Option<&MergedDirectory>,
) -> Value {
    let files: Vec<Value> = coverage
        .files
        .iter()
        .filter(|f| !f.covered.is_empty())
        .map(|f| {
            let lines: Vec<String> = f
                .code
                .split('\n')
                .enumerate()
                .filter(|(i, _)| f.covered.contains(&(*i as u32 + 1)))
                .map(|(i, l)| format!("{:4}  {}", i + 1, l))
                .collect();
            json!({"file": f.path, "evaluated_lines": lines})
        })
        .collect();
    let mut data = serde_json::Map::new();
    let mut sources = serde_json::Map::new();
    let mut source = |key: String, kind: EntityKind, id: &str| {
        if let Some(p) = merged.and_then(|m| m.provenance(kind, id)) {
            sources.insert(key, json!(p));
        }
    };
    if let Some(bp) = caller["blueprint"]["id"].as_str() {
        source(
            format!("data.directory.blueprints[\"{bp}\"]"),
            EntityKind::Blueprint,
            bp,
        );
        let entry = snapshot
            .directory
            .blueprints
            .get(bp)
            .and_then(|b| serde_json::to_value(b).ok());
        data.insert(
            format!("data.directory.blueprints[\"{bp}\"]"),
            entry.unwrap_or(Value::Null),
        );
    }
    if let Some(agent) = caller["agent"]["id"].as_str() {
        source(
            format!("data.directory.agents[\"{agent}\"]"),
            EntityKind::Agent,
            agent,
        );
        let entry = snapshot
            .directory
            .agents
            .get(agent)
            .and_then(|a| serde_json::to_value(a).ok());
        data.insert(
            format!("data.directory.agents[\"{agent}\"]"),
            entry.unwrap_or(Value::Null),
        );
    }
    if let Some(user) = caller["user"].as_str() {
        source(
            format!("data.directory.agent_users[\"{user}\"]"),
            EntityKind::AgentUser,
            user,
        );
        if let Some(u) = snapshot
            .directory
            .agent_users
            .get(user)
            .and_then(|u| serde_json::to_value(u).ok())
        {
            data.insert(format!("data.directory.agent_users[\"{user}\"]"), u);
        }
    }
    json!({"rules": files, "data": data, "sources": sources})
}

/// Renders the report for people.
pub fn render_text(r: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<11}{v}\n"));
    let outcome = r["outcome"].as_str().unwrap_or("?");
    line(
        "decision",
        format!(
            "{} {} ({})",
            outcome.to_uppercase(),
            r["status"],
            r["reason"].as_str().unwrap_or("")
        ),
    );
    if r["verified"] == false {
        line("verified", "NO: --no-verify skipped the signature check; this result proves nothing about the token".into());
    }
    if let Some(e) = r["policy_error"].as_str() {
        line("error", e.to_string());
    }
    line(
        "request",
        format!(
            "{} {}{}",
            r["request"]["method"].as_str().unwrap_or(""),
            r["request"]["host"].as_str().unwrap_or(""),
            r["request"]["path"].as_str().unwrap_or("")
        ),
    );
    if let Some(route) = r["route"]["id"].as_str() {
        line("route", route.to_string());
    }
    let c = &r["caller"];
    if c.is_object() {
        line("caller", c["kind"].as_str().unwrap_or("").to_string());
        line("tenant", c["tenant"].as_str().unwrap_or("").to_string());
        line("client", c["client_id"].as_str().unwrap_or("").to_string());
        if c["agent"].is_object() {
            line(
                "agent",
                format!(
                    "{} {}",
                    c["agent"]["id"].as_str().unwrap_or(""),
                    c["agent"]["display_name"]
                        .as_str()
                        .map_or("(not in the directory)".to_string(), |n| format!("\"{n}\""))
                ),
            );
        }
        if c["blueprint"].is_object() {
            line(
                "blueprint",
                format!(
                    "{} {}",
                    c["blueprint"]["id"].as_str().unwrap_or(""),
                    c["blueprint"]["name"]
                        .as_str()
                        .map_or("(not in the directory)".to_string(), |n| format!("\"{n}\""))
                ),
            );
        }
        let sponsors: Vec<String> = c["sponsors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                s["name"]
                    .as_str()
                    .or(s["id"].as_str())
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        if !sponsors.is_empty() {
            line("sponsors", sponsors.join(", "));
        }
        if let Some(u) = c["user"].as_str() {
            line("user", u.to_string());
        }
    }
    if let Some(rev) = r["revision"].as_str() {
        line("revision", rev.to_string());
    }
    if !r["input"].is_null() {
        out.push_str(&format!(
            "\ninput:\n{}\n",
            serde_json::to_string_pretty(&r["input"]).unwrap_or_default()
        ));
        out.push_str(&format!(
            "\ndecision object:\n{}\n",
            serde_json::to_string_pretty(&r["decision"]).unwrap_or_default()
        ));
    }
    if let Some(rules) = r["explain"]["rules"].as_array() {
        out.push_str("\nexplain: lines evaluated\n");
        for f in rules {
            out.push_str(&format!("  {}\n", f["file"].as_str().unwrap_or("")));
            for l in f["evaluated_lines"].as_array().into_iter().flatten() {
                out.push_str(&format!("    {}\n", l.as_str().unwrap_or("")));
            }
        }
        out.push_str("\nexplain: directory entries of the caller\n");
        for (k, v) in r["explain"]["data"].as_object().into_iter().flatten() {
            out.push_str(&format!("  {k} = {v}\n"));
            if let Some(s) = r["explain"]["sources"].get(k) {
                out.push_str(&format!("    from {}", s["source"].as_str().unwrap_or("?")));
                if let Some(fields) = s["from_file"].as_array().filter(|f| !f.is_empty()) {
                    let names: Vec<&str> = fields.iter().filter_map(Value::as_str).collect();
                    out.push_str(&format!(" (the file decided: {})", names.join(", ")));
                }
                if s["withheld"] == true {
                    out.push_str(" (withheld: the Graph data is stale)");
                }
                out.push('\n');
            }
        }
    }
    if r["directory"]["graph"] == true {
        out.push_str(&format!(
            "\ndirectory: Microsoft Graph with the policy set's file on top (revision {})\n",
            r["directory"]["revision"].as_str().unwrap_or("?")
        ));
    }
    out
}
