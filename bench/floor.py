#!/usr/bin/env python3
"""What part of a `pass` cell's round trip no kernel can remove, and what an idle spell costs
each kernel (a benchmark, not a test; issue 9: the `pass` round trip <= 0.3x ipykernel's).

Everything is timed at the socket (bench/rawclient.py: the request sent -> its execute_reply
and idle status read, headers only), in one run, the kernels' blocks of cells alternating:

  * floor: a null kernel (this script with --serve-null, a process of its own) that answers an
    execute_request with the four messages of a `pass` cell (busy, execute_input,
    execute_reply, idle) from frames it prepared, runs nothing and signs nothing: what the
    client, ZeroMQ and the loopback take. Each kernel's round trip minus this is its own part.
  * each kernel's kernel_info round trip: its socket path without a cell;
  * each kernel's `pass`: back to back (as "Run All" sends them); after a pause as long as the
    other kernel's `pass` (the other kernel's cell without its work); right after the other
    kernel's `pass` (kernel_bench's interleaved order). carbon's other kernel is ipykernel;
    ipykernel's, the first carbon binary.

In carbon's kernels, a cell first wraps the Python worker's call of IPython's `run_cell` with a
timer (the driver's `engine.run`, kernel/assets/python_driver.py): each mode's median time in
IPython, inside the worker, is printed beside the round trips. Then, with the kernels gone,
IPython's `run_cell("pass")` in this interpreter (the shell configured as carbon's worker
configures it), back to back and after a pause as long as ipykernel's cell: the work every
IPython kernel does for the cell, whatever carries the messages.

Prints medians and ratios. Usage (the project venv, after install/setup.sh):
  .venv/bin/python bench/floor.py [--carbon-bin LABEL=PATH ...] [--peer python3] [--blocks 8]
                                  [--block 50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from kernel_bench import Kernel, add_kernel_args, carbon_names, use_this_venv
from rawclient import RawClient

# Run in a carbon kernel's Python worker: times each call of IPython's run_cell by the driver.
# (`get_ipython()` makes this cell run on IPython, so IPython's engine is the one wrapped.)
TIME_RUN_CELL = """
import sys as _bench_sys, time as _bench_time
get_ipython()
_bench_driver = _bench_sys.modules["_carbon_driver"]._driver
_bench_run = _bench_driver.engine.run
_bench_times = []
def _bench_timed(*a, **kw):
    t = _bench_time.perf_counter()
    try:
        return _bench_run(*a, **kw)
    finally:
        _bench_times.append((_bench_time.perf_counter() - t) * 1000)
_bench_driver.engine.run = _bench_timed
"""


def serve_null(port_file: str) -> None:
    """The null kernel: a ROUTER for shell and a PUB for iopub; each request gets busy,
    execute_input, the reply (execute_reply or kernel_info_reply) and idle, its header frame as
    their parent header. Stops at a `shutdown_request`."""
    ctx = zmq.Context()
    shell = ctx.socket(zmq.ROUTER)
    iopub = ctx.socket(zmq.PUB)
    ports = {"shell_port": shell.bind_to_random_port("tcp://127.0.0.1"),
             "iopub_port": iopub.bind_to_random_port("tcp://127.0.0.1")}
    Path(port_file + ".part").write_text(json.dumps(ports))
    os.replace(port_file + ".part", port_file)  # the reader sees the whole file or none

    def header(t: str) -> bytes:
        return json.dumps({"msg_id": "null", "msg_type": t, "session": "null", "username": "null",
                           "date": "2026-01-01T00:00:00.000000Z", "version": "5.3"}).encode()

    busy = [b"status", b"<IDS|MSG>", b"", header("status")]
    busy_c = b'{"execution_state": "busy"}'
    idle_c = b'{"execution_state": "idle"}'
    ex_in = [b"execute_input", b"<IDS|MSG>", b"", header("execute_input")]
    replies = {t: header(t) for t in ("execute_reply", "kernel_info_reply", "shutdown_reply")}
    reply_c = b'{"status": "ok", "execution_count": 1}'
    while True:
        parts = shell.recv_multipart()
        i = parts.index(b"<IDS|MSG>")
        ids, parent = parts[:i], parts[i + 2]
        kind = json.loads(parent)["msg_type"].replace("_request", "_reply")
        iopub.send_multipart(busy + [parent, b"{}", busy_c])
        if kind == "execute_reply":
            iopub.send_multipart(ex_in + [parent, b"{}", b'{"code": "", "execution_count": 1}'])
        shell.send_multipart(ids + [b"<IDS|MSG>", b"", replies.get(kind, replies["execute_reply"]),
                                    parent, b"{}", reply_c])
        iopub.send_multipart(busy[:3] + [header("status"), parent, b"{}", idle_c])
        if kind == "shutdown_reply":
            return


class NullKernel:
    """The null kernel's process, with what RawClient asks a KernelManager for."""

    def __init__(self) -> None:
        fd, self.port_file = tempfile.mkstemp(prefix="null-kernel-", suffix=".json")
        os.close(fd)
        os.unlink(self.port_file)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-null",
                                      self.port_file])
        deadline = time.monotonic() + 30
        while not os.path.exists(self.port_file):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the null kernel did not start")
            time.sleep(0.01)
        self.ports = json.loads(Path(self.port_file).read_text())

    def get_connection_info(self) -> dict:
        return {"key": b"", "signature_scheme": "hmac-sha256", "transport": "tcp",
                "ip": "127.0.0.1", **self.ports}

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.unlink(self.port_file)


class Timed:
    """A raw client on one kernel and its samples (ms) per mode."""

    def __init__(self, label: str, km, context: zmq.Context):
        self.label = label
        self.client = RawClient(km, context)
        self.samples: dict[str, list[float]] = {}
        self.cells: list[str] = []  # each cell's mode, in the order sent

    def run(self, mode: str, code: str = "pass") -> float:
        t = self.client.run(code) * 1000
        if self.client.status != "ok":
            raise RuntimeError(f"{self.label}: {code!r} answered {self.client.status}")
        self.samples.setdefault(mode, []).append(t)
        self.cells.append(mode)
        return t

    def kernel_info(self) -> float:
        """A kernel_info round trip: its reply and idle status, as `run` times a cell."""
        t = self.client.request("kernel_info_request", {}) * 1000
        self.samples.setdefault("kernel_info", []).append(t)
        return t

    def med(self, mode: str) -> float:
        xs = self.samples.get(mode)
        return statistics.median(xs) if xs else float("nan")


def run_cell_times(k: Kernel, t: Timed) -> dict[str, float]:
    """Median ms per mode of the worker's calls of IPython's run_cell (TIME_RUN_CELL), read
    back through a fresh jupyter_client."""
    k.kc = k.km.client()
    k.kc.start_channels()
    k.kc.wait_for_ready(timeout=60)
    msg_id = k.kc.execute("print(__import__('json').dumps(_bench_times))")
    text = ""
    while True:
        m = k.kc.get_iopub_msg(timeout=60)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "stream":
            text += m["content"]["text"]
        elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
    times = json.loads(text)
    if len(times) != len(t.cells):
        raise RuntimeError(f"{t.label}: {len(times)} run_cell calls for {len(t.cells)} cells")
    by_mode: dict[str, list[float]] = {}
    for mode, ms in zip(t.cells, times):
        by_mode.setdefault(mode, []).append(ms)
    return {mode: statistics.median(v) for mode, v in by_mode.items()}


def ipython_run_cell(pause: float, n: int) -> dict[str, float]:
    """Median ms of IPython's `run_cell("pass")` here, back to back and after `pause` s (the
    shell as kernel/assets/python_driver.py builds it: in-memory history, no jedi)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    cfg = Config()
    cfg.HistoryManager.hist_file = ":memory:"
    cfg.IPCompleter.use_jedi = False
    shell = InteractiveShell.instance(config=cfg)
    for _ in range(50):
        shell.run_cell("pass", store_history=True)
    out = {}
    for mode, gap in (("back to back", 0.0), ("after a pause", pause)):
        xs = []
        for _ in range(n):
            if gap:
                time.sleep(gap)
            t = time.perf_counter()
            shell.run_cell("pass", store_history=True)
            xs.append((time.perf_counter() - t) * 1000)
        out[mode] = statistics.median(xs)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-null", metavar="PORT_FILE", help=argparse.SUPPRESS)
    add_kernel_args(parser)
    parser.add_argument("--blocks", type=int, default=8, help="blocks per kernel and mode")
    parser.add_argument("--block", type=int, default=50, help="cells per block")
    args = parser.parse_args()
    if args.serve_null:
        serve_null(args.serve_null)
        return 0

    use_this_venv()
    carbons = carbon_names(args)
    context = zmq.Context()
    null = NullKernel()
    kernels = []
    try:
        for name in (*carbons, args.peer):
            k = Kernel(name, context)
            k.start()
            k.execute("pass")  # the worker and IPython are ready
            if name != args.peer:
                k.execute(TIME_RUN_CELL)
            k.kc.stop_channels()  # only the raw clients read from here on
            kernels.append((name, k))
        floor = Timed("floor", null, context)
        timed = [Timed(name, k.km, context) for name, k in kernels]
        time.sleep(1.0)  # the SUB sockets' subscriptions reach the kernels
        everyone = [floor, *timed]
        for t in everyone:  # warm-up
            for _ in range(20):
                t.run("warm-up")
        peer = timed[-1]
        for _ in range(args.blocks):
            for t in everyone:
                for _ in range(args.block):
                    t.run("back to back")
                for _ in range(args.block):
                    t.kernel_info()
            # a pause as long as the other kernel's cell (its median so far)
            for t in everyone:
                other = timed[0] if t is peer else peer
                pause = other.med("back to back") / 1000
                for _ in range(args.block):
                    time.sleep(pause)
                    t.run("after a pause")
            # each carbon kernel (and the floor) cell for cell with ipykernel; ipykernel's own
            # samples of this mode are those after a carbon kernel's cell
            for t in [floor, *timed[:-1]]:
                for _ in range(args.block):
                    peer.run("after the other's cell" if t is not floor else "after the floor")
                    t.run("after the other's cell")
        in_ipython = {t.label: run_cell_times(k, t) for (_, k), t in zip(kernels[:-1], timed)}
    finally:
        for _, k in kernels:
            k.km.shutdown_kernel(now=True)
        null.stop()

    ipython = ipython_run_cell(peer.med("back to back") / 1000, args.blocks * args.block)

    modes = ["kernel_info", "back to back", "after a pause", "after the other's cell"]
    cols = [floor, *timed]
    w = 36
    print(f"# floor.py: medians at the socket, ms ({os.cpu_count()} CPUs, "
          f"{args.blocks} blocks of {args.block} cells per kernel and mode)")
    print(f"{'':{w}}" + "".join(f"{t.label:>16}" for t in cols))
    for mode in modes:
        print(f"{'`pass` ' + mode if mode != 'kernel_info' else 'kernel_info':{w}}"
              + "".join(f"{t.med(mode):16.3f}" for t in cols))
    print()
    for mode in modes[1:]:
        f = floor.med(mode)
        own = {t.label: t.med(mode) - f for t in timed}
        line = f"{'above the floor, ' + mode:{w}}{'':16}" + "".join(f"{own[t.label]:16.3f}" for t in timed)
        ratios = [f"{t.label} {t.med(mode) / peer.med(mode):.2f} ({own[t.label] / own[peer.label]:.2f})"
                  for t in timed[:-1]]
        print(line + "   carbon/ipykernel (above the floor): " + ", ".join(ratios))
    print()
    for mode in modes[1:]:
        print(f"{'in IPython run_cell, ' + mode:{w}}{'':16}"
              + "".join(f"{in_ipython[t.label].get(mode, float('nan')):16.3f}" for t in timed[:-1])
              + "   (inside carbon's Python worker)")
    print()
    for mode, v in ipython.items():
        print(f"{'IPython run_cell(pass), ' + mode:{w}}{v:16.3f}   (in this interpreter, no kernel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
