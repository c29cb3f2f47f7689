"""CPU time and thread wake-ups of one `pass` cell, per thread, carbon-kernel beside ipykernel.

kernel_bench.py times a cell; this script says where a cell's time on the CPUs goes. For each
kernel (every carbon-kernel binary given, and the peer) it sends `pass` cells at the socket
(bench/rawclient.py: header-only reads, so the client costs the same for every kernel), in
blocks of --block cells, the kernels' blocks alternating for --rounds rounds, with --gap-ms of
idle before each cell (0: back to back; 10-20: as a user's cells come, after the CPUs slept).
Around each block it reads every thread of the kernel's process tree from /proc:
`schedstat` (nanoseconds on a CPU) and `status` (voluntary + involuntary context switches).
Prints, per kernel, the median round trip and the tree's CPU time and switches per cell, then
each thread's share. On a 2-vCPU VM, whose idle vCPUs halt, each thread a cell wakes costs a
hand-over (tens to hundreds of microseconds) beside its own CPU time: these two columns are what
a change to the cell's path moves, where a round trip moves by the machine's noise too.

Usage (from the project venv, after install/setup.sh):
  .venv/bin/python bench/cell_cpu.py --carbon-bin before=/path/a --carbon-bin after=/path/b \
      [--peer python3] [--rounds 10] [--block 100] [--gap-ms 0]
This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import zmq
from jupyter_client import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_bench import add_kernel_args, kernel_names, tree, use_this_venv  # noqa: E402
from rawclient import RawClient  # noqa: E402


def threads(root: int) -> dict[tuple[int, int], tuple[str, str, int, int]]:
    """Every thread of the tree: (pid, tid) -> (process name, thread name, ns on CPU, switches)."""
    found = {}
    for pid in tree(root):
        try:
            proc = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            continue
        for t in glob.glob(f"/proc/{pid}/task/*"):
            try:
                name = open(f"{t}/comm").read().strip()
                ns = int(open(f"{t}/schedstat").read().split()[0])
                switches = sum(int(line.split()[1]) for line in open(f"{t}/status")
                               if "ctxt_switches" in line)
            except (OSError, ValueError, IndexError):
                continue
            found[(pid, int(t.rsplit("/", 1)[1]))] = (proc, name, ns, switches)
    return found


class Kernel:
    def __init__(self, name: str, context: zmq.Context):
        self.name = name
        self.km = KernelManager(kernel_name=name)
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.raw = RawClient(self.km, context)
        self.pid = self.km.provisioner.process.pid
        self.ms: list[float] = []
        # (process role, thread name) -> [ns, switches]
        self.spent: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
        self.cells = 0

    def run(self, n: int, gap_s: float, keep: bool) -> None:
        before = threads(self.pid)
        for _ in range(n):
            if gap_s:
                time.sleep(gap_s)
            ms = self.raw.run("pass") * 1000
            if self.raw.status != "ok":
                raise RuntimeError(f"{self.name}: `pass` answered {self.raw.status}")
            self.raw.drain()
            if keep:
                self.ms.append(ms)
        after = threads(self.pid)
        if not keep:
            return
        self.cells += n
        for key, (proc, name, ns, sw) in after.items():
            ns0, sw0 = before.get(key, (proc, name, 0, 0))[2:]
            role = "kernel" if key[0] == self.pid else proc
            acc = self.spent[(role, name)]
            acc[0] += ns - ns0
            acc[1] += sw - sw0

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_kernel_args(parser, peer_optional=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=100, help="cells per kernel per round")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="idle before each cell")
    args = parser.parse_args()
    use_this_venv()
    names = kernel_names(args)
    context = zmq.Context()
    kernels = [Kernel(n, context) for n in names]
    try:
        time.sleep(1.0)  # the Python workers' IPython import
        for k in kernels:
            k.run(30, 0, keep=False)
        for r in range(args.rounds):
            order = kernels[r % len(kernels):] + kernels[:r % len(kernels)]
            for k in order:
                k.run(args.block, args.gap_ms / 1000, keep=True)
    finally:
        for k in kernels:
            k.stop()

    load = os.getloadavg()[0]
    print(f"# cell_cpu on {platform.node()} ({os.cpu_count()} CPUs), load average {load:.2f}; "
          f"{args.rounds} x {args.block} `pass` cells per kernel at the socket, {args.gap_ms:g} ms "
          "idle before each")
    print(f"{'':32}" + "".join(f"{k.name[-14:]:>15}" for k in kernels))
    rows = [
        ("round trip, median (ms)", [statistics.median(k.ms) for k in kernels], "{:15.3f}"),
        ("CPU per cell, tree (us)", [sum(v[0] for v in k.spent.values()) / k.cells / 1e3
                                     for k in kernels], "{:15.1f}"),
        ("switches per cell, tree", [sum(v[1] for v in k.spent.values()) / k.cells
                                     for k in kernels], "{:15.2f}"),
    ]
    for label, vals, fmt in rows:
        print(f"{label:32}" + "".join(fmt.format(v) for v in vals))
    for k in kernels:
        print(f"\n{k.name}: per thread, per cell (threads under 1 us and 0.05 switches left out)")
        for (role, name), (ns, sw) in sorted(k.spent.items(), key=lambda kv: -kv[1][0]):
            us, per = ns / k.cells / 1e3, sw / k.cells
            if us >= 1 or per >= 0.05:
                print(f"  {role[:16]:<16} {name[:18]:<18} {us:8.1f} us {per:6.2f} switches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
