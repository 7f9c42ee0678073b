//! The test harness: keys, the issuer, the echo upstream, and gateway processes.

use agentgate::dev::servers::{issuer_router, serve_sample_api, IssuerState};
use agentgate::dev::tls::{serve_tls, IssuedCert, TestCa};
use agentgate::dev::{SigningIdentity, TokenSpec};
use agentgate::identity::CallerKind;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const TENANT_A: &str = "aaaaaaaa-1111-1111-1111-000000000001";
pub const TENANT_B: &str = "aaaaaaaa-1111-1111-1111-000000000002";
pub const API: &str = "bbbbbbbb-2222-2222-2222-000000000001";
pub const API_URI: &str = "api://bbbbbbbb-2222-2222-2222-000000000001";
pub const BP_SALES: &str = "cccccccc-3333-3333-3333-000000000001";
pub const BP_INVOICE: &str = "cccccccc-3333-3333-3333-000000000002";
pub const BP_LEGACY: &str = "cccccccc-3333-3333-3333-000000000003";
pub const AGENT_EMEA: &str = "dddddddd-4444-4444-4444-000000000001";
pub const AGENT_INVOICE: &str = "dddddddd-4444-4444-4444-000000000002";
pub const AGENT_SOUTH_AMERICA: &str = "dddddddd-4444-4444-4444-000000000005";
pub const AGENT_STARTUPS: &str = "dddddddd-4444-4444-4444-000000000006";
pub const AGENT_LEGACY: &str = "dddddddd-4444-4444-4444-000000000007";
pub const AGENT_USER_EMEA: &str = "eeeeeeee-5555-5555-5555-000000000001";
pub const HUMAN: &str = "ffffffff-6666-6666-6666-000000000001";
pub const CLASSIC_APP: &str = "99999999-7777-7777-7777-000000000001";
pub const CLASSIC_APP_SP: &str = "99999999-7777-7777-7777-0000000000b1";

/// An HTTPS client that trusts only the CA certificate `ca_pem`: HTTP/1.1 only, or with
/// `http2` h2 as well, which ALPN then picks.
pub fn https_client(ca_pem: &str, http2: bool) -> reqwest::blocking::Client {
    let b = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    let b = if http2 { b } else { b.http1_only() };
    b.build().unwrap()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A test signing key from tests/data/keys.
pub fn key(name: &str) -> SigningIdentity {
    let pem = std::fs::read(repo().join(format!("tests/data/keys/{name}.pem"))).unwrap();
    SigningIdentity::from_pem(&pem).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token spec with sensible defaults for `kind`, valid now, audience = the API URI.
pub fn spec(kind: CallerKind) -> TokenSpec {
    let (client, blueprint, subject) = match kind {
        CallerKind::AgentApp => (AGENT_EMEA, Some(BP_SALES), None),
        CallerKind::AgentObo => (AGENT_EMEA, Some(BP_SALES), Some(HUMAN)),
        CallerKind::AgentUser => (AGENT_EMEA, Some(BP_SALES), Some(AGENT_USER_EMEA)),
        CallerKind::App => (CLASSIC_APP, None, Some(CLASSIC_APP_SP)),
        CallerKind::User => (CLASSIC_APP, None, Some(HUMAN)),
        CallerKind::AppOboAgentUser => (CLASSIC_APP, None, Some(AGENT_USER_EMEA)),
    };
    TokenSpec {
        kind,
        tenant: TENANT_A.into(),
        version: "1.0".into(),
        audience: API_URI.into(),
        client: client.into(),
        blueprint: blueprint.map(str::to_string),
        subject: subject.map(str::to_string),
        roles: vec!["Orders.Read.All".into()],
        scopes: vec!["Orders.Read".into()],
        issued_at: now(),
        lifetime_secs: 3600,
        extra: Map::new(),
    }
}

/// The CA the test issuers' HTTPS certificates chain to (one per test process).
pub fn issuer_ca() -> &'static TestCa {
    static CA: std::sync::OnceLock<TestCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| TestCa::named("agentgate test issuer CA").unwrap())
}

/// The certificate every test issuer serves: 127.0.0.1 and localhost, from [`issuer_ca`].
fn issuer_certificate() -> &'static IssuedCert {
    static CERT: std::sync::OnceLock<IssuedCert> = std::sync::OnceLock::new();
    CERT.get_or_init(|| issuer_ca().issue(&["127.0.0.1", "localhost"]).unwrap())
}

/// Serves the issuer (over HTTPS, see [`issuer_ca`]) and the echo upstream on a runtime of
/// their own.
pub struct Servers {
    pub issuer: Arc<IssuerState>,
    pub upstream: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Servers {
    /// Starts both servers, the issuer publishing `keys`.
    pub fn start(keys: &[&SigningIdentity]) -> Servers {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (issuer, upstream) = runtime.block_on(async {
            let il = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let ul = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let state = IssuerState::new_https(
                il.local_addr().unwrap(),
                keys.iter().map(|k| k.jwk.clone()).collect(),
            );
            let upstream = ul.local_addr().unwrap();
            let tls = issuer_certificate().server_config(None).unwrap();
            tokio::spawn(serve_tls(il, tls, issuer_router(state.clone())));
            tokio::spawn(serve_sample_api(ul));
            (state, upstream)
        });
        Servers {
            issuer,
            upstream,
            _runtime: runtime,
        }
    }

    /// Replaces the published key set.
    pub fn publish(&self, keys: &[&SigningIdentity]) {
        self.issuer
            .keys
            .store(Arc::new(keys.iter().map(|k| k.jwk.clone()).collect()));
    }

    pub fn jwks_requests(&self) -> u64 {
        self.issuer
            .jwks_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Picks a loopback port that nothing listens on now and that this test process has not
/// handed out before (until it has gone once through all 12000 of them).
///
/// The ports come from just below the kernel's ephemeral range (`ip_local_port_range`):
/// a port from `bind(0)` is released before the process it is for binds it, and in that
/// gap another test's `bind(0)` listener or outgoing connection could be given the same
/// ephemeral port; below the range only these handed-out ports are used.
pub fn free_port() -> u16 {
    /// The next port to try: starts at a place that depends on the process id, so that
    /// two test processes at once seldom probe the same ports.
    static NEXT: std::sync::Mutex<Option<u16>> = std::sync::Mutex::new(None);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = ephemeral_start.saturating_sub(12_000).max(1024);
    let span = ephemeral_start - low;
    assert!(
        span >= 1000,
        "ip_local_port_range leaves too few ports below it"
    );
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let mut port = next.unwrap_or(low + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= ephemeral_start {
            low
        } else {
            port + 1
        };
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            *next = Some(port);
            return candidate;
        }
    }
    panic!("no free loopback port in {low}..{ephemeral_start}");
}

/// How to start a gateway.
pub struct GatewaySpec {
    /// Replaces the shipped `policies/data/<name>` files.
    pub data: Vec<(&'static str, Value)>,
    /// Replaces every shipped `.rego` file with these `(name, text)` modules.
    pub rego: Option<Vec<(&'static str, String)>>,
    /// Extra lines for the `[identity]` table.
    pub identity_extra: String,
    /// Upstream addresses for the routes (default: the echo server).
    pub upstreams: Option<Vec<String>>,
    pub route_extra: String,
    pub cache: bool,
    /// Appended at the end of the configuration (whole tables such as `[reload]`).
    pub extra_config: String,
    /// `server.grace_period`: accepting on after SIGTERM.
    pub grace_period: &'static str,
    /// `server.graceful_shutdown_timeout`: requests in flight once accepting stopped.
    pub graceful_shutdown_timeout: &'static str,
    /// Extra lines for the `[server]` table.
    pub server_extra: String,
    /// Extra lines for the `[policy]` table.
    pub policy_extra: String,
    /// `RUST_LOG` for the gateway process.
    pub rust_log: &'static str,
    /// Extra lines for the `[admin]` table.
    pub admin_extra: String,
    /// The admin bearer token (written to a file the `[admin]` table names); the harness's
    /// admin calls send it.
    pub admin_token: Option<&'static str>,
    /// The listener's `tls` inline table (`{ certificates = [...] }`): the gateway then
    /// serves HTTPS and `base` starts with `https://127.0.0.1`.
    pub listener_tls: Option<String>,
    /// Extra lines for the `[[listeners]]` table.
    pub listener_extra: String,
    /// Lay the policy directory and the configuration (then in `etc/`) out as kubelet
    /// mounts ConfigMap volumes ([`kubelet_mount`]).
    pub kubelet_layout: bool,
    /// Make the configuration (then in `etc/`) and the policy directory read-only, leave
    /// only `run/` (then holding the pid file and upgrade socket) writable, and run the gateway as `nobody`
    /// when the tests run as root (for whom permission bits are no obstacle).
    pub read_only: bool,
    /// The proxy listener's port; a fresh one from [`free_port`] when `None`.
    pub port: Option<u16>,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            rego: None,
            identity_extra: String::new(),
            upstreams: None,
            route_extra: String::new(),
            cache: true,
            extra_config: String::new(),
            grace_period: "0s",
            graceful_shutdown_timeout: "1s",
            server_extra: String::new(),
            policy_extra: String::new(),
            rust_log: "info",
            admin_extra: String::new(),
            admin_token: None,
            listener_tls: None,
            listener_extra: String::new(),
            kubelet_layout: false,
            read_only: false,
            port: None,
        }
    }
}

/// Rearranges `dir` the way kubelet mounts a ConfigMap volume: the files live in a
/// timestamped hidden directory, `..data` is a symlink to it, and every top-level entry is
/// a symlink through `..data` (`agentgate -> ..data/agentgate`).
pub fn kubelet_mount(dir: &Path) {
    let first = "..2026_01_01_00_00_00.000000001";
    let staged = dir.with_extension("staged");
    std::fs::rename(dir, &staged).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::rename(&staged, dir.join(first)).unwrap();
    std::os::unix::fs::symlink(first, dir.join("..data")).unwrap();
    for entry in std::fs::read_dir(dir.join(first)).unwrap() {
        let name = entry.unwrap().file_name();
        std::os::unix::fs::symlink(Path::new("..data").join(&name), dir.join(&name)).unwrap();
    }
}

/// Updates a [`kubelet_mount`]ed directory as kubelet's atomic writer does: the new
/// contents (the current ones, changed by `edit`) go into a new timestamped directory, a
/// `..data_tmp` symlink to it is renamed over `..data` in one step, and the old directory
/// is removed. Top-level symlinks stay as they are (the set of keys does not change).
/// `pause` separates writing the new directory from the swap (a slow node).
pub fn kubelet_update(dir: &Path, generation: u32, pause: Duration, edit: impl FnOnce(&Path)) {
    let old = std::fs::read_link(dir.join("..data")).unwrap();
    let new = format!("..2026_01_01_00_00_{generation:02}.000000001");
    copy_dir(&dir.join(&old), &dir.join(&new));
    edit(&dir.join(&new));
    std::thread::sleep(pause);
    std::os::unix::fs::symlink(&new, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(old)).unwrap();
}

/// The uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

/// Whether this test process runs as root (the owner of `/proc/self` is its user).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Makes `read_only` trees read-only for everyone and `root/run` writable by `nobody`;
/// `root` itself becomes traversable so `nobody` can reach them.
fn lock_down(root: &Path, read_only: &[&Path]) {
    use std::os::unix::fs::PermissionsExt;
    fn walk(path: &Path) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        if meta.file_type().is_symlink() {
            return;
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(path).unwrap() {
                walk(&e.unwrap().path());
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
        } else {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
    }
    for dir in read_only {
        walk(dir);
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = root.join("run");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    if running_as_root() {
        std::os::unix::fs::chown(&run, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

/// A running gateway process, killed on drop. On drop it also checks that no token sent
/// through it appears anywhere in what it logged.
pub struct Gateway {
    pub child: Child,
    pub base: String,
    pub admin: String,
    admin_token: Option<&'static str>,
    pub dir: tempfile::TempDir,
    tokens: std::sync::Mutex<Vec<String>>,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

impl Gateway {
    /// Starts the gateway binary against `servers` and waits until it is ready.
    pub fn start(servers: &Servers, spec: GatewaySpec) -> Gateway {
        let mut gw = Gateway::spawn(servers, spec);
        gw.wait_ready();
        gw
    }

    /// Starts the gateway binary against `servers` without waiting for it.
    pub fn spawn(servers: &Servers, spec: GatewaySpec) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        match &spec.rego {
            None => copy_dir(&repo().join("policies"), &policies),
            Some(modules) => {
                std::fs::create_dir_all(policies.join("data")).unwrap();
                for f in ["directory.json", "access.json"] {
                    std::fs::copy(
                        repo().join("policies/data").join(f),
                        policies.join("data").join(f),
                    )
                    .unwrap();
                }
                for (name, text) in modules {
                    std::fs::write(policies.join(name), text).unwrap();
                }
            }
        }
        for (name, value) in &spec.data {
            std::fs::write(
                policies.join("data").join(name),
                serde_json::to_vec_pretty(value).unwrap(),
            )
            .unwrap();
        }
        let (port, admin_port) = (spec.port.unwrap_or_else(free_port), free_port());
        let mut admin_extra = spec.admin_extra.clone();
        std::fs::write(dir.path().join("issuer-ca.pem"), &issuer_ca().cert_pem).unwrap();
        if let Some(token) = spec.admin_token {
            std::fs::write(dir.path().join("admin.token"), token).unwrap();
            admin_extra.push_str(&format!(
                "\ntoken_file = \"{}\"\n",
                dir.path().join("admin.token").display()
            ));
        }
        let upstreams = spec
            .upstreams
            .clone()
            .unwrap_or_else(|| vec![servers.upstream.to_string()]);
        let upstreams = serde_json::to_string(&upstreams).unwrap();
        let d = dir.path().display();
        // Read-only runs leave only run/ writable for the pid file and the upgrade socket.
        let run = match spec.read_only {
            true => dir.path().join("run"),
            false => dir.path().to_path_buf(),
        };
        std::fs::create_dir_all(&run).unwrap();
        let run = run.display();
        let config = format!(
            r#"
[server]
threads = 1
grace_period = "{grace}"
graceful_shutdown_timeout = "{in_flight}"
pid_file = "{run}/agentgate.pid"
upgrade_sock = "{run}/upgrade.sock"
{server_extra}

[[listeners]]
address = "127.0.0.1:{port}"
{listener_tls}
{listener_extra}

[admin]
address = "127.0.0.1:{admin_port}"
{admin_extra}

[identity]
authority = "https://{issuer}"
ca_file = "{d}/issuer-ca.pem"
fetch_timeout = "2s"
{identity_extra}

[[identity.tenants]]
id = "{TENANT_A}"

[token_cache]
enabled = {cache}

[policy]
dir = "{d}/policies"
# Debug builds on a loaded CI machine are far slower than release: a generous budget keeps
# timeouts meaning "runaway policy", not "slow test machine".
timeout = "250ms"
{policy_extra}

[[routes]]
id = "orders"
path_prefix = "/orders"
upstreams = {upstreams}
audiences = ["{API_URI}", "{API}"]
connect_timeout = "1s"
read_timeout = "2s"
{route_extra}

[[routes]]
id = "crm"
path_prefix = "/crm"
upstreams = {upstreams}
audiences = ["{API_URI}", "{API}"]
"#,
            issuer = servers.issuer.addr,
            identity_extra = spec.identity_extra,
            cache = spec.cache,
            route_extra = spec.route_extra,
            grace = spec.grace_period,
            in_flight = spec.graceful_shutdown_timeout,
            server_extra = spec.server_extra,
            policy_extra = spec.policy_extra,
            admin_extra = admin_extra,
            listener_extra = spec.listener_extra,
            listener_tls = spec
                .listener_tls
                .as_ref()
                .map_or(String::new(), |t| format!("tls = {t}")),
        ) + &spec.extra_config;
        // With the kubelet layout the configuration sits in a ConfigMap volume of its own.
        let config_dir = match spec.kubelet_layout || spec.read_only {
            true => dir.path().join("etc"),
            false => dir.path().to_path_buf(),
        };
        std::fs::create_dir_all(&config_dir).unwrap();
        let config_path = config_dir.join("agentgate.toml");
        std::fs::write(&config_path, config).unwrap();
        if spec.kubelet_layout {
            kubelet_mount(&policies);
            kubelet_mount(&config_dir);
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_agentgate"));
        if spec.read_only {
            lock_down(dir.path(), &[&config_dir, &policies]);
            if running_as_root() {
                use std::os::unix::process::CommandExt;
                command.uid(NOBODY).gid(NOBODY).current_dir(dir.path());
            }
        }
        let child = command
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", spec.rust_log)
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Gateway {
            child,
            base: format!(
                "{}://127.0.0.1:{port}",
                if spec.listener_tls.is_some() {
                    "https"
                } else {
                    "http"
                }
            ),
            admin: format!("http://127.0.0.1:{admin_port}"),
            admin_token: spec.admin_token,
            dir,
            tokens: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Polls `/readyz` until this gateway answers 200 (which it does only once its proxy
    /// listener is bound), failing the test after 20 s.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited with {status}:\n{}", self.stderr());
            }
            // The answer must come from this child, not from whatever else holds the port.
            if let Ok(r) = self.admin_request("GET", "/readyz").send() {
                if r.status() == 200 && r.json::<Value>().is_ok_and(|v| v["pid"] == self.child.id())
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 20 s:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// A request to the admin listener, with the admin token when one is configured.
    pub fn admin_request(&self, method: &str, path: &str) -> reqwest::blocking::RequestBuilder {
        let req = reqwest::blocking::Client::new()
            .request(method.parse().unwrap(), format!("{}{path}", self.admin));
        match self.admin_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The `/readyz` document.
    pub fn readiness(&self) -> Value {
        self.admin_request("GET", "/readyz")
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Polls `/readyz` until the policy engine is `state`, failing the test after 60 s.
    pub fn wait_policy_engine(&self, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.readiness()["policy_engine"] != state {
            assert!(
                Instant::now() < deadline,
                "policy engine never became {state}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Repeats `GET /orders/1` with `token` until it answers `status`; returns how long that
    /// took, failing after 10 s.
    pub fn until_status(&self, token: &str, status: u16) -> Duration {
        let started = Instant::now();
        loop {
            let r = self.call("GET", "/orders/1", Some(token));
            if r.status == status {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "still {} (not {status}) after 10 s:\n{}",
                r.status,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        self.admin_request("GET", "/metrics")
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// Remembers a token sent to this gateway, for the log scan on drop.
    pub fn sent(&self, token: &str) {
        self.tokens.lock().unwrap().push(token.to_string());
    }

    /// The decision log: one JSON object per line of standard output.
    pub fn decisions(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("stdout.log"))
            .unwrap_or_default()
            .split_inclusive('\n')
            // A line still being written has no newline yet.
            .filter(|l| l.ends_with('\n'))
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON decision line ({e}): {l}"))
            })
            .collect()
    }

    /// The decision log once it holds at least `n` records (it is written in the
    /// background); fails the test after 10 s.
    pub fn wait_decisions(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = self.decisions();
            if d.len() >= n {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} decisions logged",
                d.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `POST /reload` on the admin listener: (status, body).
    pub fn reload(&self) -> (u16, Value) {
        let r = self.admin_request("POST", "/reload").send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap())
    }

    /// Sends `signal` (e.g. "HUP", "QUIT") to the gateway process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits for the gateway process to exit on its own; fails the test, with its log, if
    /// it still runs after `limit`.
    pub fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `method path` with an optional bearer token.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        self.call_with(method, path, token, &[])
    }

    /// Sends a request with extra headers.
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut req = client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            self.sent(t);
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("authorization") {
                self.sent(v.rsplit(' ').next().unwrap_or(v));
            }
            req = req.header(*k, *v);
        }
        Reply::from(req.send().unwrap())
    }
}

/// Gives the owner write access again throughout `path`, so the temporary directory can go.
fn unlock(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
        for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
            unlock(&e.path());
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        unlock(self.dir.path());
        if std::thread::panicking() {
            eprintln!("--- gateway stderr ---\n{}", self.stderr());
            return;
        }
        // Everything the gateway wrote, operational and decision logs alike.
        let logged = format!(
            "{}{}",
            self.stderr(),
            std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
        );
        for token in self.tokens.lock().unwrap().iter() {
            // A token, its signature, or its header.payload part would each be a leak.
            let signature = token.rsplit('.').next().unwrap_or(token);
            for needle in [token.as_str(), signature] {
                if needle.len() >= 16 {
                    assert!(
                        !logged.contains(needle),
                        "the gateway logged a token it was sent"
                    );
                }
            }
        }
    }
}

/// The value of the series whose line in the `/metrics` text starts with `line_prefix`
/// (name and labels, labels in alphabetical order); 0 when the series is absent, as for a
/// counter nothing has moved yet.
pub fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A response, read fully.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl From<reqwest::blocking::Response> for Reply {
    fn from(r: reqwest::blocking::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }
}

impl Reply {
    /// The `reason` code of a gateway refusal.
    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }

    /// A header the upstream received (from the echo body).
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }

    pub fn www_authenticate(&self) -> &str {
        self.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a refusal with `status` and `reason`.
    #[track_caller]
    pub fn assert_denied(&self, status: u16, reason: &str) {
        assert_eq!(
            (self.status, self.reason()),
            (status, reason),
            "body: {}",
            self.body
        );
        assert!(self.body["decision_id"]
            .as_str()
            .is_some_and(|d| d.len() == 32));
    }

    /// Asserts the request reached the upstream.
    #[track_caller]
    pub fn assert_allowed(&self) {
        assert_eq!(self.status, 200, "body: {}", self.body);
        assert_eq!(self.body["service"], "sample-api", "body: {}", self.body);
    }
}

/// An app-only agent token made unique by `tag`, so the token cache cannot carry it: only
/// the signing key decides.
pub fn fresh_token(key: &SigningIdentity, tag: &str) -> String {
    let mut s = spec(CallerKind::AgentApp);
    s.extra.insert("uti".into(), tag.into());
    mint(key, &s)
}

/// Mints a token from `spec` with `key`.
pub fn mint(key: &SigningIdentity, spec: &TokenSpec) -> String {
    key.sign(&spec.claims()).unwrap()
}

/// An upstream that reads whatever it is sent and never answers: every forwarded request
/// stays in flight until the gateway lets go of it. It counts the connections it accepted,
/// those still open and the most open at once, and how many bytes equal to `marker`
/// arrived after each connection's header block.
pub struct SilentUpstream {
    pub addr: String,
    counts: Arc<SilentCounts>,
}

#[derive(Default)]
struct SilentCounts {
    accepted: std::sync::atomic::AtomicUsize,
    open: std::sync::atomic::AtomicUsize,
    most_open: std::sync::atomic::AtomicUsize,
    marked: std::sync::atomic::AtomicUsize,
}

impl SilentUpstream {
    pub fn start(marker: u8) -> SilentUpstream {
        use std::io::Read;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let counts = Arc::new(SilentCounts::default());
        let upstream = SilentUpstream {
            addr: listener.local_addr().unwrap().to_string(),
            counts: counts.clone(),
        };
        std::thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
                counts.most_open.fetch_max(open, Ordering::SeqCst);
                let counts = counts.clone();
                std::thread::spawn(move || {
                    let (mut head, mut in_body, mut buf) = (Vec::new(), false, [0u8; 4096]);
                    while let Ok(n @ 1..) = c.read(&mut buf) {
                        let body = if in_body {
                            &buf[..n]
                        } else {
                            head.extend_from_slice(&buf[..n]);
                            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                                continue;
                            };
                            in_body = true;
                            &head[end + 4..]
                        };
                        let n = body.iter().filter(|b| **b == marker).count();
                        counts.marked.fetch_add(n, Ordering::SeqCst);
                    }
                    counts.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        upstream
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn most_open(&self) -> usize {
        self.counts
            .most_open
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marker bytes received in bodies, once every accepted connection has closed (fails
    /// the test if one stays open for 5 s).
    pub fn marked_once_closed(&self) -> usize {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.counts.open.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "the gateway kept an upstream connection open"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.counts.marked.load(Ordering::SeqCst)
    }
}

/// An upstream that answers one request with a server-sent event stream: the first event
/// at once, the second and the end only when `finish` is signalled.
pub fn event_stream_upstream() -> (String, std::sync::mpsc::Sender<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (finish, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let chunk = |text: &str| format!("{:x}\r\n{text}\r\n", text.len());
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        c.write_all(format!("{head}{}", chunk("data: first\n\n")).as_bytes())
            .unwrap();
        c.flush().unwrap();
        let _ = finished.recv_timeout(std::time::Duration::from_secs(20));
        let _ = c.write_all(format!("{}0\r\n\r\n", chunk("data: second\n\n")).as_bytes());
    });
    (addr, finish)
}
