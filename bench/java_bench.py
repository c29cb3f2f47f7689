"""Java cells: carbon-kernel (carbon-java, through jupyter_client) vs a bare `jshell`, in one run
(issue 4, item 7).

Measures the median round trip of one trivial snippet (`x * 2` after `int x = 21;`):
  * carbon: execute_request → execute_reply + iopub idle on a `carbon-kernel run --language java`
    kernel, i.e. ZeroMQ + the kernel + its JShell helper (kernel/assets/java/CarbonJShell.java);
  * jshell: the `jshell` tool of the same JDK driven on stdin/stdout, one snippet per line, with a
    feedback mode whose prompt is a marker line (send the snippet, read up to the next prompt);
    default flags (what a user gets from typing `jshell`);
  * jshell-local: the same with `--execution local` and the helper's JVM flags
    (-XX:TieredStopAtLevel=1 -XX:+UseSerialGC), the fastest way to run the bare tool.
The three alternate snippet by snippet, so machine noise hits them alike. Also reported: cold
start (launch → first value) of each. Goal (issue 4): carbon within 10% of the bare tool.

Usage (from the project venv, after `cargo build --release -p carbon-kernel` or a debug build):
  .venv/bin/python bench/java_bench.py [--bin target/release/carbon-kernel] [--runs 30]
                                       [--warmup 5] [--json out.json]
This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = "int x = 21;"
SNIPPET = "x * 2"
EXPECT = "42"
MARK = "<<carbon-bench-prompt>>"
TIMEOUT_S = 120.0


def default_bin() -> Path:
    for profile in ("release", "debug"):
        p = ROOT / "target" / profile / "carbon-kernel"
        if p.is_file():
            return p
    sys.exit("no carbon-kernel binary: run `cargo build --release -p carbon-kernel` first")


class Carbon:
    """A carbon-java kernel started from a throwaway kernelspec that runs `binary`."""

    def __init__(self, binary: Path):
        self.tmp = Path(tempfile.mkdtemp(prefix="carbon-java-bench-"))
        spec = self.tmp / "kernels" / "carbon-java-bench"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [str(binary), "run", "--language", "java", "--connection-file",
                     "{connection_file}"],
            "display_name": "carbon-java (bench)", "language": "java",
            "interrupt_mode": "message",
        }))
        os.environ["JUPYTER_PATH"] = str(self.tmp)
        from jupyter_client import KernelManager  # after JUPYTER_PATH is set

        t0 = time.perf_counter()
        self.km = KernelManager(kernel_name="carbon-java-bench")
        self.km.start_kernel(cwd=str(self.tmp))
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=TIMEOUT_S)
        self.ready_s = time.perf_counter() - t0
        value = self.run(SETUP + "\n" + SNIPPET)
        self.first_value_s = time.perf_counter() - t0
        assert value == EXPECT, f"carbon said {value!r}"

    def run(self, code: str) -> str | None:
        """Executes `code`; returns text/plain of its execute_result (waits for idle)."""
        out: dict[str, str] = {}

        def hook(msg):
            if msg["header"]["msg_type"] == "execute_result":
                out["v"] = msg["content"]["data"].get("text/plain")
            elif msg["header"]["msg_type"] == "error":
                out["err"] = msg["content"]["evalue"]

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=TIMEOUT_S)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"carbon: {out.get('err') or reply['content']}")
        return out.get("v")

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


class JShellCli:
    """The `jshell` tool on pipes, with a feedback mode whose prompt marks the end of a reply."""

    def __init__(self, jshell: str, extra: list[str]):
        t0 = time.perf_counter()
        self.p = subprocess.Popen(
            [jshell, "-q", *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.buf = b""
        # a mode like `normal` (values shown as `x ==> 42`) whose prompt is our marker; jshell
        # ends a prompt without a newline, so replies are read up to the marker, not by lines
        self.send(f'/set mode bench normal -command\n/set prompt bench "{MARK}" "{MARK}"\n'
                  "/set feedback bench")
        self.read_to_prompt()
        self.ready_s = time.perf_counter() - t0
        self.cmd(SETUP)
        value = self.cmd(SNIPPET)
        self.first_value_s = time.perf_counter() - t0
        assert EXPECT in value, f"jshell said {value!r}"

    def read_to_prompt(self) -> str:
        mark = MARK.encode()
        while mark not in self.buf:
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("jshell ended: " + self.buf.decode(errors="replace"))
            self.buf += chunk
        reply, self.buf = self.buf.split(mark, 1)
        return reply.decode(errors="replace")

    def send(self, code: str) -> None:
        self.p.stdin.write(code.encode() + b"\n")
        self.p.stdin.flush()

    def cmd(self, code: str) -> str:
        self.send(code)
        return self.read_to_prompt()

    def close(self):
        try:
            self.p.stdin.write(b"/exit\n")
            self.p.stdin.flush()
            self.p.wait(timeout=10)
        except Exception:
            self.p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", type=Path, default=None, help="carbon-kernel binary")
    ap.add_argument("--jshell", default=shutil.which("jshell") or "jshell")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    binary = (args.bin or default_bin()).resolve()

    fast = ["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC",
            "-R-XX:TieredStopAtLevel=1", "-R-XX:+UseSerialGC"]
    peers = {
        "carbon": lambda: Carbon(binary),
        "jshell": lambda: JShellCli(args.jshell, []),
        "jshell-local": lambda: JShellCli(args.jshell, ["--execution", "local", *fast]),
    }
    drivers, cold = {}, {}
    for name, make in peers.items():
        d = make()
        drivers[name] = d
        cold[name] = {"ready_s": d.ready_s, "first_value_s": d.first_value_s}

    def once(name: str) -> float:
        d = drivers[name]
        t0 = time.perf_counter()
        if name == "carbon":
            v = d.run(SNIPPET)
            assert v == EXPECT, v
        else:
            v = d.cmd(SNIPPET)
            assert EXPECT in v, v
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {n: [] for n in drivers}
    try:
        for i in range(args.warmup + args.runs):
            for name in drivers:
                t = once(name)
                if i >= args.warmup:
                    times[name].append(t)
    finally:
        for d in drivers.values():
            d.close()

    med = {n: statistics.median(ts) for n, ts in times.items()}
    print(f"binary: {binary}")
    print(f"jshell: {args.jshell}  (snippet {SNIPPET!r}, {args.runs} runs after {args.warmup} warm-up)")
    print(f"{'driver':14} {'ready s':>8} {'1st value s':>12} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8}")
    for n, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        print(f"{n:14} {cold[n]['ready_s']:8.2f} {cold[n]['first_value_s']:12.2f} "
              f"{med[n] * 1e3:10.1f} {q[0] * 1e3:8.1f} {q[-1] * 1e3:8.1f}")
    for peer in ("jshell", "jshell-local"):
        r = med["carbon"] / med[peer]
        verdict = "within 10%" if r <= 1.10 else "slower than the 10% goal"
        print(f"carbon / {peer}: {r:.2f}  ({verdict})")
    if args.json:
        args.json.write_text(json.dumps({"median_s": med, "cold": cold, "runs": times}, indent=1))


if __name__ == "__main__":
    main()
