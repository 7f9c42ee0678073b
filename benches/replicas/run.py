#!/usr/bin/env python3
"""The multi-replica benchmark, run by benches/replicas/run.

Four agentgate replicas listen on 127.0.0.2-5 (proxy :18080, admin :19180) behind HAProxy
on 127.0.0.1:19000 (round robin, /readyz health checks, retries on connection failures).
nginx on 127.0.0.1:19100 serves the policy bundle (ETag and 304 on If-None-Match, as any
static host or blob store does); another nginx on 127.0.0.1:19001 is the upstream. Every
replica polls the bundle every second ([policy.bundle] interval = "1s") and verifies its
ES256 signature. wrk keeps a steady load through HAProxy with a Sales Assistant token.

Scenarios (full run):
  propagation  publish a bundle that disables the Sales Assistant blueprint; time until
               every replica refuses it (probed directly every 20 ms; target: all four
               within 2 s), LB responses still allowed after the first refusal (mixed
               decisions), replicas that allowed again after refusing (flip-backs), and
               failed requests (socket errors, 5xx) under load.
  restart      restart the four replicas one after another under load (SIGTERM, wait,
               start, wait ready): failed requests must be 0.
  tampered     publish a signed bundle edited after signing: every replica keeps its set
               and reports the signature error in /readyz.
  outage       stop the bundle server for a minute under load: every replica stays ready
               and keeps deciding; then publish again and see it propagate.

Propagation, tampered and outage need the gateway to poll [policy.bundle] and to show the
source's status in /readyz under "bundle" (BundleStatus: revision, last_error, ...); the
full run refuses to start without it. --smoke runs what works before that: the bundle
server's ETag/304, `agentgate check` fetching and verifying the bundle over HTTP and
refusing a tampered one, four replicas behind HAProxy under load, and a rolling restart.
Output: results.json and results.md in --out (default target/replicas).
"""

import argparse
import gzip
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("load_bench", os.path.join(ROOT, "benches/load/run.py"))
load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(load)

AGENTGATE = load.AGENTGATE
TOKEN_KEY = load.KEY
BUNDLE_KEY = os.path.join(ROOT, "tests/data/keys/bundle-ec.pem")
BUNDLE_PUB = os.path.join(ROOT, "tests/data/keys/bundle-ec.pub.pem")
TENANT, AUD = load.TENANT, load.AUD
BP_SALES = "cccccccc-3333-3333-3333-000000000001"
REPLICAS = [f"127.0.0.{i}" for i in range(2, 6)]
PROXY, ADMIN, LB, BUNDLES, UPSTREAM = 18080, 19180, 19000, 19100, 19001
BUNDLE_PATH = "/agentgate/bundle.tar.gz"


def get(url, headers=None, timeout=2):
    """(status, headers, body) of a GET; connection failures are status 0."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except OSError:
        return 0, {}, b""


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = {}
        self.logs = open(os.path.join(tmp, "processes.log"), "ab")
        os.makedirs(os.path.join(tmp, "bundles/agentgate"))
        load.write(os.path.join(tmp, "jwks.json"), json.dumps(load.jwks_for_key(TOKEN_KEY)))
        self.polling = False
        for i, ip in enumerate(REPLICAS):
            load.write(self.config(i), self.replica_config(i, ip, bundle=True))
            load.write(self.config(i, bundle=False), self.replica_config(i, ip, bundle=False))

    def replica_config(self, i, ip, bundle):
        tmp = self.tmp
        if bundle:
            policy = "\n".join([
                "[policy.bundle]",
                f'url = "http://127.0.0.1:{BUNDLES}{BUNDLE_PATH}"',
                'interval = "1s"',
                'timeout = "2s"',
                f'signing_key = "{BUNDLE_PUB}"',
                'signature_alg = "ES256"',
            ])
        else:
            policy = f'[policy]\ndir = "{ROOT}/policies"'
        return f"""
[server]
threads = 1
grace_period = "1s"
graceful_shutdown_timeout = "2s"
pid_file = "{tmp}/replica-{i}.pid"
upgrade_sock = "{tmp}/replica-{i}.sock"

[[listeners]]
address = "{ip}:{PROXY}"

[admin]
address = "{ip}:{ADMIN}"

[identity]
[[identity.tenants]]
id = "{TENANT}"
jwks_file = "{tmp}/jwks.json"

{policy}

[[routes]]
id = "orders"
path_prefix = "/orders"
upstreams = ["127.0.0.1:{UPSTREAM}"]
audiences = ["{AUD}"]

[reload]
watch = false

[log]
decisions = "{tmp}/replica-{i}-decisions.jsonl"
allow_sample_rate = 0.0
"""

    def config(self, i, bundle=True):
        return os.path.join(self.tmp, f"replica-{i}{'' if bundle else '-dir'}.toml")

    def spawn(self, name, cmd):
        self.procs[name] = subprocess.Popen(cmd, stdout=self.logs, stderr=self.logs, start_new_session=True)

    def stop(self, name, sig=signal.SIGTERM, wait=15):
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name, wait=5)

    def nginx(self, name, port, body):
        conf = os.path.join(self.tmp, f"{name}.conf")
        load.write(conf, f"""
worker_processes 1; daemon off; pid {self.tmp}/{name}.pid; error_log {self.tmp}/{name}.err;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000; {body} }} }}""")
        self.spawn(name, ["nginx", "-c", conf, "-p", self.tmp])
        wait_for(lambda: get(f"http://127.0.0.1:{port}/")[0] != 0, f"{name} on :{port}")

    def start_upstream(self):
        self.nginx("upstream", UPSTREAM, 'location / { return 200 "ok"; }')

    def start_bundle_server(self):
        # Static files: nginx sends a strong ETag and answers If-None-Match with 304.
        self.nginx("bundles", BUNDLES, f"root {self.tmp}/bundles; etag on;")

    def publish(self, revision, sales_disabled, tamper=False):
        """Builds and signs a bundle of the shipped policies with the Sales Assistant
        blueprint disabled or not, and swaps it in atomically (agentgate bundle build writes
        a temporary file and renames it). With `tamper`, the signed bundle says the opposite
        and the served one is edited after signing to say `sales_disabled`."""
        src = tempfile.mkdtemp(prefix=f"src-{revision}-", dir=self.tmp)
        shutil.copytree(os.path.join(ROOT, "policies"), src, dirs_exist_ok=True)
        path = os.path.join(src, "data/directory.json")
        directory = json.load(open(path))
        directory["blueprints"][BP_SALES]["disabled"] = sales_disabled != tamper
        load.write(path, json.dumps(directory, indent=2))
        served = os.path.join(self.tmp, "bundles" + BUNDLE_PATH)
        target = os.path.join(src, "signed.tar.gz") if tamper else served
        load.run([AGENTGATE, "bundle", "build", src, "-o", target, "--revision", revision,
                  "--signing-key", BUNDLE_KEY])
        if tamper:
            staged = served + ".tampered"
            with open(staged, "wb") as f:
                f.write(tampered(target, lambda d: d["blueprints"][BP_SALES].update(disabled=sales_disabled)))
            os.replace(staged, served)
        return time.time()

    def start_replica(self, i):
        """Starts replica `i` on the bundle, or on the policy directory while the gateway
        does not poll bundles yet."""
        self.spawn(f"replica-{i}", [AGENTGATE, "serve", "--config", self.config(i, self.polling)])
        wait_for(lambda: self.ready(i), f"replica {i} ready", 30)

    def detect_polling(self):
        """Whether `agentgate serve` runs with [policy.bundle] (it refuses to start with it
        until it polls bundles) and shows the source in /readyz."""
        self.spawn("replica-0", [AGENTGATE, "serve", "--config", self.config(0)])
        end = time.time() + 30
        while time.time() < end:
            if self.procs["replica-0"].poll() is not None:
                self.procs.pop("replica-0")
                return False
            if self.ready(0):
                self.stop_replica(0)
                self.polling = True
                return True
            time.sleep(0.05)
        raise SystemExit("replica 0 neither started nor refused [policy.bundle] within 30 s")

    def stop_replica(self, i):
        self.stop(f"replica-{i}")

    def ready(self, i):
        return get(f"http://{REPLICAS[i]}:{ADMIN}/readyz")[0] == 200

    def readyz(self, i):
        status, _, body = get(f"http://{REPLICAS[i]}:{ADMIN}/readyz")
        return json.loads(body) if status else {}

    def start_lb(self):
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        servers = "\n".join(f"  server r{i} {ip}:{PROXY} check port {ADMIN}" for i, ip in enumerate(REPLICAS))
        load.write(cfg, f"""
global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend fe
  bind 127.0.0.1:{LB}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /readyz
  default-server inter 300ms fall 1 rise 2
{servers}
""")
        self.spawn("haproxy", ["haproxy", "-f", cfg, "-db"])
        wait_for(lambda: get(f"http://127.0.0.1:{LB}/orders/1")[0] == 401, "haproxy with every replica")


def tampered(bundle_path, edit):
    """The bundle with directory/data.json edited, signature left as it was."""
    out = io.BytesIO()
    gz = gzip.GzipFile(fileobj=out, mode="wb", mtime=0)
    with tarfile.open(bundle_path, "r:gz") as src, tarfile.open(fileobj=gz, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.lstrip("/") == "directory/data.json":
                doc = json.loads(data)
                edit(doc)
                data = json.dumps(doc, indent=2).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    gz.close()
    return out.getvalue()


def wait_for(check, what, deadline=20):
    end = time.time() + deadline
    while not check():
        if time.time() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


STATUS_LUA = """
-- thread:get() reads globals: counts must be one.
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for status, n in pairs(c) do io.write(string.format("status %d %d\\n", status, n)) end
  end
  local e = summary.errors
  io.write(string.format("errors %d %d %d %d %d\\n", e.connect, e.read, e.write, e.timeout, e.status))
end
"""


class Load:
    """wrk through HAProxy in the background, until `result` stops it (SIGINT: wrk still
    reports), or for at most `seconds`; statuses and socket errors."""

    def __init__(self, tmp, token, seconds=600, conns=16):
        script = os.path.join(tmp, "status.lua")
        load.write(script, STATUS_LUA)
        self.proc = subprocess.Popen(
            ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "-s", script, "-H", f"Authorization: Bearer {token}",
             f"http://127.0.0.1:{LB}/orders/1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out = self.proc.communicate()[0]
        statuses = {}
        errors = 0
        for line in out.splitlines():
            parts = line.split()
            if parts[:1] == ["status"]:
                statuses[int(parts[1])] = statuses.get(int(parts[1]), 0) + int(parts[2])
            elif parts[:1] == ["errors"]:
                errors = sum(int(x) for x in parts[1:5])  # connect, read, write, timeout
        failed = errors + sum(n for s, n in statuses.items() if s not in (200, 403))
        return {"requests": sum(statuses.values()), "statuses": statuses, "socket_errors": errors, "failed": failed}


def probe(url, token):
    status, _, body = get(url, {"Authorization": f"Bearer {token}"})
    return status


def propagation(cluster, token, limit=10):
    """Publishes the kill switch and watches every replica and the LB until all refuse."""
    stop = threading.Event()
    first_refusal = [None] * len(REPLICAS)
    flip_backs = [0] * len(REPLICAS)
    lb = {"first_403": None, "allowed_after": 0}

    def watch(i):
        while not stop.is_set():
            s = probe(f"http://{REPLICAS[i]}:{PROXY}/orders/1", token)
            now = time.time()
            if s == 403 and first_refusal[i] is None:
                first_refusal[i] = now
            elif s == 200 and first_refusal[i] is not None:
                flip_backs[i] += 1
            time.sleep(0.02)

    def watch_lb():
        while not stop.is_set():
            s = probe(f"http://127.0.0.1:{LB}/orders/1", token)
            if s == 403 and lb["first_403"] is None:
                lb["first_403"] = time.time()
            elif s == 200 and lb["first_403"] is not None:
                lb["allowed_after"] += 1
            time.sleep(0.01)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(len(REPLICAS))]
    threads.append(threading.Thread(target=watch_lb))
    for t in threads:
        t.start()
    published = cluster.publish("kill-switch", sales_disabled=True)
    end = published + limit
    while time.time() < end and None in first_refusal:
        time.sleep(0.05)
    time.sleep(1)  # watch a little longer for flip-backs
    stop.set()
    for t in threads:
        t.join()
    took = [round(t - published, 3) if t else None for t in first_refusal]
    return {"seconds_to_refuse": took, "all_within_s": max(took) if None not in took else None,
            "target_s": 2.0, "met": None not in took and max(took) <= 2.0,
            "mixed_lb_decisions": lb["allowed_after"], "flip_backs": sum(flip_backs)}


def rolling_restart(cluster):
    for i in range(len(REPLICAS)):
        cluster.stop_replica(i)
        cluster.start_replica(i)
        time.sleep(1)  # HAProxy: two good checks at 300 ms before it sends traffic again


def bundle_status(cluster, i):
    return cluster.readyz(i).get("bundle")


def smoke_checks(cluster):
    """What works before the gateway polls bundles: the server, and `check` over HTTP."""
    out = {}
    url = f"http://127.0.0.1:{BUNDLES}{BUNDLE_PATH}"
    status, headers, _ = get(url)
    etag = headers.get("ETag") or headers.get("Etag")
    again = get(url, {"If-None-Match": etag})[0] if etag else None
    out["bundle_server"] = {"status": status, "etag": bool(etag), "revalidated": again}
    if status != 200 or again != 304:
        raise SystemExit(f"the bundle server does not revalidate: {out['bundle_server']}")
    ok = subprocess.run([AGENTGATE, "check", "--config", cluster.config(0)], capture_output=True, text=True)
    if ok.returncode != 0 or '"kill-switch-off"' not in ok.stdout:
        raise SystemExit(f"agentgate check did not load the served bundle:\n{ok.stdout}{ok.stderr}")
    cluster.publish("tampered", sales_disabled=False, tamper=True)
    bad = subprocess.run([AGENTGATE, "check", "--config", cluster.config(0)], capture_output=True, text=True)
    if bad.returncode != 1 or "digest mismatch" not in bad.stdout + bad.stderr:
        raise SystemExit(f"agentgate check accepted a tampered bundle:\n{bad.stdout}{bad.stderr}")
    out["check"] = {"signed_bundle": "loaded", "tampered_bundle": "refused"}
    cluster.publish("kill-switch-off", sales_disabled=False)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="what runs before the gateway polls bundles, in seconds")
    ap.add_argument("--outage-seconds", type=int, default=60)
    ap.add_argument("--out", default=os.path.join(ROOT, "target/replicas"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="agentgate-replicas-")
    os.chmod(tmp, 0o755)  # nginx workers serve the bundle from here as an unprivileged user
    cluster = Cluster(tmp)
    results = {"smoke": args.smoke}
    try:
        cluster.start_upstream()
        cluster.start_bundle_server()
        cluster.publish("kill-switch-off", sales_disabled=False)
        results["checks"] = smoke_checks(cluster)
        polling = cluster.detect_polling()
        results["gateway_polls_bundles"] = polling
        if not polling and not args.smoke:
            raise SystemExit("agentgate serve does not poll [policy.bundle] yet: only --smoke can run")
        for i in range(len(REPLICAS)):
            cluster.start_replica(i)
        if polling and any(bundle_status(cluster, i) is None for i in range(len(REPLICAS))):
            raise SystemExit("/readyz has no \"bundle\" status: the benchmark reads revisions and errors there")
        cluster.start_lb()
        token = load.mint(cluster.config(0, bundle=False))
        if polling:
            wait_for(lambda: all((bundle_status(cluster, i) or {}).get("revision") == "kill-switch-off"
                                 for i in range(len(REPLICAS))), "every replica on the first bundle", 30)

        background = Load(tmp, token)
        time.sleep(1 if args.smoke else 5)
        if polling:
            results["propagation"] = propagation(cluster, token)
        rolling_restart(cluster)
        time.sleep(1 if args.smoke else 5)
        results["restart"] = background.result()
        if results["restart"]["failed"]:
            print(f"rolling restart: {results['restart']['failed']} failed requests", file=sys.stderr)

        if polling:
            # The kill switch is on; someone serves a copy edited to turn it off.
            cluster.publish("tampered", sales_disabled=False, tamper=True)
            time.sleep(5)
            results["tampered"] = [{"revision": (bundle_status(cluster, i) or {}).get("revision"),
                                    "last_error": (bundle_status(cluster, i) or {}).get("last_error"),
                                    "still_refusing": probe(f"http://{REPLICAS[i]}:{PROXY}/orders/1", token) == 403}
                                   for i in range(len(REPLICAS))]
            cluster.stop("bundles")
            outage = 5 if args.smoke else args.outage_seconds
            background = Load(tmp, token)
            ready = []
            end = time.time() + outage
            while time.time() < end:
                ready.append(all(cluster.ready(i) for i in range(len(REPLICAS))))
                time.sleep(1)
            results["outage"] = {"seconds": outage, "always_ready": all(ready), **background.result(),
                                 "last_errors": [(bundle_status(cluster, i) or {}).get("last_error")
                                                 for i in range(len(REPLICAS))]}
            cluster.start_bundle_server()
            published = cluster.publish("recovered", sales_disabled=False)
            wait_for(lambda: all(probe(f"http://{ip}:{PROXY}/orders/1", token) == 200 for ip in REPLICAS),
                     "the recovered bundle on every replica", 20)
            results["recovery_s"] = round(time.time() - published, 3)
    finally:
        cluster.stop_all()
    write_report(results, args.out)
    failed = results["restart"]["failed"] + results.get("outage", {}).get("failed", 0)
    return 1 if failed else 0


def write_report(results, out):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    lines = ["# Replicas benchmark", ""]
    if "propagation" in results:
        p = results["propagation"]
        lines += [f"Kill switch: every replica refused within {p['all_within_s']} s (target {p['target_s']} s, "
                  f"{'met' if p['met'] else 'NOT met'}); per replica {p['seconds_to_refuse']}; "
                  f"{p['mixed_lb_decisions']} allowed LB responses after the first refusal; {p['flip_backs']} flip-backs.", ""]
    r = results["restart"]
    lines += [f"Rolling restart under load: {r['requests']} requests, {r['failed']} failed "
              f"({r['socket_errors']} socket errors), statuses {r['statuses']}.", ""]
    if "tampered" in results:
        lines += [f"Tampered bundle: {results['tampered']}", ""]
    if "outage" in results:
        o = results["outage"]
        lines += [f"Bundle server down {o['seconds']} s: always ready {o['always_ready']}, {o['requests']} requests, "
                  f"{o['failed']} failed; recovery {results['recovery_s']} s.", ""]
    if not results.get("gateway_polls_bundles"):
        lines += ["Propagation, tampered and outage scenarios not run: the gateway does not poll [policy.bundle] yet.", ""]
    text = "\n".join(lines)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
