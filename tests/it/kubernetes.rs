//! What a Kubernetes pod does to the gateway: policies in a ConfigMap volume that kubelet
//! updates by swapping a symlink.

use crate::support::*;
use agentgate::identity::CallerKind;
use agentgate::policy::PolicyFiles;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn set_sales_disabled(dir: &Path, disabled: bool) {
    let path = dir.join("data/directory.json");
    let mut directory: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    directory["blueprints"][BP_SALES]["disabled"] = disabled.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&directory).unwrap()).unwrap();
}

/// Polls until `token` gets `status`, failing the test after `limit`; returns the wait.
fn wait_for_status(gw: &Gateway, token: &str, status: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let r = gw.call("GET", "/orders/1", Some(token));
        if r.status == status {
            if status == 403 {
                r.assert_denied(403, "blueprint_disabled");
            }
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {} after {limit:?}:\n{}",
            r.status,
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_configmap_update_swapped_in_by_kubelet_is_enforced() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            kubelet_layout: true,
            extra_config: "\n[reload]\ndebounce = \"50ms\"\n".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();

    // Read through the symlinks, each file once: the timestamped copy is not read again.
    let policies = gw.dir.path().join("policies");
    assert!(policies.join("..data").is_symlink());
    let mounted = PolicyFiles::read(&policies).unwrap();
    let shipped = PolicyFiles::read(&repo().join("policies")).unwrap();
    let names = |f: &PolicyFiles| -> Vec<String> {
        f.modules
            .iter()
            .chain(&f.tests)
            .chain(&f.data)
            .map(|s| s.name.clone())
            .collect()
    };
    assert_eq!(names(&mounted), names(&shipped));

    // kubelet's atomic update: a new timestamped directory, then `..data` renamed over,
    // here well after the debounce so the swap itself must be noticed.
    let slow_node = Duration::from_millis(400);
    kubelet_update(&policies, 2, slow_node, |new| set_sales_disabled(new, true));
    let took = wait_for_status(&gw, &token, 403, Duration::from_secs(5));
    eprintln!("ConfigMap swap to enforcement: {took:?}");
    assert_eq!(gw.readiness()["reload"]["last_trigger"], "watch");

    // The old directory is gone; the next update is seen too.
    kubelet_update(&policies, 3, slow_node, |new| {
        set_sales_disabled(new, false)
    });
    wait_for_status(&gw, &token, 200, Duration::from_secs(5));

    // The configuration's own ConfigMap: a route moved away is no longer served.
    let before = gw.call("GET", "/crm/1", Some(&token));
    assert_ne!(before.reason(), "no_route", "{}", before.body);
    kubelet_update(&gw.dir.path().join("etc"), 2, slow_node, |new| {
        let path = new.join("agentgate.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("path_prefix = \"/crm\""));
        let moved = text.replace("path_prefix = \"/crm\"", "path_prefix = \"/crm-moved\"");
        std::fs::write(&path, moved).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = gw.call("GET", "/crm/1", Some(&token));
        if r.status == 404 {
            r.assert_denied(404, "no_route");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the moved route still answers {}:\n{}",
            r.status,
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
