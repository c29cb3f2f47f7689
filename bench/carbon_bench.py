#!/usr/bin/env python3
"""%%carbon against CodeCarbon, side by side in one run (a benchmark, not a test).

1. Latency added by %%carbon to a `pass` cell, through jupyter_client against the `carbon`
   kernel (installed kernelspec, or the binary given with --kernel-bin): median round trip of
   `%%carbon\\npass` (with and without the CSV row) minus the median of a plain `pass`.
   --kernel-bin may be given several times, as LABEL=PATH (e.g. before=… after=…): the kernels
   run side by side and their cells alternate, so machine noise hits them alike; parts 2 and 3
   then use the last one. --latency-only skips parts 2 and 3 (no codecarbon needed).
   Then the same cells timed at the socket (1b): a second client with plain pyzmq sockets takes
   the time when the execute_reply and the idle status arrive, without jupyter_client's work
   per message (it decodes each one; the report and its chart are two more messages, and on the
   2-core VM jupyter_client spent 0.3-0.6 ms on each): what the kernel itself adds.
2. CodeCarbon 3.3.x `OfflineEmissionsTracker` construct + start + stop around the same `pass`:
   cold (first tracker, fresh interpreter) and warm (a later tracker in the same interpreter).
3. A 3 s pure-Python busy loop: our process-scope CPU energy (CPU-time x TDP) vs CodeCarbon's
   process-mode CPU energy, with the same TDP (CodeCarbon's detected value, given to the kernel
   with %carbon config tdp=) and the same intensity (FRA).

Prints medians and ratios. Needs jupyter_client and codecarbon in the interpreter that runs it:
    python3 -m venv /tmp/cc-venv && /tmp/cc-venv/bin/pip install codecarbon==3.3.2 jupyter_client
    /tmp/cc-venv/bin/python bench/carbon_bench.py --kernel-bin target/release/carbon-kernel
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from rawclient import RawClient, drain

BUSY = "x = 0\nt_end = time.perf_counter() + 3.0\nwhile time.perf_counter() < t_end:\n    x += 1\n"

CC_CHILD = textwrap.dedent(
    """
    import json, logging, sys, time, warnings
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    out_dir, mode, warm_n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = time.perf_counter()
    from codecarbon import OfflineEmissionsTracker
    t_import = time.perf_counter() - t0

    def tracked(work, tracking_mode):
        t0 = time.perf_counter()
        tr = OfflineEmissionsTracker(country_iso_code="FRA", output_dir=out_dir,
                                     log_level="error", tracking_mode=tracking_mode,
                                     save_to_file=False)
        t1 = time.perf_counter()
        tr.start()
        t2 = time.perf_counter()
        work()
        t3 = time.perf_counter()
        tr.stop()
        t4 = time.perf_counter()
        return tr, (t1 - t0) + (t2 - t1) + (t4 - t3)

    res = {"import_s": t_import}
    if mode == "overhead":
        tr, cold = tracked(lambda: None, "machine")
        res["cold_s"] = cold
        res["warm_s"] = [tracked(lambda: None, "machine")[1] for _ in range(warm_n)]
    else:
        def busy():
            x = 0
            t_end = time.perf_counter() + 3.0
            while time.perf_counter() < t_end:
                x += 1
        tr, _ = tracked(busy, "process")
        d = tr.final_emissions_data
        tdp = None
        for h in getattr(tr, "_hardware", []):
            if getattr(h, "_tdp", None):
                tdp = h._tdp
        res.update(cpu_energy_kwh=d.cpu_energy, ram_energy_kwh=d.ram_energy,
                   duration_s=d.duration, tdp_w=tdp, cpu_count=d.cpu_count)
    print(json.dumps(res))
    """
)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def start_kernel(kernel_bin, kernel_name, workdir, env_extra):
    from jupyter_client.manager import KernelManager

    env = dict(os.environ)
    env.update(env_extra)
    name = kernel_name
    if kernel_bin:
        # a throwaway kernelspec for this binary, found through JUPYTER_PATH
        spec_root = tempfile.mkdtemp(prefix="carbon-bench-spec-")
        os.makedirs(os.path.join(spec_root, "kernels", "carbon-bench"))
        with open(os.path.join(spec_root, "kernels", "carbon-bench", "kernel.json"), "w") as f:
            json.dump({"argv": [os.path.abspath(kernel_bin), "run", "--connection-file",
                                "{connection_file}"],
                       "display_name": "carbon (bench)", "language": "python",
                       "interrupt_mode": "message"}, f)
        os.environ["JUPYTER_PATH"] = spec_root
        name = "carbon-bench"
    km = KernelManager(kernel_name=name)
    km.start_kernel(cwd=workdir, env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    return km, kc


def run_cell(kc, code, timeout=120):
    outputs = []
    t0 = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
    dt = time.perf_counter() - t0
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {code!r}: {reply['content']}")
    return dt, outputs


def latency(kcs, n):
    """Medians (plain, metered, metered with CSV row) per client; the clients' cells alternate."""
    for kc in kcs:
        run_cell(kc, "pass")  # start the Python runtime
        run_cell(kc, "%%carbon --no-csv\npass")  # build the meter (detection is cached)
    samples = [([], [], []) for _ in kcs]
    for _ in range(n):
        for kc, (plain, metered, metered_csv) in zip(kcs, samples):
            plain.append(run_cell(kc, "pass")[0])
            metered.append(run_cell(kc, "%%carbon --no-csv\npass")[0])
            metered_csv.append(run_cell(kc, "%%carbon\npass")[0])
    return [tuple(median(x) for x in s) for s in samples]


def raw_latency(kms, n):
    """Part 1's medians, timed at the socket by a RawClient on each kernel."""
    import zmq

    context = zmq.Context()
    clients = [RawClient(km, context) for km in kms]
    time.sleep(1.0)  # the SUB sockets' subscriptions reach the kernels
    codes = ["pass", "%%carbon --no-csv\npass", "%%carbon\npass"]
    samples = [([], [], []) for _ in clients]
    for i in range(n + 10):
        for c, s in zip(clients, samples):
            for code, out in zip(codes, s):
                t = c.run(code)
                if i >= 10:
                    out.append(t)
    return [tuple(median(x) for x in s) for s in samples]


def print_latency(kernels, meds):
    for (label, _, _), (plain, metered, metered_csv) in zip(kernels, meds):
        print(f"   [{label}]")
        print(f"   plain pass                 {plain * 1e3:8.3f} ms")
        print(f"   %%carbon --no-csv pass      {metered * 1e3:8.3f} ms   added {(metered - plain) * 1e3:7.3f} ms")
        print(f"   %%carbon pass (+CSV row)    {metered_csv * 1e3:8.3f} ms   added {(metered_csv - plain) * 1e3:7.3f} ms")
    if len(kernels) > 1:
        (a, _, _), (b, _, _) = kernels[0], kernels[-1]
        (pa, ma, ca), (pb, mb, cb) = meds[0], meds[-1]
        print(f"   added by %%carbon, {b}/{a}: --no-csv {(mb - pb) / max(ma - pa, 1e-9):.2f}, "
              f"+CSV {(cb - pb) / max(ca - pa, 1e-9):.2f}")


def codecarbon(mode, warm_n, out_dir):
    p = subprocess.run([sys.executable, "-c", CC_CHILD, out_dir, mode, str(warm_n)],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel-name", default="carbon")
    ap.add_argument("--kernel-bin", action="append", default=[], metavar="[LABEL=]PATH",
                    help="run this carbon-kernel binary instead of the kernelspec (repeatable)")
    ap.add_argument("--latency-only", action="store_true", help="part 1 only (no codecarbon)")
    ap.add_argument("-n", type=int, default=100, help="pass cells per variant")
    ap.add_argument("--cold", type=int, default=3, help="fresh-interpreter CodeCarbon runs")
    ap.add_argument("--warm", type=int, default=20, help="warm CodeCarbon trackers per interpreter")
    ap.add_argument("--busy", type=int, default=3, help="busy-loop repetitions per tool")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="carbon-bench-")
    load = os.getloadavg()[0]
    print(f"carbon_bench: {os.cpu_count()} CPUs, load average {load:.2f}, work dir {work}")

    bins = [b.rpartition("=") for b in args.kernel_bin] or [("", "", None)]
    kernels, wds = [], []
    try:
        for label, _, path in bins:
            # one work dir each: every kernel appends to its own emissions.csv
            wd = tempfile.mkdtemp(prefix="carbon-bench-", dir=work) if len(bins) > 1 else work
            wds.append(wd)
            km, kc = start_kernel(path, args.kernel_name, wd, {"CARBON_COUNTRY": "FRA"})
            kernels.append((label or (os.path.basename(path) if path else args.kernel_name), km, kc))
        meds = latency([kc for _, _, kc in kernels], args.n)
        print("\n1. latency of a `pass` cell through jupyter_client (median of %d)" % args.n)
        print_latency(kernels, meds)
        raw = raw_latency([km for _, km, _ in kernels], args.n)
        for _, _, kc in kernels:
            # Part 1b's messages queued up on this client's unread iopub (in its socket, and in
            # the kernel's queue for it, which drops at its high-water mark): read them, or part
            # 3's cells would find that queue full and their own messages dropped.
            drain(kc, quiet_s=0.5)
        print("\n1b. the same cells timed at the socket: plain pyzmq, no decoding (median of %d)" % args.n)
        print_latency(kernels, raw)
        print(f"   load average after part 1: {os.getloadavg()[0]:.2f}")
        if args.latency_only:
            return
        label, km, kc = kernels[-1]
        work = wds[-1]  # part 3 reads the last kernel's emissions.csv
        plain, metered, metered_csv = meds[-1]

        cold = [codecarbon("overhead", args.warm, work) for _ in range(args.cold)]
        cold_s = [c["cold_s"] for c in cold]
        warm_s = [w for c in cold for w in c["warm_s"]]
        added = max(metered_csv - plain, 1e-9)
        print("\n2. CodeCarbon OfflineEmissionsTracker construct+start+stop around `pass`")
        print(f"   cold (fresh interpreter, median of {len(cold_s)})  {median(cold_s) * 1e3:10.1f} ms"
              f"   = {median(cold_s) / added:8.0f} x our added latency")
        print(f"   warm (same interpreter, median of {len(warm_s)})   {median(warm_s) * 1e3:10.3f} ms"
              f"   = {median(warm_s) / added:8.1f} x our added latency")
        print(f"   (import codecarbon: {median([c['import_s'] for c in cold]) * 1e3:.1f} ms, not counted)")

        cc = [codecarbon("busy", 0, work) for _ in range(args.busy)]
        tdp = cc[0]["tdp_w"]
        if tdp:
            run_cell(kc, f"%carbon config tdp={tdp}")
        ours_j, ours_cpu_s, ours_dur = [], [], []
        for _ in range(args.busy):
            run_cell(kc, "import time")
            run_cell(kc, "%%carbon --scope process --label busy\n" + BUSY)
            with open(os.path.join(work, "emissions.csv"), newline="") as f:
                row = list(csv.DictReader(f))[-1]
            ours_j.append(float(row["cpu_energy"]) * 3.6e6)
            ours_cpu_s.append(float(row["process_cpu_seconds"]))
            ours_dur.append(float(row["duration"]))
        cc_j = [c["cpu_energy_kwh"] * 3.6e6 for c in cc]
        cc_ram = [c["ram_energy_kwh"] * 3.6e6 for c in cc]
        print(f"\n3. 3 s pure-Python busy loop, process scope, TDP {tdp} W (CodeCarbon's), FRA; median of {args.busy}")
        print(f"   ours        CPU {median(ours_j):7.2f} J  ({median(ours_cpu_s):.2f} CPU s over {median(ours_dur):.2f} s)")
        print(f"   CodeCarbon  CPU {median(cc_j):7.2f} J  (+ RAM {median(cc_ram):.2f} J, its floor of 10 W for the whole run)")
        print(f"   ratio CodeCarbon / ours: {median(cc_j) / median(ours_j):.3f}")
        print("   model check: ours should be TDP x CPU s / CPUs = "
              f"{(tdp or 0) * median(ours_cpu_s) / (cc[0]['cpu_count'] or 1):.2f} J")
    finally:
        for _, km, kc in kernels:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
