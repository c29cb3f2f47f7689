"""A class on a real JupyterHub, gathered by a real Prometheus (issue 11, items 2-4).

The test starts, all on loopback and in a temp folder:

* JupyterHub (PyPI) with the configuration shipped for teachers,
  ``install/jupyterhub/jupyterhub_config.py`` (dummy authenticator, ``SimpleLocalProcessSpawner``:
  every server runs as the test's own user, in its own home folder), and configurable-http-proxy
  (npm, ``install/jupyterhub/node_modules``, installed by install/common.sh ``ensure_chp``);
* Prometheus (Debian's binary, run by the test, not the packaged service) scraping the kernels'
  ``file_sd`` targets (``CARBON_METRICS_SD_DIR``) every second;
* a loopback OpenAI-compatible server the students' ``%llm`` requests go to (each home's ``.env``).

Then, through the hub's REST API with a service token, it starts USERS students' servers, a
``carbon`` kernel in each through the server's REST API, runs metered Python cells and an ``%llm``
request over the kernel websocket, and checks that each student's totals in Prometheus (PromQL over
its HTTP API) equal the sums of the rows of that student's ``emissions.csv``. It stops Prometheus
while some students run cells and restarts it: it catches up, nothing is lost. It restarts the
hub: the students' servers and kernels go on, rows and metrics too. It kills one kernel
with ``kill -9``: the others' totals are intact, the dead kernel's rows stay in its CSV and its
history in Prometheus, and its target disappears from Prometheus (the next kernel that starts
removes it). Stopping the servers removes every target. Everything it starts, it stops (fixtures
with ``finally``); every wait is bounded.

``test_dockerfile_installs_with_setup_sh`` checks the single-user image's Dockerfile statically
(no Docker engine here).
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT

HUB_DIR = ROOT / "install" / "jupyterhub"
CHP = Path(os.environ.get("CARBON_CHP", HUB_DIR / "node_modules" / ".bin" / "configurable-http-proxy"))
PROMETHEUS = Path(os.environ.get("CARBON_PROMETHEUS", "/usr/bin/prometheus"))
USERS = [f"student{i:02d}" for i in range(10)]
COURSE = "ml101"
LLM_KEY = "sk-class-test-NOT-A-SECRET-1234"
PROMPT = "PROMPTMARK summarise the lab in one line"
ANSWER = "ANSWERMARK the lab measured energy"
PROMPT_TOKENS, COMPLETION_TOKENS = 21, 34

# Bounds of every wait (a loaded 2-core CI machine starts 10 Jupyter servers slowly).
HUB_START_S = 90
SERVERS_READY_S = 300
CELL_S = 180
PROM_SYNC_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(path: Path, what: str) -> Path:
    if path.is_file() and os.access(path, os.X_OK):
        return path
    msg = f"{path} missing: {what}"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (install/test.sh installs it)")
    pytest.skip(msg)


def _wait(what: str, timeout: float, probe, interval: float = 0.5):
    """Calls probe() until it returns a true value; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = probe()
            if got:
                return got
        except Exception as e:  # noqa: BLE001  (kept for the failure message)
            last = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last error: {last!r})")


def _http(method: str, url: str, token: str | None = None, body=None, timeout: float = 30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            try:
                return r.status, (json.loads(text) if text.strip() else None)
            except ValueError:  # /-/ready and other plain-text answers
                return r.status, text
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the process group, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- a loopback OpenAI-compatible provider ---


@contextmanager
def llm_server():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(n) or b"{}")
            received.append({"path": self.path, "auth": self.headers.get("Authorization"), "json": req})
            body = json.dumps({
                "id": "chatcmpl-class", "object": "chat.completion", "created": 1730000000,
                "model": req.get("model", "gpt-4o-mini"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                          "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", received
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


# --- Prometheus ---


class Prometheus:
    """Debian's prometheus binary on a loopback port, with its own config and data folder."""

    def __init__(self, exe: Path, work: Path, sd_dir: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = work
        cfg = work / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: carbon-kernel\n    file_sd_configs:\n"
            f"      - files: ['{sd_dir}/*.json']\n        refresh_interval: 1s\n"
        )
        self.argv = [str(exe), f"--config.file={cfg}", f"--storage.tsdb.path={work / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.work / "prometheus.log", "a") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        proc = self.proc
        _wait("prometheus ready", 60, lambda: proc.poll() is None
              and _http("GET", f"{self.url}/-/ready", timeout=2)[0] == 200)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def query(self, promql: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": promql})
        status, body = _http("GET", f"{self.url}/api/v1/query?{q}")
        assert status == 200, body
        return body["data"]["result"]

    def by_user(self, promql: str) -> dict[str, float]:
        return {r["metric"].get("user", ""): float(r["value"][1]) for r in self.query(promql)}

    def active_targets(self) -> list[dict]:
        status, body = _http("GET", f"{self.url}/api/v1/targets?state=active")
        assert status == 200, body
        return body["data"]["activeTargets"]


@contextmanager
def prometheus(work: Path, sd_dir: Path):
    exe = _tool(PROMETHEUS, "Debian's prometheus (install/common.sh ensure_prometheus)")
    prom = Prometheus(exe, work, sd_dir)
    try:
        prom.start()
        yield prom
    finally:
        prom.stop()


# --- JupyterHub ---


class Hub:
    """The hub process (it starts configurable-http-proxy itself) and its REST API."""

    def __init__(self, url: str, token: str, data: Path, homes: Path, sd_dir: Path,
                 argv: list[str], env: dict, log: Path):
        self.url, self.token, self.data, self.homes, self.sd_dir = url, token, data, homes, sd_dir
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.data, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        proc = self.proc
        _wait("the hub's API", HUB_START_S, lambda: proc.poll() is None
              and self.api("GET", "/", timeout=5)[0] == 200)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace=60)
            self.proc = None

    def api(self, method: str, path: str, body=None, timeout: float = 60):
        return _http(method, f"{self.url}/hub/api{path}", self.token, body, timeout)

    def user_api(self, user: str, method: str, path: str, body=None):
        return _http(method, f"{self.url}/user/{user}/api{path}", self.token, body)

    def server_pids(self) -> list[int]:
        """The single-user servers' pids, from the hub's own database (for the last cleanup)."""
        db = self.data / "jupyterhub.sqlite"
        if not db.exists():
            return []
        pids = []
        with sqlite3.connect(db) as con:
            for (state,) in con.execute("SELECT state FROM spawners"):
                try:
                    pid = json.loads(state or "{}").get("pid")
                except (TypeError, ValueError):
                    pid = None
                if pid:
                    pids.append(int(pid))
        return pids


@contextmanager
def jupyterhub(work: Path, sd_dir: Path):
    chp = _tool(CHP, "configurable-http-proxy (install/common.sh ensure_chp)")
    hub_exe = shutil.which("jupyterhub")
    if hub_exe is None:
        pytest.fail("jupyterhub missing from the venv (install/requirements-test.txt)")
    data = work / "hub"
    homes = work / "homes"
    data.mkdir()
    homes.mkdir()
    token = secrets.token_hex(32)
    port = _free_port()
    env = dict(os.environ)
    env.update({
        "CARBON_HUB_DATA_DIR": str(data),
        "CARBON_HUB_IP": "127.0.0.1",
        "CARBON_HUB_PORT": str(port),
        "CARBON_HUB_API_PORT": str(_free_port()),
        "CARBON_HUB_PROXY_API_PORT": str(_free_port()),
        "CARBON_HUB_PROXY_CMD": str(chp),
        "CARBON_HUB_AUTHENTICATOR": "dummy",
        "CARBON_HUB_SPAWNER": "simple",
        "CARBON_HUB_HOMES": str(homes / "{username}"),
        "CARBON_HUB_SERVICE_TOKEN": token,
        "CARBON_HUB_SPAWN_TIMEOUT": str(SERVERS_READY_S),
        "CARBON_METRICS_ADDR": "127.0.0.1:0",
        "CARBON_METRICS_SD_DIR": str(sd_dir),
        "CARBON_COURSE": COURSE,
    })
    hub = Hub(f"http://127.0.0.1:{port}", token, data, homes, sd_dir,
              [hub_exe, "-f", str(HUB_DIR / "jupyterhub_config.py")], env,
              work / "jupyterhub.log")
    try:
        hub.start()
        yield hub
    finally:
        pids = hub.server_pids()
        hub.stop()
        # The test stops the servers through the API; the hub leaves running servers alone when
        # it stops (cleanup_servers = False): whatever is left after a failure is ended here.
        for pid in pids + [int(m.group(1)) for f in sd_dir.glob("carbon-kernel-*.json")
                           if (m := re.match(r"carbon-kernel-(\d+)-", f.name))]:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# --- the kernel websocket ---


def _message(code: str, session: str) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": session,
                   "username": "test", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }


async def _run_cells(hub: Hub, user: str, kernel_id: str, cells: list[str]) -> list[dict]:
    """Executes cells in order over the kernel's websocket; returns each execute_reply content
    with the text of its streams (`_stdout`)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    url = hub.url.replace("http://", "ws://") + f"/user/{user}/api/kernels/{kernel_id}/channels"
    ws = await asyncio.wait_for(
        websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {hub.token}"})), 60)
    session = uuid.uuid4().hex
    replies = []
    try:
        for code in cells:
            msg = _message(code, session)
            await ws.write_message(json.dumps(msg))
            reply, idle, out = None, False, []
            deadline = time.monotonic() + CELL_S
            while reply is None or not idle:
                left = deadline - time.monotonic()
                assert left > 0, f"{user}: no reply to {code!r} in {CELL_S} s"
                raw = await asyncio.wait_for(ws.read_message(), left)
                assert raw is not None, f"{user}: websocket closed during {code!r}"
                m = json.loads(raw)
                if m.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                    continue
                t = m["header"]["msg_type"]
                if t == "execute_reply":
                    reply = m["content"]
                elif t == "status" and m["content"]["execution_state"] == "idle":
                    idle = True
                elif t == "stream":
                    out.append(m["content"]["text"])
                elif t in ("display_data", "update_display_data", "execute_result"):
                    out.append(json.dumps(m["content"].get("data", {})))
                elif t == "error":
                    out.append("\n".join(m["content"].get("traceback", [])))
            reply["_stdout"] = "".join(out)
            replies.append(reply)
    finally:
        ws.close()
    return replies


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(row: dict, col: str) -> float:
    try:
        return float(row[col])
    except (KeyError, ValueError):
        return 0.0


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _totals(rows: list[dict]) -> dict[str, float]:
    return {
        "grams": sum(_num(r, "emissions") * 1000 for r in rows),
        "joules": sum((_num(r, "cpu_energy") + _num(r, "ram_energy") + _num(r, "gpu_energy")) * 3.6e6
                      for r in rows),
        "cells": float(sum(1 for r in rows if r["kind"] == "cell")),
        "tokens_out": sum(_num(r, "completion_tokens") for r in rows if r["kind"] == "llm"),
    }


QUERIES = {
    "grams": "sum by (user) (carbon_emissions_grams_total{course='%s'})" % COURSE,
    "joules": "sum by (user) (carbon_energy_joules_total{course='%s'})" % COURSE,
    "cells": "sum by (user) (carbon_cells_total{course='%s'})" % COURSE,
    "tokens_out": "sum by (user) (carbon_llm_tokens_total{course='%s', direction='out'})" % COURSE,
}


def _prometheus_matches(prom: Prometheus, want: dict[str, dict[str, float]]) -> bool:
    for key, promql in QUERIES.items():
        got = prom.by_user(promql)
        for user, totals in want.items():
            if user not in got or not _close(got[user], totals[key]):
                return False
    return True


@pytest.mark.timeout(900)
def test_a_class_on_jupyterhub_is_gathered_by_prometheus(carbon_kernelspecs, tmp_path):
    work = tmp_path
    sd_dir = work / "targets"
    sd_dir.mkdir()
    with llm_server() as (llm_url, llm_received), prometheus(work, sd_dir) as prom, \
            jupyterhub(work, sd_dir) as hub:
        # Each student's notebook folder points %llm at the loopback provider.
        for u in USERS:
            home = hub.homes / u
            home.mkdir(parents=True)
            (home / ".env").write_text(
                f"OPENAI_API_KEY={LLM_KEY}\nOPENAI_BASE_URL={llm_url}/v1\nOPENAI_MODEL=gpt-4o-mini\n")
        t0 = time.monotonic()
        for u in USERS:
            status, body = hub.api("POST", f"/users/{u}")
            assert status in (201, 409), (u, status, body)
            status, body = hub.api("POST", f"/users/{u}/server")
            assert status in (201, 202), (u, status, body)

        def all_ready():
            for u in USERS:
                status, body = hub.api("GET", f"/users/{u}")
                if status != 200 or not body["servers"].get("", {}).get("ready"):
                    return False
            return True

        _wait(f"{len(USERS)} servers ready", SERVERS_READY_S, all_ready, interval=1)
        servers_s = time.monotonic() - t0

        kernels = {}
        for u in USERS:
            status, body = hub.user_api(u, "POST", "/kernels", {"name": "carbon"})
            assert status == 201, (u, status, body)
            kernels[u] = body["id"]

        cells = [
            "%%carbon\ntotal = sum(i * i for i in range(200_000))\nprint('total', total)",
            "%carbon on",
            "squares = [i * i for i in range(50_000)]\nprint(len(squares))",
            "%carbon off",
            f"%llm {PROMPT}",
        ]

        async def run_all():
            return await asyncio.gather(*(_run_cells(hub, u, kernels[u], cells) for u in USERS))

        t1 = time.monotonic()
        results = asyncio.run(run_all())
        cells_s = time.monotonic() - t1
        for u, replies in zip(USERS, results):
            for code, r in zip(cells, replies):
                assert r["status"] == "ok", (u, code, r)
            assert "total 2666646666700000" in replies[0]["_stdout"], replies[0]["_stdout"]
            assert ANSWER in replies[4]["_stdout"], replies[4]["_stdout"]
        assert len(llm_received) == len(USERS)
        assert all(r["auth"] == f"Bearer {LLM_KEY}" for r in llm_received)

        # Each student's emissions.csv: 2 metered cells + 1 LLM request.
        want = {}
        for u in USERS:
            rows = _csv_rows(hub.homes / u / "emissions.csv")
            assert [r["kind"] for r in rows] == ["cell", "cell", "llm"], (u, rows)
            assert _totals(rows)["grams"] > 0
            want[u] = _totals(rows)

        # Prometheus' totals per student equal the CSV sums.
        t2 = time.monotonic()
        _wait("Prometheus totals equal to every emissions.csv", PROM_SYNC_S,
              lambda: _prometheus_matches(prom, want), interval=1)
        prom_s = time.monotonic() - t2
        targets = [t for t in prom.active_targets() if t["health"] == "up"]
        assert len(targets) == len(USERS), targets

        # Prometheus down while students work: nothing is lost, it catches up when back.
        prom.stop()
        busy = USERS[:3]

        async def run_some():
            return await asyncio.gather(*(_run_cells(hub, u, kernels[u], [cells[0]]) for u in busy))

        for u, replies in zip(busy, asyncio.run(run_some())):
            assert replies[0]["status"] == "ok", (u, replies)
        prom.start()
        for u in busy:
            rows = _csv_rows(hub.homes / u / "emissions.csv")
            assert [r["kind"] for r in rows] == ["cell", "cell", "llm", "cell"], (u, rows)
            want[u] = _totals(rows)
        _wait("Prometheus back and equal to every emissions.csv", PROM_SYNC_S,
              lambda: _prometheus_matches(prom, want), interval=1)

        # Nothing but numbers and enumerations in the metrics: no code, prompt, answer, path, key.
        series = prom.query("{__name__=~'carbon_.+', course='%s'}" % COURSE)
        text = json.dumps([s["metric"] for s in series])
        for secret in ("PROMPTMARK", "ANSWERMARK", "sum(", "range", LLM_KEY, "sk-", str(work)):
            assert secret not in text, secret
        users_seen = {s["metric"]["user"] for s in series}
        assert users_seen == set(USERS)

        # The hub restarts (an upgrade, a config change): the students' servers and kernels go on,
        # and so do their rows and metrics.
        hub.stop()
        hub.start()
        _wait(f"{len(USERS)} servers ready after the hub's restart", SERVERS_READY_S, all_ready,
              interval=1)
        late = USERS[3]
        replies = asyncio.run(_run_cells(hub, late, kernels[late], [cells[0]]))
        assert replies[0]["status"] == "ok", replies
        rows = _csv_rows(hub.homes / late / "emissions.csv")
        assert [r["kind"] for r in rows] == ["cell", "cell", "llm", "cell"], (late, rows)
        want[late] = _totals(rows)
        _wait("Prometheus equal to every emissions.csv after the hub's restart", PROM_SYNC_S,
              lambda: _prometheus_matches(prom, want), interval=1)
        assert len([t for t in prom.active_targets() if t["health"] == "up"]) == len(USERS)

        # kill -9 one kernel: its target file stays behind until a kernel starts.
        victim = USERS[0]
        files = [f for f in sd_dir.glob("carbon-kernel-*.json") if kernels[victim] in f.name]
        assert len(files) == 1, sorted(f.name for f in sd_dir.iterdir())
        pid = int(re.match(r"carbon-kernel-(\d+)-", files[0].name).group(1))
        dead_target = json.loads(files[0].read_text())[0]["targets"][0]
        victim_rows = len(_csv_rows(hub.homes / victim / "emissions.csv"))
        os.kill(pid, signal.SIGKILL)
        _wait("the killed kernel to be gone", 30, lambda: not _alive(pid) or _zombie(pid))
        # A kernel that starts (the server's auto-restart, or this one) removes the dead target.
        status, body = hub.user_api(USERS[1], "POST", "/kernels", {"name": "carbon"})
        assert status == 201, (status, body)
        _wait("the dead kernel's target file removed", 60,
              lambda: not files[0].exists(), interval=0.5)
        _wait("the dead target gone from Prometheus", PROM_SYNC_S,
              lambda: all(t["labels"].get("instance") != dead_target
                          for t in prom.active_targets()), interval=1)
        # Nothing lost: the victim's rows are in its CSV and in Prometheus' history, the others'
        # live totals are unchanged.
        assert len(_csv_rows(hub.homes / victim / "emissions.csv")) == victim_rows
        others = {u: want[u] for u in USERS[1:]}
        assert _prometheus_matches(prom, others)
        hist = prom.by_user(
            "max_over_time(sum by (user) (carbon_emissions_grams_total{user='%s'})[10m:1s])" % victim)
        assert _close(hist[victim], want[victim]["grams"]), (hist, want[victim])

        # Stopping the servers stops their kernels, which remove their targets.
        for u in USERS:
            status, body = hub.api("DELETE", f"/users/{u}/server")
            assert status in (202, 204), (u, status, body)

        def all_stopped():
            return all(not hub.api("GET", f"/users/{u}")[1]["servers"] for u in USERS)

        _wait("every server stopped", 120, all_stopped, interval=1)
        _wait("every target removed", 60,
              lambda: not list(sd_dir.glob("carbon-kernel-*.json")), interval=0.5)
        print(f"\n{len(USERS)} servers ready in {servers_s:.1f} s; cells on every kernel in "
              f"{cells_s:.1f} s; Prometheus matched the CSVs {prom_s:.1f} s after")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def _dockerfile_runs(text: str) -> list[str]:
    """RUN instructions of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", text)
    return [re.sub(r"\s+", " ", line[4:]).strip() for line in text.splitlines()
            if line.startswith("RUN ")]


def test_dockerfile_installs_with_setup_sh():
    """The single-user image installs the kernel with install/setup.sh itself (no copy of its
    steps that could drift), and agrees with helm-values.yaml on the port and variables. Static:
    no Docker engine where this project is developed and tested."""
    docker = (HUB_DIR / "Dockerfile").read_text()
    runs = _dockerfile_runs(docker)
    setup = [r for r in runs if "install/setup.sh" in r]
    assert len(setup) == 1, runs
    assert setup[0].startswith("bash install/setup.sh --no-run"), setup
    # setup.sh's own options: --no-run is one of them.
    assert "--no-run)" in (ROOT / "install" / "setup.sh").read_text()
    assert re.search(r"^COPY \. /opt/carbon-kernel$", docker, re.M)
    assert re.search(r"^WORKDIR /opt/carbon-kernel$", docker, re.M)
    # No step of setup.sh is repeated by hand (cargo build, pip install, kernelspec install).
    for r in runs:
        for forbidden in ("cargo build", "pip install", "carbon-kernel install", "npm "):
            assert forbidden not in r, (forbidden, r)
    helm = (HUB_DIR / "helm-values.yaml").read_text()
    port = re.search(r"^EXPOSE (\d+)$", docker, re.M).group(1)
    assert f'CARBON_METRICS_ADDR: "0.0.0.0:{port}"' in helm
    assert f'prometheus.io/port: "{port}"' in helm
    assert f"CARBON_METRICS_ADDR=0.0.0.0:{port}" in docker
    assert 'CMD ["jupyterhub-singleuser"]' in docker
    # jupyterhub-singleuser comes from the venv setup.sh builds.
    assert re.search(r"^jupyterhub==", (ROOT / "install" / "requirements-test.txt").read_text(), re.M)
