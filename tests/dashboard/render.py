#!/usr/bin/env python3
"""Draws the Grafana dashboard's panels to one PNG from a real Prometheus
scraping a real unsandbox agent on the local LXD.

Grafana is in none of the package registries this project builds from, so
this is not a Grafana screenshot: it runs every PromQL expression of
charts/unsandbox/dashboards/unsandbox.json against Prometheus's HTTP API, as
Grafana would with every variable on "All", and draws each panel where the
dashboard's grid puts it, with matplotlib.

What it runs, all on this host and on loopback:
  1. Prometheus (Debian's `prometheus`) scraping the agent every 5 s; the
     target carries `node=<node name>`, as the chart's ServiceMonitor adds.
  2. `unsandbox standalone` in a fresh LXD project `ut-dash-XXXXXX`, with two
     pools: `default/small` (the sample image: python, bash, lua) and
     `default/checked` (the same LXD image: `pycheck`, python whose compile
     stage is `py_compile`, and `broken`, a language whose smoke test expects
     the wrong output, so it is not served).
  3. Traffic through the HTTP API for --minutes: hello worlds, a non-zero
     exit, timeouts, compile errors, an unknown language, a limit above the
     pool's maximum; 1, then 4, then 2 clients at a time.
  4. The panels' queries over the whole run (range queries, 5 s steps;
     `$__rate_interval` as Grafana derives it: max(4 x scrape, step + scrape)).
Then it stops both, deletes the project's containers and the project.

The controller does not run here: its panels show what Prometheus has,
which is no data.

Needs root, LXD with storage pool `unsandbox` and image `unsandbox-small`
(images/lxd-host.sh, images/build.sh small), `apt-get install prometheus`,
a built binary (cargo build), and matplotlib:
  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install matplotlib
  /tmp/venv/bin/python tests/dashboard/render.py --binary target/debug/unsandbox
"""

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import panels  # noqa: E402  (beside this file: the drawing)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts/unsandbox/dashboards/unsandbox.json"
SMALL_IMAGE = ROOT / "manifests/samples/languageimage-small.yaml"
NODE = "dash-node"
SCRAPE_SECONDS = 5
STEP_SECONDS = 5

POOLS = """\
apiVersion: unsandbox.com/v1alpha1
kind: ExecutorPool
metadata: {name: small, namespace: default}
spec:
  image: small
  warm: 2
  limits: {cpus: 1, memoryMib: 256, processes: 64, tmpfsMib: 64}
  execution:
    wallTimeMs: {default: 5000, max: 30000}
    queueTimeoutMs: 20000
---
apiVersion: unsandbox.com/v1alpha1
kind: ExecutorPool
metadata: {name: checked, namespace: default}
spec:
  image: checked
  warm: 1
  limits: {cpus: 1, memoryMib: 256, processes: 64, tmpfsMib: 64}
  execution:
    queueTimeoutMs: 20000
"""

CHECKED_IMAGE = """\
apiVersion: unsandbox.com/v1alpha1
kind: LanguageImage
metadata: {name: checked}
spec:
  source: {recipe: small}
  languages:
    - name: pycheck
      sourceFile: main.py
      compile: python3 -m py_compile main.py
      run: python3 main.py
      smokeTests:
        - {name: hello, code: 'print("hello")', expectedStdout: "hello\\n"}
    - name: broken
      sourceFile: main.lua
      run: lua5.4 main.lua
      smokeTests:
        - {name: hello, code: 'print("bye")', expectedStdout: "hello\\n"}
"""

# (weight, language, body): what the clients send.
REQUESTS = [
    (30, "python", {"code": "print('hello')"}),
    (20, "bash", {"code": "echo hello"}),
    (10, "lua", {"code": "print('hello')"}),
    (8, "python", {"code": "import sys; sys.exit(3)"}),
    (3, "python", {"code": "while True: pass", "timeout_ms": 1000}),
    (8, "pycheck", {"code": "print(6 * 7)"}),
    (6, "pycheck", {"code": "print(6 * 7"}),
    (3, "cobol", {"code": "x"}),
    (2, "python", {"code": "pass", "timeout_ms": 999999}),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None, timeout=60):
    """GET (or POST JSON): the status and the body, decoded when it is JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        r = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        r = e
    with r:
        text = r.read()
        if "json" in (r.headers.get("content-type") or ""):
            return r.status, json.loads(text)
        return r.status, text.decode()


def wait_for(what, check, limit):
    start = time.time()
    while time.time() - start < limit:
        try:
            if check():
                return
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            pass
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}")


def serving(api):
    """Whether the agent serves every language the clients use but `cobol`
    (proven by the smoke tests) and both pools are full."""
    status, languages = http(f"{api}/languages")
    wanted = {language for _, language, _ in REQUESTS} - {"cobol"}
    status_pools, pools = http(f"{api}/pools")
    return (status == status_pools == 200
            and wanted <= {entry["name"] for entry in languages}
            and all(p["status"]["nodes"][0]["warm"] >= p["spec"]["warm"] for p in pools))


def traffic(api, minutes, seed=7):
    """Clients post executions for `minutes`: 1, then 4, then 2 at a time.
    Returns the count of each answer's status (or HTTP code)."""
    rng = random.Random(seed)
    weights = [w for w, _, _ in REQUESTS]
    counts, lock = {}, threading.Lock()
    end = time.time() + minutes * 60
    phases = [(1, 0.25), (4, 0.35), (2, 0.40)]

    def client(until):
        while time.time() < until:
            with lock:
                _, language, body = rng.choices(REQUESTS, weights)[0]
            status, answer = http(f"{api}/execute/{language}", body)
            key = answer.get("status") if status == 200 else f"HTTP {status}"
            with lock:
                counts[key] = counts.get(key, 0) + 1

    for clients, share in phases:
        until = min(end, time.time() + share * minutes * 60)
        threads = [threading.Thread(target=client, args=(until,)) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return counts


def substitute(expr, rate_interval):
    """The expression as Grafana sends it with every variable on "All"."""
    for var in ("$__rate_interval", "${__rate_interval}"):
        expr = expr.replace(var, rate_interval)
    for var in ("$pool", "${pool}", "$node", "${node}"):
        expr = expr.replace(var, ".*")
    return expr


def query(prom, expr, start, end, instant):
    if instant:
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": end})
    else:
        params = {"query": expr, "start": start, "end": end, "step": STEP_SECONDS}
        url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(params)
    status, body = http(url)
    if status != 200 or body.get("status") != "success":
        raise SystemExit(f"Prometheus refused {expr}: {body}")
    return body["data"]["result"]


def collect(prom, dashboard, start, end):
    """Each panel's series: {panel id: [(target, [result...]), ...]}."""
    rate_interval = f"{max(4 * SCRAPE_SECONDS, STEP_SECONDS + SCRAPE_SECONDS)}s"
    data = {}
    for panel in panels.all_panels(dashboard):
        instant = panel["type"] in ("bargauge", "stat")
        data[panel["id"]] = [
            (t, query(prom, substitute(t["expr"], rate_interval), start, end, instant))
            for t in panel.get("targets", [])
        ]
    return data


def lxc(*args, check=True):
    return subprocess.run(["lxc", *args], check=check, capture_output=True, text=True).stdout


def delete_project(project):
    names = lxc("list", "--project", project, "--format", "csv", "-c", "n", check=False)
    for name in names.split():
        lxc("delete", "--project", project, "--force", name, check=False)
    lxc("project", "delete", project, check=False)
    if project in lxc("project", "list", "--format", "csv"):
        print(f"warning: LXD project {project} is still there", file=sys.stderr)


def stop(proc, limit):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target/debug/unsandbox"))
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--out", default=str(ROOT / "docs/dashboard.png"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="unsandbox-dash-"))
    project = f"ut-dash-{secrets.token_hex(3)}"
    api_port, prom_port = free_port(), free_port()
    api, prom = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prom_port}"
    config = work / "config"
    config.mkdir()
    shutil.copy(SMALL_IMAGE, config / "image-small.yaml")
    (config / "image-checked.yaml").write_text(CHECKED_IMAGE)
    (config / "pools.yaml").write_text(POOLS)
    (work / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s"},
        "scrape_configs": [{
            "job_name": "unsandbox-agent",
            "static_configs": [{"targets": [f"127.0.0.1:{api_port}"], "labels": {"node": NODE}}],
        }],
    }))

    agent = prometheus = None
    try:
        prometheus = subprocess.Popen(
            [args.prometheus, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "w"))
        wait_for("Prometheus", lambda: http(f"{prom}/-/ready")[0] == 200, 60)
        start = time.time()
        agent = subprocess.Popen(
            [args.binary, "standalone", "--config", str(config), "--lxd-project", project,
             "--node-name", NODE, "--storage-pool", "unsandbox", "--images-dir", "none",
             "--listen", f"127.0.0.1:{api_port}", "--resync-ms", "2000", "--cleanup-on-exit"],
            stdout=subprocess.DEVNULL, stderr=open(work / "agent.log", "w"))
        print(f"agent on {api} (LXD project {project}), Prometheus on {prom}, logs in {work}")
        wait_for("the languages proven and the pools warm", lambda: serving(api), 600)
        print(f"serving after {time.time() - start:.0f} s; traffic for {args.minutes} min")
        counts = traffic(api, args.minutes)
        print("answers:", json.dumps(counts, sort_keys=True))
        time.sleep(3 * SCRAPE_SECONDS)  # the last scrapes
        dashboard = json.loads(DASHBOARD.read_text())
        data = collect(prom, dashboard, start, time.time())
        note = (f"PNG rendering of the dashboard's queries (tests/dashboard/render.py, matplotlib), not Grafana: "
                f"Prometheus {prometheus_version(args.prometheus)} scraping unsandbox standalone on LXD, "
                f"{args.minutes:g} min of traffic. No controller ran, so its panels have no data.")
        panels.draw(dashboard, data, args.out, note)
        print(f"wrote {args.out}")
        shutil.rmtree(work)
    finally:
        stop(agent, 90)
        stop(prometheus, 30)
        delete_project(project)


def prometheus_version(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return out.split()[2] if out.startswith("prometheus, version") else "?"


if __name__ == "__main__":
    main()
