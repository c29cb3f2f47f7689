"""carbon-kernel vs ipykernel, side by side in one run, through jupyter_client (issue 2, item 8).

Measures, for each kernel:
  * start: time from launching the kernel process to its kernel_info_reply (median of --start-runs
    fresh kernels, the two kernels alternating so that machine noise hits both alike);
  * first cell: launch to the end of the first cell, a `pass` (the cold path a user sees: the
    carbon kernel's Python worker starts with the kernel, its IPython import may not be done yet),
    then to the end of a `print('x')` after it;
  * round trip: execute_request to execute_reply + iopub idle, median of --runs after --warmup,
    for `pass` and for `print('x')` (the stream output is checked), the kernels' cells
    interleaved (each `pass` follows the other kernel's cells, so it also pays for what that
    kernel does after its reply on the same 2 CPUs, and wakes threads that slept meanwhile);
    then `pass` cells in turns of --turn-cells per kernel (a kernel's cells back to back, as one
    notebook runs them; the turns alternate, so noise still hits both alike);
  * memory: resident set size (RSS), proportional set size (PSS) and anonymous RSS, each summed over
    the kernel's process tree (from /proc), right after start and after the first cell, and each
    process's share after the first cell. RSS counts a shared page in full in every process that
    maps it: carbon-kernel's guard runs the kernel's own binary, so their tree's RSS counts the
    binary's resident pages twice, and how many are resident depends on the page cache. PSS
    splits each shared page among the processes that map it (counted once over a tree that holds
    them all); anonymous RSS (heap, stacks) is the memory no file backs, the process's own. Pages
    shared with processes outside the tree (libc; the venv's python, which this script, the peer
    and carbon's worker all run) are split with those too, so PSS moves a little with what else
    runs: the peer is measured while the warm carbon kernel still runs, which lowers its PSS.
Then prints medians and the ratios. Goals (issue 2): start >= 5x faster, round trip no slower,
memory lower.

Usage (from the project venv, after install/setup.sh installed the kernelspecs):
  .venv/bin/python bench/kernel_bench.py [--carbon carbon] [--peer python3] [--start-runs 5]
                                         [--runs 50] [--warmup 5] [--json out.json]
Several carbon-kernel binaries (e.g. before and after a change) in the same run, each as
LABEL=PATH (a throwaway kernelspec each, found through JUPYTER_PATH); the first is the baseline:
  .venv/bin/python bench/kernel_bench.py --carbon-bin before=/path/a --carbon-bin after=/path/b
This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
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


def process_children() -> dict[int, list[int]]:
    """Every process's children, from /proc (ppid of each)."""
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
    return children


def tree(root_pid: int) -> list[int]:
    """`root_pid` and all its descendants."""
    children = process_children()
    pids, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def process_label(pid: int) -> str:
    """A short name: the program and its first argument (`carbon-kernel guard`, `python3 -m …`)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return str(pid)
    words = [Path(argv[0]).name] + [Path(a).name[:40] for a in argv[1:3] if a]
    if len(words) > 2 and not words[1].startswith("-"):
        words = words[:2]
    return " ".join(words)


def process_memory_kib(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, anonymous RSS) of one process in kB, from /proc; zeros once it is gone. PSS is
    the `Pss:` of smaps_rollup (Linux 4.14+); where that cannot be read, RSS stands in for it."""
    rss = anon = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1])
    except OSError:
        return 0, 0, 0
    pss = rss
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
                break
    except OSError:
        pass
    return rss, pss, anon


def tree_memory_kib(root_pid: int) -> list[tuple[str, int, int, int]]:
    """(label, RSS, PSS, anonymous RSS in kB) of each process of the kernel's tree, root first."""
    return [(process_label(pid), *process_memory_kib(pid)) for pid in tree(root_pid)]


@dataclass
class Result:
    kernel: str
    implementation: str = ""
    start_ms: list[float] = field(default_factory=list)
    first_pass_ms: list[float] = field(default_factory=list)
    first_cell_ms: list[float] = field(default_factory=list)
    pass_ms: list[float] = field(default_factory=list)
    print_ms: list[float] = field(default_factory=list)
    pass_turns_ms: list[float] = field(default_factory=list)
    rss_start_kib: int = 0
    rss_first_cell_kib: int = 0
    pss_start_kib: int = 0
    pss_first_cell_kib: int = 0
    anon_start_kib: int = 0
    anon_first_cell_kib: int = 0
    processes_after_first_cell: int = 0
    # (label, RSS, PSS, anonymous RSS in kB) of each process after the first cell
    memory_by_process_kib: list[tuple[str, int, int, int]] = field(default_factory=list)


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
                k.execute("pass")
                results[name].first_pass_ms.append((time.perf_counter() - t0) * 1000)
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
            time.sleep(args.settle)  # let background start-up work finish before reading memory
            r = results[name]
            mem = tree_memory_kib(k.pid())
            r.rss_start_kib, r.pss_start_kib, r.anon_start_kib = (sum(m[i] for m in mem) for i in (1, 2, 3))
            k.execute("print('x')", expect_stdout="x")
            time.sleep(args.settle)
            mem = tree_memory_kib(k.pid())
            r.rss_first_cell_kib, r.pss_first_cell_kib, r.anon_first_cell_kib = (
                sum(m[i] for m in mem) for i in (1, 2, 3))
            r.processes_after_first_cell = len(mem)
            r.memory_by_process_kib = mem
            k.drain_iopub()
            kernels[name] = k
        for i in range(args.warmup + args.runs):
            for name, k in kernels.items():
                # A pause before each cell lets the other kernel's work after its last cell
                # (threads that flush, save history, …) end first: two kernels share 2 CPUs.
                time.sleep(args.gap_ms / 1000)
                p = k.execute("pass")
                time.sleep(args.gap_ms / 1000)
                q = k.execute("print('x')", expect_stdout="x")
                if i >= args.warmup:
                    results[name].pass_ms.append(p)
                    results[name].print_ms.append(q)
        # The same `pass` cells in turns: every cell of a turn counts (the first one pays for
        # the other kernel's last turn, the rest follow their own kernel's cell).
        if args.turn_cells > 0:
            for _ in range(max(1, args.runs // args.turn_cells)):
                for name, k in kernels.items():
                    for _ in range(args.turn_cells):
                        results[name].pass_turns_ms.append(k.execute("pass"))
    finally:
        for k in kernels.values():
            k.stop()
    return results


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(results: dict[str, Result], carbons: list[str], peer: str) -> str:
    """One column per carbon kernel and the peer; ratios of each carbon kernel to the peer, and
    of the last carbon kernel to the first (after/before) when there are several."""
    p = results[peer]
    rows = [
        ("start -> kernel_info_reply (ms)", lambda r: med(r.start_ms), "peer/carbon", ">= 5x"),
        ("start -> first `pass` done (ms)", lambda r: med(r.first_pass_ms), "carbon/peer", "<= 0.25"),
        ("start -> first print('x') done (ms)", lambda r: med(r.first_cell_ms), "carbon/peer", "(info)"),
        ("round trip `pass` (ms)", lambda r: med(r.pass_ms), "carbon/peer", "<= 0.3"),
        ("round trip `print('x')` (ms)", lambda r: med(r.print_ms), "carbon/peer", "<= 1"),
        ("round trip `pass`, in turns (ms)", lambda r: med(r.pass_turns_ms), "carbon/peer", "<= 0.3"),
        ("RSS after start (MiB)", lambda r: r.rss_start_kib / 1024, "carbon/peer", "< 1"),
        ("RSS after first cell (MiB)", lambda r: r.rss_first_cell_kib / 1024, "carbon/peer", "< 1"),
        # RSS counts a page shared by several processes of a tree once per process (carbon's
        # guard maps the kernel's binary): PSS shares it out, anonymous RSS leaves it out.
        ("PSS after start (MiB)", lambda r: r.pss_start_kib / 1024, "carbon/peer", "< 1"),
        ("PSS after first cell (MiB)", lambda r: r.pss_first_cell_kib / 1024, "carbon/peer", "< 1"),
        ("anonymous RSS after start (MiB)", lambda r: r.anon_start_kib / 1024, "carbon/peer", "(info)"),
        ("anonymous RSS after first cell (MiB)", lambda r: r.anon_first_cell_kib / 1024, "carbon/peer",
         "(info)"),
    ]
    w = max(len(r[0]) for r in rows)
    cols = carbons + [peer]
    cw = max(10, *(len(c) for c in cols))
    out = [f"{'':{w}}  " + "  ".join(f"{c:>{cw}}" for c in cols) + "  ratios"]
    for label, get, how, goal in rows:
        pv = get(p)
        ratios = []
        for c in carbons:
            cv = get(results[c])
            r = pv / cv if how == "peer/carbon" else cv / max(pv, 1e-9)
            ratios.append(f"{c} {r:.2f}")
        if len(carbons) > 1:
            a, b = get(results[carbons[-1]]), get(results[carbons[0]])
            ratios.append(f"{carbons[-1]}/{carbons[0]} {a / max(b, 1e-9):.2f}")
        vals = "  ".join(f"{get(results[c]):{cw}.2f}" for c in cols)
        out.append(f"{label:{w}}  {vals}  {'; '.join(ratios)} ({how}; goal {goal})")
    out.append("")
    for c in cols:
        r = results[c]
        out.append(f"{c}: {r.implementation}; {r.processes_after_first_cell} process(es) after the first cell")
        for label, rss, pss, anon in r.memory_by_process_kib:
            out.append(f"  {label}: RSS {rss / 1024:.1f}, PSS {pss / 1024:.1f}, anonymous {anon / 1024:.1f} MiB")
    out.append(f"samples: start {len(p.start_ms)} per kernel, round trips {len(p.pass_ms)} per code "
               f"interleaved, {len(p.pass_turns_ms)} `pass` in turns")
    return "\n".join(out)


def use_this_venv() -> None:
    """Same Python for every kernel: the peer (ipykernel) runs in this venv, and carbon-kernel's
    Python cells use "the active environment's" interpreter. Run as `.venv/bin/python` without
    activation, carbon would fall back to python3 on PATH, whose IPython may differ (measured
    here: IPython 8.12 system-wide holds 51 MB after InteractiveShell(), 9.18 in .venv 23 MB)."""
    if sys.prefix != sys.base_prefix and not os.environ.get("VIRTUAL_ENV"):
        os.environ["VIRTUAL_ENV"] = sys.prefix
        os.environ["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"


def bin_specs(bins: list[str]) -> list[str]:
    """Throwaway kernelspecs for LABEL=PATH binaries, found through JUPYTER_PATH; their names."""
    root = Path(tempfile.mkdtemp(prefix="carbon-bench-spec-"))
    names = []
    for item in bins:
        label, _, path = item.rpartition("=")
        name = f"carbon-{label or Path(path).name}"
        d = root / "kernels" / name
        d.mkdir(parents=True)
        (d / "kernel.json").write_text(json.dumps({
            "argv": [os.path.abspath(path), "run", "--language", "python", "--connection-file",
                     "{connection_file}"],
            "display_name": name, "language": "python", "interrupt_mode": "message"}))
        names.append(name)
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("JUPYTER_PATH")]))
    return names


def add_kernel_args(parser: argparse.ArgumentParser, peer_optional: bool = False) -> None:
    """The kernels a benchmark compares: --carbon (a kernelspec) or --carbon-bin LABEL=PATH
    (binaries, repeatable; see bin_specs), and --peer (ipykernel's kernelspec; '' for none
    where `peer_optional`). carbon_names(args) gives the carbon kernels' names."""
    parser.add_argument("--carbon", default="carbon", help="kernelspec of carbon-kernel (default carbon)")
    parser.add_argument("--carbon-bin", action="append", default=[], metavar="LABEL=PATH",
                        help="a carbon-kernel binary to measure instead of --carbon (repeatable)")
    parser.add_argument("--peer", default="python3",
                        help="kernelspec of ipykernel (default python3" + ("; '' for none)" if peer_optional else ")"))


def carbon_names(args: argparse.Namespace) -> list[str]:
    """The carbon kernels of add_kernel_args' options, as kernelspec names."""
    return bin_specs(args.carbon_bin) if args.carbon_bin else [args.carbon]


def kernel_names(args: argparse.Namespace) -> list[str]:
    """carbon_names(args), then the peer unless --peer ''."""
    return carbon_names(args) + ([args.peer] if args.peer else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_kernel_args(parser)
    parser.add_argument("--start-runs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--turn-cells", type=int, default=25,
                        help="`pass` cells per kernel per turn in the turns part (0: skip it)")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="pause before each round-trip cell, ms (default 0: back to back)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading RSS")
    parser.add_argument("--json", type=Path, help="write raw samples and medians here")
    args = parser.parse_args()

    use_this_venv()
    print(f"python of carbon's cells: {os.environ.get('VIRTUAL_ENV') or 'python3 on PATH'}", file=sys.stderr)

    carbons = carbon_names(args)
    specs = KernelSpecManager().get_all_specs()
    for name in (*carbons, args.peer):
        if name not in specs:
            parser.error(f"no kernelspec {name!r} (have {sorted(specs)}); run install/setup.sh first")
    for name in carbons:
        print(f"{name}: {specs[name]['spec']['argv'][0]}", file=sys.stderr)
    print(f"peer:   {' '.join(specs[args.peer]['spec']['argv'][:3])}", file=sys.stderr)

    load = os.getloadavg()
    results = measure([*carbons, args.peer], args)
    text = report(results, carbons, args.peer)
    print(f"# kernel_bench on {platform.node()} ({os.cpu_count()} CPUs), python {platform.python_version()}, "
          f"load average {load[0]:.2f} before / {os.getloadavg()[0]:.2f} after")
    print(text)
    if args.json:
        args.json.write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
