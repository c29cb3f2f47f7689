"""Heartbeat round trips while a cell floods the kernel with output, carbon-kernel beside ipykernel.

A front-end pings the heartbeat to tell a busy kernel from a dead one; a pong that waits behind
the kernel's own work (signing and sending a cell's output) makes a live kernel look slow or
dead. For each kernel (every carbon-kernel binary given, and the peer) and each workload, a REQ
client pings the heartbeat every 2 ms while the cell runs, from its own thread, and the script
prints the median, 99th percentile and maximum round trip over --runs runs (the kernels
alternating within each run, a fresh kernel each time). Workloads: `print`, 300,000 lines of 100
bytes (30 MB of stream output, merged by the kernel into large messages); `display`, three
display_data of 40 MB each (one message each to sign and send).

Usage (from the project venv, after install/setup.sh):
  .venv/bin/python bench/heartbeat_latency.py --carbon-bin before=/path/a --carbon-bin after=/path/b \
      [--peer python3] [--runs 3]
This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import zmq
from jupyter_client import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_bench import add_kernel_args, kernel_names, use_this_venv  # noqa: E402

WORKLOADS = {
    "print": "import sys\nfor i in range(300000): sys.stdout.write('x' * 99 + '\\n')",
    "display": "from IPython.display import display\n"
               "for _ in range(3): display({'text/plain': 'x' * 40_000_000}, raw=True)",
}
PING_EVERY_S = 0.002
PONG_TIMEOUT_MS = 5000


def one_run(name: str, code: str, context: zmq.Context) -> list[float]:
    """Ping round trips (ms) while `code` runs in a fresh kernel `name`."""
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        kc.execute_interactive("pass", timeout=120)  # the Python worker up, IPython in
        ci = km.get_connection_info()
        sock = context.socket(zmq.REQ)
        sock.linger = 0
        sock.connect(f"tcp://{ci['ip']}:{ci['hb_port']}")
        times: list[float] = []
        stop = threading.Event()

        def pinger() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                sock.send(b"ping")
                if not sock.poll(PONG_TIMEOUT_MS):
                    times.append(float("inf"))
                    return
                sock.recv()
                times.append((time.perf_counter() - t) * 1000)
                time.sleep(PING_EVERY_S)

        th = threading.Thread(target=pinger)
        th.start()
        reply = kc.execute_interactive(code, timeout=300, output_hook=lambda m: None)
        stop.set()
        th.join()
        sock.close()
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"{name}: the cell failed: {reply['content']}")
        return times
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_kernel_args(parser, peer_optional=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    use_this_venv()
    names = kernel_names(args)
    context = zmq.Context()
    got = {(n, w): [] for n in names for w in WORKLOADS}
    for r in range(args.runs):
        for w, code in WORKLOADS.items():
            for n in names[r % len(names):] + names[:r % len(names)]:
                got[(n, w)].extend(one_run(n, code, context))
                print(f"  run {r + 1}/{args.runs} {w} {n}", file=sys.stderr)

    print(f"# heartbeat_latency on {platform.node()} ({os.cpu_count()} CPUs), load average "
          f"{os.getloadavg()[0]:.2f}; a ping every {PING_EVERY_S * 1000:g} ms while the cell "
          f"runs, {args.runs} runs")
    print(f"{'':10}{'kernel':>22}{'pings':>8}{'median ms':>11}{'p99 ms':>9}{'max ms':>9}")
    for w in WORKLOADS:
        for n in names:
            v = sorted(got[(n, w)])
            if not v:
                continue
            p99 = v[min(len(v) - 1, int(len(v) * 0.99))]
            print(f"{w:10}{n[-22:]:>22}{len(v):8d}{statistics.median(v):11.2f}{p99:9.2f}{v[-1]:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
