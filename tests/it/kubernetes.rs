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

/// Every file under `dir` (not following symlinks) with its size and modification time.
fn tree(dir: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((path, meta.len(), meta.modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// The regular files process `pid` holds open for writing, by descriptor.
fn files_open_for_writing(pid: u32) -> Vec<(u32, String)> {
    const O_ACCMODE: u32 = 0o3;
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue; // closed meanwhile
        };
        let target = target.display().to_string();
        if !target.starts_with('/') {
            continue; // sockets, pipes, eventfds
        }
        let fd: u32 = e.file_name().to_str().unwrap().parse().unwrap();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        if flags & O_ACCMODE != 0 {
            out.push((fd, target));
        }
    }
    out.sort();
    out
}

#[test]
fn the_gateway_serves_from_read_only_configuration_and_policies() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            read_only: true,
            ..Default::default()
        },
    );
    let etc = gw.dir.path().join("etc");
    let policies = gw.dir.path().join("policies");
    let before = (tree(&etc), tree(&policies));
    if running_as_root() {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(format!("/proc/{}", gw.child.id()))
            .unwrap()
            .uid();
        assert_eq!(owner, NOBODY, "the gateway runs unprivileged");
    }

    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    let mut legacy = spec(CallerKind::AgentApp);
    legacy.client = AGENT_LEGACY.into();
    legacy.blueprint = Some(BP_LEGACY.into());
    gw.call("GET", "/orders/1", Some(&mint(&key, &legacy)))
        .assert_denied(403, "blueprint_disabled");
    // A reload only reads.
    let (status, body) = gw.reload();
    assert_eq!(status, 200, "{body}");
    gw.wait_decisions(2);

    // Nothing was written where the configuration and policies live, nothing in the
    // writable run directory either (no pid file unless daemonised, no upgrade socket
    // unless upgrading), and the only files held open for writing are the two logs.
    assert_eq!((tree(&etc), tree(&policies)), before);
    assert_eq!(tree(&gw.dir.path().join("run")), []);
    let pid = gw.child.id();
    let logs: Vec<(u32, String)> = [(1, "stdout.log"), (2, "stderr.log")]
        .into_iter()
        .map(|(fd, name)| (fd, gw.dir.path().join(name).display().to_string()))
        .collect();
    assert_eq!(files_open_for_writing(pid), logs);
}
