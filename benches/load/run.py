#!/usr/bin/env python3
"""Side-by-side load benchmark of agentgate, run by benches/load/run.

Everything runs on loopback. The system under test (SUT) is pinned to CPU 0 with one worker;
the load generator (wrk, oha) and the upstream (nginx returning a fixed 200) share CPU 1.
Configurations are interleaved over several rounds; the report gives medians.

Measured per configuration and connection count: throughput (wrk, keep-alive), SUT CPU
seconds per request (utime+stime from /proc/<pid>/stat over the run), peak RSS (VmHWM), and,
in full runs, latency at a fixed 1,000 req/s with oha's coordinated-omission correction.
Full runs then check memory: RSS once 100k distinct tokens are cached, and RSS sampled over a
soak at about half the cached-token throughput, cycling over the same tokens.
Output: results.json and results.md in --out (default target/load).

Transport rows (`--focus transport` keeps only them and their references): nginx
terminating TLS and agentgate with a cached token over TLS (wrk, keep-alive); HTTP/2 and
HTTP/1.1 over that TLS listener and over nginx's with the same load generator (h2load, one
stream per connection; nginx's ratio of the two is printed for reference); and full TLS handshakes per second for both (wrk with `Connection: close`,
so every request is a new connection and a new handshake). All TLS listeners serve the
same ECDSA P-256 certificate. The report checks the transport targets: TLS cached-token
CPU within 1.15x of plain, h2 throughput at least HTTP/1.1's, agentgate's handshake CPU
within 1.3x of nginx's.

Another policy set: `--compare-policies big=DIR` runs this build with the policy directory
DIR (for instance one whose data/directory.json holds 100,000 agents from
`agentgate directory sync`), same token, same routes.
Before and after a change: `--compare before=PATH/TO/OLD/agentgate` (repeatable) adds that
binary's cached-token rows to the same interleaved run, with the same configuration, and
`--focus cached` keeps only bare pingora and the cached-token rows. The cached-token row
repeats one request, so the policy decision cache answers it; the row with a new
`x-request-id` (a policy input header) on every request makes every input new, so every
decision is evaluated. Outside smoke runs each
agentgate is warmed past its first 12,000 requests first, so the compiled policy engine's
early cross-checks (every allowed decision of the first 10,000) do not count.
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A smoke run proves that every configuration works, not how fast: it runs the dev build
# that the tests share (benches/load/run builds it); a measured run, the release build.
BUILD = os.path.join(ROOT, "target", "debug" if "--smoke" in sys.argv[1:] else "release")
AGENTGATE = os.path.join(BUILD, "agentgate")
BARE = os.path.join(BUILD, "examples/bare_pingora")
KEY = os.path.join(ROOT, "tests/data/keys/primary.pem")
TENANT = "aaaaaaaa-1111-1111-1111-000000000001"
AUD = "api://bbbbbbbb-2222-2222-2222-000000000001"
SUT_CPU, LOAD_CPU = "0", "1"
UPSTREAM, NGINX, BARE_PORT, HAPROXY, AG_CACHED, AG_UNCACHED = 19001, 19002, 19003, 19004, 19005, 19006
NGINX_TLS, AG_TLS = 19007, 19008
COMPARE_BASE = 19010
NEW_INPUT_ROW = "agentgate cached token, new x-request-id each request (decision cache misses)"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def jwks_for_key(pem_path):
    """The public JWK of the key, with the kid agentgate's dev minting uses."""
    modulus_hex = run(["openssl", "rsa", "-in", pem_path, "-noout", "-modulus"]).strip().split("=", 1)[1]
    n = bytes.fromhex(modulus_hex)
    kid = b64url(hashlib.sha256(n).digest()[:12])
    return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64url(n), "e": "AQAB"}]}


def mint(config, count=1):
    return run([AGENTGATE, "token", "mint", "--config", config, "--key", KEY, "--client",
                "dddddddd-4444-4444-4444-000000000001", "--blueprint", "cccccccc-3333-3333-3333-000000000001",
                "--role", "Orders.Read.All", "--ttl", "6h", "--count", str(count)]).strip()


def pinned(cpu, cmd, log):
    return subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_port(port, deadline=20, tls=False):
    end = time.time() + deadline
    while time.time() < end:
        if tls:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
                continue
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # answered (401/404 are fine)
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"nothing answered on port {port} within {deadline}s")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def peak_rss_kib(pids):
    worst = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    worst = max(worst, int(line.split()[1]))
    return worst


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024


def metric(admin_port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def memory(tmp, procs, tokens, soak_minutes, rate):
    """Peak RSS once `tokens` distinct tokens are cached, then RSS over a soak at `rate` req/s."""
    pid = procs["agentgate"].pid
    print(f"minting {tokens:,} distinct tokens", file=sys.stderr)
    write(f"{tmp}/tokens.txt", mint(f"{tmp}/agentgate.toml", tokens) + "\n")
    write(f"{tmp}/cycle.lua", f"""
local tokens = {{}}
for line in io.lines("{tmp}/tokens.txt") do tokens[#tokens + 1] = "Bearer " .. line end
local i = 0
local pause = tonumber(os.getenv("PAUSE_MS") or "0")
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/orders/1", {{["Authorization"] = tokens[i]}})
end
if pause > 0 then delay = function() return pause end end
""")
    # One pass over every token fills the cache (each first use is one RS256 verify).
    fill_s = max(10, tokens // 2500)
    requests, rps, non2xx, _ = wrk(AG_CACHED, 16, fill_s, script=f"{tmp}/cycle.lua")
    if non2xx:
        raise SystemExit(f"memory fill: {non2xx} of {requests} responses were not 2xx")
    out = {"tokens": tokens, "fill_requests": requests,
           "cached_entries": metric(AG_CACHED + 100, "agentgate_token_cache_entries"),
           "rss_after_fill_mib": rss_mib(pid), "peak_rss_after_fill_mib": peak_rss_kib([pid]) / 1024}
    if soak_minutes:
        conns = 16
        pause_ms = max(1, round(1000 * conns / rate))
        env = dict(os.environ, PAUSE_MS=str(pause_ms))
        samples = []
        soak = subprocess.Popen(["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{soak_minutes * 60}s",
                                 "-s", f"{tmp}/cycle.lua", f"http://127.0.0.1:{AG_CACHED}/orders/1"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        while soak.poll() is None:
            samples.append(round(rss_mib(pid), 1))
            time.sleep(30)
        text = soak.stdout.read()
        requests = int(next(l for l in text.splitlines() if "requests in" in l).split()[0])
        # Keep what the gateway said about any refusal: the temporary directory goes away.
        denies = [l.strip() for l in open(f"{tmp}/servers.log") if '"allow":false' in l][-5:]
        out.update({"soak_last_denies": denies, "soak_minutes": soak_minutes, "soak_rate_req_s": requests / (soak_minutes * 60),
                    "soak_rss_samples_mib": samples, "soak_non_2xx": next((int(l.split()[-1]) for l in text.splitlines() if "Non-2xx" in l), 0)})
    return out


def family(pid):
    """The process and its children (nginx and haproxy fork workers)."""
    kids = run(["pgrep", "-P", str(pid)]).split() if subprocess.run(["pgrep", "-P", str(pid)], capture_output=True).returncode == 0 else []
    return [pid] + [int(k) for k in kids]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def agentgate_config(tmp, name, port, cache, policies=os.path.join(ROOT, "policies"), tls_port=None):
    tls_listener = "" if tls_port is None else f"""
[[listeners]]
address = "127.0.0.1:{tls_port}"
tls = {{ certificates = [{{ cert = "{tmp}/tls.crt", key = "{tmp}/tls.key" }}] }}
"""
    write(f"{tmp}/{name}.toml", f"""
[server]
threads = 1
grace_period = "0s"
graceful_shutdown_timeout = "1s"
pid_file = "{tmp}/{name}.pid"
upgrade_sock = "{tmp}/{name}.sock"
[[listeners]]
address = "127.0.0.1:{port}"
{tls_listener}
[admin]
address = "127.0.0.1:{port + 100}"
[identity]
[[identity.tenants]]
id = "{TENANT}"
jwks_file = "{tmp}/jwks.json"
[token_cache]
enabled = {cache}
[policy]
dir = "{policies}"
# The budget is wall-clock time: on a shared benchmark host a preempted evaluation would
# otherwise count as a policy_error. Production keeps the 5 ms default.
timeout = "25ms"
[log]
allow_sample_rate = 0.0
[reload]
watch = false
[[routes]]
id = "orders"
path_prefix = "/orders"
upstreams = ["127.0.0.1:{UPSTREAM}"]
audiences = ["{AUD}"]
""")
    return f"{tmp}/{name}.toml"


def start_all(tmp, logs, compare):
    procs = {}
    write(f"{tmp}/upstream.conf", f"""
worker_processes 1; daemon off; pid {tmp}/upstream.pid; error_log {tmp}/upstream.err;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{UPSTREAM}; keepalive_requests 1000000;
  location / {{ return 200 "ok"; }} }} }}""")
    procs["upstream"] = pinned(LOAD_CPU, ["nginx", "-c", f"{tmp}/upstream.conf", "-p", tmp], logs)
    # One certificate for every TLS listener: ECDSA P-256, as a modern deployment has.
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{tmp}/tls.key", "-out", f"{tmp}/tls.crt", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    write(f"{tmp}/nginx.conf", f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{ worker_connections 4096; }}
http {{ access_log off; upstream up {{ server 127.0.0.1:{UPSTREAM}; keepalive 64; }}
  server {{ listen 127.0.0.1:{NGINX}; keepalive_requests 1000000;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
  server {{ listen 127.0.0.1:{NGINX_TLS} ssl http2; keepalive_requests 1000000;
    ssl_certificate {tmp}/tls.crt; ssl_certificate_key {tmp}/tls.key; ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}""")
    procs["nginx"] = pinned(SUT_CPU, ["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp], logs)
    procs["pingora"] = pinned(SUT_CPU, [BARE, f"127.0.0.1:{BARE_PORT}", f"127.0.0.1:{UPSTREAM}", "1"], logs)
    run(["openssl", "rsa", "-in", KEY, "-pubout", "-out", f"{tmp}/pub.pem"])
    write(f"{tmp}/haproxy.cfg", f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{HAPROXY}
  http-request set-var(txn.bearer) http_auth_bearer
  http-request deny unless {{ var(txn.bearer),jwt_verify("RS256","{tmp}/pub.pem") -m int 1 }}
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:{UPSTREAM}
""")
    procs["haproxy"] = pinned(SUT_CPU, ["haproxy", "-f", f"{tmp}/haproxy.cfg"], logs)
    write(f"{tmp}/jwks.json", json.dumps(jwks_for_key(KEY)))
    for name, port, cache, tls_port in [("agentgate", AG_CACHED, "true", AG_TLS),
                                        ("agentgate-uncached", AG_UNCACHED, "false", None)]:
        config = agentgate_config(tmp, name, port, cache, tls_port=tls_port)
        procs[name] = pinned(SUT_CPU, [AGENTGATE, "serve", "--config", config], logs)
    for i, (label, binary, policies) in enumerate(compare):
        port = COMPARE_BASE + i
        config = agentgate_config(tmp, f"compare-{i}", port, "true", policies)
        procs[f"compare-{i}"] = pinned(SUT_CPU, [binary, "serve", "--config", config], logs)
    for port in [UPSTREAM, NGINX, BARE_PORT, HAPROXY, AG_CACHED, AG_UNCACHED] + compare_ports(compare):
        wait_port(port)
    for port in [NGINX_TLS, AG_TLS]:
        wait_port(port, tls=True)
    for port in [AG_CACHED, AG_UNCACHED] + compare_ports(compare):
        wait_compiled_engine(port + 100)
    return procs


def wait_compiled_engine(admin_port, deadline=300):
    """Measures start once the compiled policy engine decides, as it does in steady state."""
    end = time.time() + deadline
    state = None
    while time.time() < end:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as r:
            state = json.load(r).get("policy_engine")
        if state == "compiled":
            return
        time.sleep(0.05)
    raise SystemExit(f"agentgate on admin port {admin_port}: policy engine is {state!r}, not 'compiled', after {deadline}s")


def warm_up(ports, bearer, seconds=2):
    """Runs each agentgate past its early cross-checks, which check every one of the first
    10,000 compiled decisions against the interpreter: rounds measure the steady state."""
    for port in ports:
        total = 0
        for _ in range(10):
            requests, _, non2xx, _ = wrk(port, 16, seconds, bearer)
            if non2xx:
                raise SystemExit(f"warm-up on port {port}: {non2xx} of {requests} responses not 2xx")
            total += requests
            if total > 12_000:
                break


def TRANSPORT_ROWS(bearer):
    """The TLS, HTTP/2 and handshake rows: (name, port, process, header, script, 2xx, tool)."""
    return [
        ("nginx TLS termination", NGINX_TLS, "nginx", bearer, None, True, "wrk-tls"),
        ("agentgate TLS cached token", AG_TLS, "agentgate", bearer, None, True, "wrk-tls"),
        ("nginx TLS termination, HTTP/1.1 (h2load)", NGINX_TLS, "nginx", bearer, None, True, "h2load-h1"),
        ("nginx TLS termination, h2 (h2load)", NGINX_TLS, "nginx", bearer, None, True, "h2load-h2"),
        ("agentgate TLS cached token, HTTP/1.1 (h2load)", AG_TLS, "agentgate", bearer, None, True, "h2load-h1"),
        ("agentgate TLS cached token, h2 (h2load)", AG_TLS, "agentgate", bearer, None, True, "h2load-h2"),
        ("agentgate TLS cached token, h2, 8 streams per connection (h2load)", AG_TLS, "agentgate", bearer, None,
         True, "h2load-h2-mux"),
        ("nginx TLS new connection per request", NGINX_TLS, "nginx", bearer, None, True, "wrk-tls-close"),
        ("agentgate TLS new connection per request", AG_TLS, "agentgate", bearer, None, True, "wrk-tls-close"),
    ]


def compare_ports(compare):
    return [COMPARE_BASE + i for i in range(len(compare))]


def wrk(port, conns, seconds, header=None, script=None, scheme="http", close=False):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s"]
    if header:
        cmd += ["-H", header]
    if close:
        cmd += ["-H", "Connection: close"]
    if script:
        cmd += ["-s", script]
    out = run(cmd + [f"{scheme}://127.0.0.1:{port}/orders/1"])
    requests = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
    rps = float(next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1])
    non2xx = next((int(l.split()[-1]) for l in out.splitlines() if "Non-2xx" in l), 0)
    errors = "Socket errors" in out
    return requests, rps, non2xx, errors


H2LOAD_GRACE_S = 30


def h2load(port, conns, seconds, header, h1=False, streams=1):
    """h2load over TLS (ALPN h2, or HTTP/1.1 with --h1): `conns` requests in flight, as
    `streams` concurrent streams on each of conns / streams connections."""
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-c", str(max(1, conns // streams)), "-m", str(streams),
           "-D", str(seconds)]
    if h1:
        cmd += ["--h1"]
    if header:
        cmd += ["-H", header]
    # h2load has been seen to keep one connection sending long past -D; a run that does not
    # end within a grace period is killed and measured again (once).
    for attempt in (1, 2):
        try:
            out = run(cmd + [f"https://127.0.0.1:{port}/orders/1"], timeout=seconds + H2LOAD_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            if attempt == 2:
                raise SystemExit(f"h2load on port {port} ran past its {seconds} s duration twice")
            print(f"  h2load on port {port} did not stop after {seconds} s; measuring again", file=sys.stderr)
    line = next(l for l in out.splitlines() if l.startswith("finished in"))
    rps = float(line.split(",")[1].split()[0])
    done = next(l for l in out.splitlines() if l.startswith("requests:"))
    requests = int(done.split()[1])
    codes = next(l for l in out.splitlines() if l.startswith("status codes:"))
    ok2xx = int(codes.split(":")[1].split()[0])
    if not h1 and "Application protocol: h2" not in out:
        raise SystemExit(f"h2load on port {port} did not negotiate h2:\n{out}")
    return requests, rps, requests - ok2xx, False


def measure(tool, port, conns, seconds, header, script):
    """One throughput run with the configuration's load generator."""
    if tool == "wrk":
        return wrk(port, conns, seconds, header, script)
    if tool == "wrk-tls":
        return wrk(port, conns, seconds, header, script, scheme="https")
    if tool == "wrk-tls-close":
        return wrk(port, conns, seconds, header, script, scheme="https", close=True)
    if tool == "h2load-h2":
        return h2load(port, conns, seconds, header)
    if tool == "h2load-h1":
        return h2load(port, conns, seconds, header, h1=True)
    if tool == "h2load-h2-mux":
        return h2load(port, conns, seconds, header, streams=8)
    raise ValueError(tool)


def oha(port, seconds, header):
    cmd = ["taskset", "-c", LOAD_CPU, "oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s",
           "-q", "1000", "--latency-correction", "-c", "16"]
    if header:
        cmd += ["-H", header]
    out = json.loads(run(cmd + [f"http://127.0.0.1:{port}/orders/1"]))
    p = out.get("latencyPercentiles", {})
    return p.get("p50"), p.get("p99")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds-long run proving every configuration works")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10, help="seconds per throughput run")
    ap.add_argument("--out", default=os.path.join(ROOT, "target/load"))
    ap.add_argument("--memory-tokens", type=int, default=100_000,
                    help="distinct cached tokens for the memory check (0: skip; full runs only)")
    ap.add_argument("--soak-minutes", type=int, default=10, help="after the memory check, RSS over this long at --soak-rate (0: skip)")
    ap.add_argument("--soak-rate", type=int, default=6000, help="requests per second in the soak (about half the cached-token throughput)")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=BINARY",
                    help="also run this agentgate binary with a cached token, interleaved with the rest (e.g. an earlier build)")
    ap.add_argument("--compare-policies", action="append", default=[], metavar="LABEL=DIR",
                    help="also run this build with the policy directory DIR (e.g. a 100,000-agent directory) with a cached token")
    ap.add_argument("--focus", choices=["all", "cached", "transport"], default="all",
                    help="cached: only bare pingora, agentgate with a cached token and the --compare binaries; "
                         "transport: the TLS, HTTP/2 and handshake rows with their references")
    args = ap.parse_args()
    compare = [(*c.split("=", 1), os.path.join(ROOT, "policies")) for c in args.compare]
    compare += [(label, AGENTGATE, os.path.abspath(d)) for label, d in (c.split("=", 1) for c in args.compare_policies)]
    if args.smoke:
        args.rounds, args.duration = 1, 1
    conn_counts = [16] if args.smoke else [16, 64]
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="agentgate-load-")
    logs = open(f"{tmp}/servers.log", "w")
    procs = start_all(tmp, logs, compare)
    try:
        token = mint(f"{tmp}/agentgate.toml")
        bearer = f"Authorization: Bearer {token}"
        head = token.rsplit(".", 1)[0]
        # Unique tokens with well-formed but wrong signatures: each one costs an RS256 verify.
        write(f"{tmp}/badsig.lua", f"""
local prefix = "{head}."
counter = 0
request = function()
  counter = counter + 1
  local sig = string.rep("a", 330) .. string.format("%011d", counter) .. "A"
  return wrk.format("GET", "/orders/1", {{["Authorization"] = "Bearer " .. prefix .. sig}})
end
""")
        # The cached token with a new x-request-id (a policy input header) on every request:
        # every input is new, so every decision is evaluated and the decision cache misses.
        write(f"{tmp}/unique_request_id.lua", f"""
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/orders/1", {{["Authorization"] = "Bearer {token}", ["x-request-id"] = tostring(counter)}})
end
""")
        configs = [
            ("upstream direct", UPSTREAM, "upstream", bearer, None, True, "wrk"),
            ("nginx pass-through", NGINX, "nginx", bearer, None, True, "wrk"),
            ("bare pingora", BARE_PORT, "pingora", bearer, None, True, "wrk"),
            ("haproxy jwt_verify RS256", HAPROXY, "haproxy", bearer, None, True, "wrk"),
            ("agentgate cached token", AG_CACHED, "agentgate", bearer, None, True, "wrk"),
            (NEW_INPUT_ROW, AG_CACHED, "agentgate", None, f"{tmp}/unique_request_id.lua", True, "wrk"),
            ("agentgate uncached (RS256 per request)", AG_UNCACHED, "agentgate-uncached", bearer, None, True, "wrk"),
            ("agentgate deny: no token", AG_CACHED, "agentgate", None, None, False, "wrk"),
            ("agentgate deny: garbage token", AG_CACHED, "agentgate", "Authorization: Bearer garbage", None, False, "wrk"),
            ("agentgate deny: bad signatures, unique", AG_CACHED, "agentgate", None, f"{tmp}/badsig.lua", False, "wrk"),
        ] + TRANSPORT_ROWS(bearer) + [
            row
            for i, (label, _, _) in enumerate(compare)
            for row in [
                (f"agentgate cached token [{label}]", COMPARE_BASE + i, f"compare-{i}", bearer, None, True, "wrk"),
                (f"{NEW_INPUT_ROW} [{label}]", COMPARE_BASE + i, f"compare-{i}", None,
                 f"{tmp}/unique_request_id.lua", True, "wrk"),
            ]]
        if args.focus == "cached":
            keep = {"bare pingora", "haproxy jwt_verify RS256", "agentgate cached token", NEW_INPUT_ROW}
            configs = [c for c in configs
                       if c[0] in keep or c[0].startswith(("agentgate cached token [", NEW_INPUT_ROW))]
        if args.focus == "transport":
            keep = {"bare pingora", "haproxy jwt_verify RS256", "agentgate cached token", "nginx pass-through"}
            keep |= {row[0] for row in TRANSPORT_ROWS(bearer)}
            configs = [c for c in configs if c[0] in keep]
        results = {name: {} for name, *_ in configs}
        if not args.smoke:
            warm_up([port for _, port, _, header, _, want_2xx, _ in configs
                     if want_2xx and port in {AG_CACHED, AG_UNCACHED} | set(compare_ports(compare))], bearer)
        for rnd in range(args.rounds):
            for name, port, proc, header, script, want_2xx, tool in configs:
                pids = family(procs[proc].pid)
                for c in conn_counts:
                    before = cpu_seconds(pids)
                    requests, rps, non2xx, errors = measure(tool, port, c, args.duration, header, script)
                    cpu = cpu_seconds(pids) - before
                    ok = (non2xx == 0) if want_2xx else (non2xx == requests)
                    if not ok:
                        logs.flush()
                        denies = [l for l in open(f"{tmp}/servers.log") if '"allow":false' in l][-3:]
                        raise SystemExit(f"{name}: {non2xx} of {requests} responses were {'not ' if want_2xx else ''}2xx; "
                                         f"last denies: {''.join(denies)}")
                    r = results[name].setdefault(str(c), {"rps": [], "cpu_us_per_req": []})
                    r["rps"].append(rps)
                    r["cpu_us_per_req"].append(1e6 * cpu / max(requests, 1))
                results[name]["peak_rss_mib"] = peak_rss_kib(pids) / 1024
                if not args.smoke and want_2xx and tool == "wrk" and shutil.which("oha"):
                    p50, p99 = oha(port, args.duration, header)
                    lat = results[name].setdefault("latency_1000rps", {"p50_us": [], "p99_us": []})
                    lat["p50_us"].append(p50 * 1e6 if p50 is not None else None)
                    lat["p99_us"].append(p99 * 1e6 if p99 is not None else None)
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        mem = None
        if not args.smoke and args.memory_tokens:
            mem = memory(tmp, procs, args.memory_tokens, args.soak_minutes, args.soak_rate)
        report(results, conn_counts, args, mem)
    finally:
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def transport_targets(results, conn_counts):
    """The transport targets, each with its figure and whether it was met."""
    c = str(conn_counts[0])

    def figure(name, key):
        r = results.get(name, {}).get(c)
        return med(r[key]) if r else None

    lines = []
    checks = [
        ("TLS cached-token CPU / plain", figure("agentgate TLS cached token", "cpu_us_per_req"),
         figure("agentgate cached token", "cpu_us_per_req"), "<=", 1.15),
        ("h2 cached-token throughput / HTTP/1.1 (h2load, TLS)", figure("agentgate TLS cached token, h2 (h2load)", "rps"),
         figure("agentgate TLS cached token, HTTP/1.1 (h2load)", "rps"), ">=", 1.0),
        ("h2 with 8 streams per connection / HTTP/1.1 (h2load, TLS)",
         figure("agentgate TLS cached token, h2, 8 streams per connection (h2load)", "rps"),
         figure("agentgate TLS cached token, HTTP/1.1 (h2load)", "rps"), ">=", 1.0),
        ("h2 cached-token throughput / plain HTTP/1.1 (wrk)", figure("agentgate TLS cached token, h2 (h2load)", "rps"),
         figure("agentgate cached token", "rps"), ">=", 1.0),
        ("full-handshake CPU / nginx's", figure("agentgate TLS new connection per request", "cpu_us_per_req"),
         figure("nginx TLS new connection per request", "cpu_us_per_req"), "<=", 1.3),
    ]
    for label, ours, reference, op, target in checks:
        if ours is None or reference is None:
            continue
        ratio = ours / reference
        met = ratio <= target if op == "<=" else ratio >= target
        lines.append(f"- {label}: {ratio:.2f} (target {op} {target}): {'met' if met else 'missed'}")
    # What HTTP/2 with one stream per connection costs a proxy anyway: the same client's
    # token arrives as a new Huffman-coded literal on every request.
    nginx_h2 = figure("nginx TLS termination, h2 (h2load)", "rps")
    nginx_h1 = figure("nginx TLS termination, HTTP/1.1 (h2load)", "rps")
    if nginx_h2 and nginx_h1:
        lines.append(f"- for reference, nginx h2 / HTTP/1.1 (h2load, TLS): {nginx_h2 / nginx_h1:.2f} (no target)")
    return lines


def report(results, conn_counts, args, mem):
    machine = {"cpus": os.cpu_count(), "kernel": os.uname().release,
               "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")}
    doc = {"machine": machine, "rounds": args.rounds, "duration_s": args.duration, "smoke": args.smoke, "results": results,
           "memory": mem}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(doc, f, indent=2)
    bare = results["bare pingora"]
    hap = results["haproxy jwt_verify RS256"]
    lines = [f"Machine: {machine['cpu_model']}, {machine['cpus']} CPUs; {args.rounds} rounds x {args.duration}s; medians.", "",
             *(["Smoke run of the dev (unoptimised) build: it proves the configurations work; its figures measure nothing.", ""]
               if args.smoke else []),
             "| configuration | conns | req/s | x bare pingora | x haproxy jwt | CPU us/req | peak RSS MiB | p50 us @1k/s | p99 us @1k/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for c in conn_counts:
            m = r[str(c)]
            rps, cpu = med(m["rps"]), med(m["cpu_us_per_req"])
            lat = r.get("latency_1000rps", {})
            p50, p99 = med(lat.get("p50_us", [])), med(lat.get("p99_us", []))
            fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
            lines.append(f"| {name} | {c} | {rps:,.0f} | {rps / med(bare[str(c)]['rps']):.2f} | {rps / med(hap[str(c)]['rps']):.2f} | "
                         f"{cpu:.1f} | {r['peak_rss_mib']:.1f} | {fmt(p50, 0)} | {fmt(p99, 0)} |")
    targets = transport_targets(results, conn_counts)
    if targets:
        lines += ["", "Transport targets (conns " + str(conn_counts[0]) + "):"] + targets
    if mem:
        lines += ["", f"Memory (agentgate, cached tokens): {mem['tokens']:,} distinct tokens sent, "
                      f"{mem['cached_entries']:,.0f} cached; RSS {mem['rss_after_fill_mib']:.1f} MiB, peak {mem['peak_rss_after_fill_mib']:.1f} MiB."]
        if mem.get("soak_rss_samples_mib"):
            r = mem["soak_rss_samples_mib"]
            lines.append(f"Soak: {mem['soak_minutes']} min at {mem['soak_rate_req_s']:,.0f} req/s over the same tokens, "
                         f"{mem['soak_non_2xx']} non-2xx; RSS first {r[0]} MiB, last {r[-1]} MiB, max {max(r)} MiB "
                         f"({len(r)} samples, 30 s apart).")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
