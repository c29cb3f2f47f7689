"""carbon-kernel vs ipykernel, side by side in one run, through jupyter_client (issue 2, item 8).

Measures, for each kernel:
  * start: time from launching the kernel process to its kernel_info_reply (median of --start-runs
    fresh kernels, the two kernels alternating so that machine noise hits both alike);
  * first cell: launch to the end of the first `print('x')` (the cold path a user sees: the carbon
    kernel starts its Python runtime lazily, ipykernel has it from the start);
  * round trip: execute_request to execute_reply + iopub idle, median of --runs after --warmup,
    for `pass` and for `print('x')` (the stream output is checked);
  * memory: resident set size (RSS, summed over the kernel's process tree, from /proc) right after
    start and after the first cell.
Then prints medians and the ratios. Goals (issue 2): start >= 5x faster, round trip no slower,
memory lower.

Usage (from the project venv, after install/setup.sh installed the kernelspecs):
  .venv/bin/python bench/kernel_bench.py [--carbon carbon] [--peer python3] [--start-runs 5]
                                         [--runs 50] [--warmup 5] [--json out.json]
This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import zmq
from jupyter_client import BlockingKernelClient, KernelManager
from jupyter_client.kernelspec import KernelSpecManager

# libzmq retries a refused connect every RECONNECT_IVL (100 ms by default). A client that connects
# before the kernel has bound its ports would then see start times rounded up to ~100 ms steps;
# 1 ms keeps the measurement about the kernel, for both kernels alike.
RECONNECT_IVL_MS = 1
TIMEOUT_S = 120.0


def tree_rss_kib(root_pid: int) -> int:
    """Resident memory (kB, VmRSS) of `root_pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) comes after the parenthesised command name, which may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total


def tree_pids(root_pid: int) -> int:
    """How many processes the kernel's tree has (the carbon kernel adds runtime children)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == root_pid:
                count += 1 + tree_pids(int(entry))
    return count


@dataclass
class Result:
    kernel: str
    implementation: str = ""
    start_ms: list[float] = field(default_factory=list)
    first_cell_ms: list[float] = field(default_factory=list)
    pass_ms: list[float] = field(default_factory=list)
    print_ms: list[float] = field(default_factory=list)
    rss_start_kib: int = 0
    rss_first_cell_kib: int = 0
    processes_after_first_cell: int = 0


class Kernel:
    """One kernel process with a blocking client whose sockets reconnect fast."""

    def __init__(self, name: str, context: zmq.Context):
        self.km = KernelManager(kernel_name=name)
        self.context = context
        self.kc: BlockingKernelClient | None = None

    def start(self) -> tuple[float, dict]:
        """Launches the kernel; returns (ms to kernel_info_reply, the reply's content)."""
        t0 = time.perf_counter()
        self.km.start_kernel()
        kc = BlockingKernelClient(context=self.context)
        kc.load_connection_info(self.km.get_connection_info())
        kc.start_channels()
        self.kc = kc
        msg_id = kc.kernel_info()
        while True:
            reply = kc.get_shell_msg(timeout=TIMEOUT_S)
            if reply["parent_header"].get("msg_id") == msg_id:
                elapsed = (time.perf_counter() - t0) * 1000
                return elapsed, reply["content"]

    def pid(self) -> int:
        return self.km.provisioner.process.pid  # type: ignore[union-attr]

    def drain_iopub(self) -> None:
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0.05)
            except Exception:
                return

    def execute(self, code: str, expect_stdout: str | None = None) -> float:
        """One execute round trip in ms: request sent -> execute_reply and iopub idle both seen."""
        kc = self.kc
        t0 = time.perf_counter()
        msg_id = kc.execute(code, store_history=False)
        got_reply = got_idle = False
        stdout = ""
        while not (got_reply and got_idle):
            if not got_idle:
                msg = kc.get_iopub_msg(timeout=TIMEOUT_S)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream" and msg["content"]["name"] == "stdout":
                    stdout += msg["content"]["text"]
                elif kind == "error":
                    raise RuntimeError(f"{code!r} raised {msg['content']['ename']}: {msg['content']['evalue']}")
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    got_idle = True
            else:
                reply = kc.get_shell_msg(timeout=TIMEOUT_S)
                if reply["parent_header"].get("msg_id") == msg_id:
                    if reply["content"]["status"] != "ok":
                        raise RuntimeError(f"{code!r}: execute_reply status {reply['content']['status']}")
                    got_reply = True
        elapsed = (time.perf_counter() - t0) * 1000
        if expect_stdout is not None and expect_stdout not in stdout:
            raise RuntimeError(f"{code!r}: stdout {stdout!r} lacks {expect_stdout!r}")
        return elapsed

    def stop(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def measure(names: list[str], args: argparse.Namespace) -> dict[str, Result]:
    context = zmq.Context()
    context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    results = {name: Result(kernel=name) for name in names}

    # Cold starts, alternating kernels. Each start also times the first cell, cold.
    for run in range(args.start_runs):
        for name in names:
            k = Kernel(name, context)
            t0 = time.perf_counter()
            try:
                ms, info = k.start()
                results[name].start_ms.append(ms)
                results[name].implementation = f"{info.get('implementation')} {info.get('implementation_version')}"
                k.execute("print('x')", expect_stdout="x")
                results[name].first_cell_ms.append((time.perf_counter() - t0) * 1000)
            finally:
                k.stop()
            print(f"  start run {run + 1}/{args.start_runs} {name}: {ms:.1f} ms", file=sys.stderr)

    # One warm kernel each: memory, then round trips (interleaved per run, same order each time).
    kernels = {}
    try:
        for name in names:
            k = Kernel(name, context)
            k.start()
            time.sleep(args.settle)  # let background start-up work finish before reading RSS
            results[name].rss_start_kib = tree_rss_kib(k.pid())
            k.execute("print('x')", expect_stdout="x")
            time.sleep(args.settle)
            results[name].rss_first_cell_kib = tree_rss_kib(k.pid())
            results[name].processes_after_first_cell = 1 + tree_pids(k.pid())
            k.drain_iopub()
            kernels[name] = k
        for i in range(args.warmup + args.runs):
            for name, k in kernels.items():
                p = k.execute("pass")
                q = k.execute("print('x')", expect_stdout="x")
                if i >= args.warmup:
                    results[name].pass_ms.append(p)
                    results[name].print_ms.append(q)
    finally:
        for k in kernels.values():
            k.stop()
    return results


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(results: dict[str, Result], carbon: str, peer: str) -> str:
    c, p = results[carbon], results[peer]
    rows = [
        ("start -> kernel_info_reply (ms)", med(c.start_ms), med(p.start_ms), "peer/carbon", med(p.start_ms) / med(c.start_ms), ">= 5x"),
        ("start -> first print('x') done (ms)", med(c.first_cell_ms), med(p.first_cell_ms), "peer/carbon", med(p.first_cell_ms) / med(c.first_cell_ms), "(info)"),
        ("round trip `pass` (ms)", med(c.pass_ms), med(p.pass_ms), "carbon/peer", med(c.pass_ms) / med(p.pass_ms), "<= 1"),
        ("round trip `print('x')` (ms)", med(c.print_ms), med(p.print_ms), "carbon/peer", med(c.print_ms) / med(p.print_ms), "<= 1"),
        ("RSS after start (MiB)", c.rss_start_kib / 1024, p.rss_start_kib / 1024, "carbon/peer", c.rss_start_kib / max(p.rss_start_kib, 1), "< 1"),
        ("RSS after first cell (MiB)", c.rss_first_cell_kib / 1024, p.rss_first_cell_kib / 1024, "carbon/peer", c.rss_first_cell_kib / max(p.rss_first_cell_kib, 1), "< 1"),
    ]
    w = max(len(r[0]) for r in rows)
    out = [
        f"{'':{w}}  {'carbon':>10}  {'ipykernel':>10}  ratio",
        f"{'':{w}}  {carbon:>10}  {peer:>10}",
    ]
    for label, cv, pv, how, ratio, goal in rows:
        out.append(f"{label:{w}}  {cv:10.2f}  {pv:10.2f}  {ratio:6.2f} ({how}; goal {goal})")
    out.append("")
    out.append(f"carbon: {c.implementation}; {c.processes_after_first_cell} process(es) after the first cell")
    out.append(f"peer:   {p.implementation}; {p.processes_after_first_cell} process(es) after the first cell")
    out.append(f"samples: start {len(c.start_ms)} per kernel, round trips {len(c.pass_ms)} per code")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carbon", default="carbon", help="kernelspec of carbon-kernel (default carbon)")
    parser.add_argument("--peer", default="python3", help="kernelspec of ipykernel (default python3)")
    parser.add_argument("--start-runs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading RSS")
    parser.add_argument("--json", type=Path, help="write raw samples and medians here")
    args = parser.parse_args()

    # Same Python for both kernels: the peer (ipykernel) runs in this venv, and carbon-kernel's
    # Python cells use "the active environment's" interpreter. Run as `.venv/bin/python` without
    # activation, carbon would fall back to python3 on PATH, whose IPython may differ (measured
    # here: IPython 8.12 system-wide holds 51 MB after InteractiveShell(), 9.18 in .venv 23 MB).
    if sys.prefix != sys.base_prefix and not os.environ.get("VIRTUAL_ENV"):
        os.environ["VIRTUAL_ENV"] = sys.prefix
        os.environ["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    print(f"python of carbon's cells: {os.environ.get('VIRTUAL_ENV') or 'python3 on PATH'}", file=sys.stderr)

    specs = KernelSpecManager().get_all_specs()
    for name in (args.carbon, args.peer):
        if name not in specs:
            parser.error(f"no kernelspec {name!r} (have {sorted(specs)}); run install/setup.sh first")
    print(f"carbon: {specs[args.carbon]['spec']['argv'][0]}", file=sys.stderr)
    print(f"peer:   {' '.join(specs[args.peer]['spec']['argv'][:3])}", file=sys.stderr)

    results = measure([args.carbon, args.peer], args)
    text = report(results, args.carbon, args.peer)
    print(f"# kernel_bench on {platform.node()} ({os.cpu_count()} CPUs), python {platform.python_version()}")
    print(text)
    if args.json:
        args.json.write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
