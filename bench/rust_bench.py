"""Rust cells: carbon-kernel (evcxr inside the kernel) vs a bare evcxr loop, side by side (issue 4,
item 7).

The peer: evcxr's own REPL/kernel (`cargo install evcxr_repl --locked`) needs a ~7 min clean build
of ~245 crates on 2 cores (shared/reference/jupyter-kernel.md §2), which did not fit; the peer is
therefore `bench/evcxr_loop.rs`, evcxr's `CommandContext` driven over stdin/stdout with nothing
around it (what evcxr_repl does, without its line editor), built from the same evcxr 0.22 and the
same cargo profile as the kernel.

Measured, per side, after both are started and warmed up (--warmup cells):
  * round trip of a trivial cell (--code, default `1 + 1`), median of --runs, the two sides
    alternating cell by cell so machine noise hits both alike. Carbon: execute_request to
    execute_reply + iopub idle through jupyter_client (result checked); peer: line written to
    line read (result checked).
Prints medians, the ratio carbon/peer and the goal (within 10 %, issue 4). Not a test: nothing
asserts on time.

Usage (from the project venv):
  cargo build -p carbon-kernel --bin carbon-kernel --example evcxr_loop
  .venv/bin/python bench/rust_bench.py [--runs 15] [--warmup 3] [--code '1 + 1'] [--json out.json]
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

from jupyter_client import KernelManager

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 600.0
CELL_TIMEOUT_S = 300.0


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"


class Carbon:
    """A carbon-kernel running Rust by default, from a throwaway kernelspec."""

    def __init__(self, binary: Path) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="carbon-rust-bench-")
        spec_dir = Path(self.dir.name) / "kernels" / "carbon-rust-bench"
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [str(binary), "run", "--language", "rust",
                     "--connection-file", "{connection_file}"],
            "display_name": "carbon rust (bench)", "language": "rust",
            "interrupt_mode": "message",
        }))
        os.environ["JUPYTER_PATH"] = str(Path(self.dir.name))
        self.km = KernelManager(kernel_name="carbon-rust-bench")
        self.km.start_kernel(cwd=self.dir.name)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=START_TIMEOUT_S)

    def run(self, code: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        msg_id = self.kc.execute(code)
        result = ""
        while True:
            msg = self.kc.get_iopub_msg(timeout=CELL_TIMEOUT_S)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_result":
                result = msg["content"]["data"].get("text/plain", "")
            if msg["msg_type"] == "error":
                result = "ERR " + msg["content"]["evalue"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=CELL_TIMEOUT_S)
        assert reply["parent_header"]["msg_id"] == msg_id
        return time.perf_counter() - t0, result

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        self.dir.cleanup()


class Peer:
    """bench/evcxr_loop: bare evcxr."""

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            raise SystemExit(f"evcxr_loop did not start: {line!r}")

    def run(self, code: str) -> tuple[float, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        t0 = time.perf_counter()
        self.proc.stdin.write(code.replace("\n", "\\n") + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().rstrip("\n")
        elapsed = time.perf_counter() - t0
        return elapsed, line[3:] if line.startswith("OK ") else line

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--code", default="1 + 1")
    ap.add_argument("--expect", default="2", help="text/plain the cell must produce")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    kernel_bin = target_dir() / "carbon-kernel"
    peer_bin = target_dir() / "examples" / "evcxr_loop"
    for b in (kernel_bin, peer_bin):
        if not b.exists():
            print(f"missing {b}: cargo build -p carbon-kernel --bin carbon-kernel "
                  "--example evcxr_loop", file=sys.stderr)
            return 2

    t0 = time.perf_counter()
    peer = Peer(peer_bin)
    peer_start = time.perf_counter() - t0
    carbon = Carbon(kernel_bin)
    samples: dict[str, list[float]] = {"carbon": [], "peer": []}
    try:
        # The first carbon cell starts evcxr (lazy), so it is part of the warm-up.
        t0 = time.perf_counter()
        _, first = carbon.run(args.code)
        carbon_first = time.perf_counter() - t0
        for _ in range(args.warmup):
            carbon.run(args.code)
            peer.run(args.code)
        for _ in range(args.runs):
            for name, side in (("carbon", carbon), ("peer", peer)):
                dt, result = side.run(args.code)
                if result != args.expect:
                    raise SystemExit(f"{name} answered {result!r}, expected {args.expect!r}")
                samples[name].append(dt)
    finally:
        carbon.close()
        peer.close()

    med = {k: statistics.median(v) for k, v in samples.items()}
    ratio = med["carbon"] / med["peer"]
    print(f"cell {args.code!r}, {args.runs} runs after {args.warmup} warm-up, alternating")
    print(f"  peer (bare evcxr loop) start incl. evcxr warm-up: {peer_start:.2f} s")
    print(f"  carbon first cell (lazy evcxr start + cell):       {carbon_first:.2f} s ({first!r})")
    for k in ("carbon", "peer"):
        v = sorted(samples[k])
        print(f"  {k:6s} round trip: median {med[k] * 1000:7.1f} ms "
              f"(min {v[0] * 1000:.1f}, max {v[-1] * 1000:.1f})")
    verdict = "within" if ratio <= 1.10 else "NOT within"
    print(f"  ratio carbon/peer: {ratio:.3f} ({verdict} the 10 % goal)")
    if args.json:
        args.json.write_text(json.dumps({"code": args.code, "runs": args.runs, "median_s": med,
                                         "ratio": ratio, "samples_s": samples}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
