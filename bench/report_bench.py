"""`carbon-kernel report` vs pandas on a generated semester, side by side in one run (issue 11, item 5).

Generates a class (default 300 students x 3,000 rows, one `<student>/emissions.csv` each, with the
kernel's real header: the column words are read from the writer's own declaration in
magics/src/carbon/record.rs, so the files have the 59 columns the kernel writes) into a temp dir,
then measures, alternating the two so machine noise hits both alike:

  * carbon-kernel: `report DIR --out report.html --json totals.json`, wall time of the process
    (reading, totals, HTML, JSON and the terminal table);
  * pandas: `pd.concat(pd.read_csv(f) for f in files)` plus the same totals (per student, language,
    LLM model and day: counts by kind, duration, energy, emissions), in this process.

Prints medians over --runs (after one warm-up of each, so both read from the page cache), rows per
second, the ratio, and the HTML and JSON sizes. This is a benchmark, not a test: nothing asserts on
time. Usage (pandas is in the project venv):

  .venv/bin/python bench/report_bench.py --kernel-bin target/release/carbon-kernel \
      [--students 300] [--rows 3000] [--runs 3] [--keep DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def kernel_columns() -> list[str]:
    """The header the kernel writes, from the `columns!` declaration of its CSV writer."""
    src = (ROOT / "magics" / "src" / "carbon" / "record.rs").read_text()
    block = src[src.index("columns! {") :]
    names = re.findall(r'^\s+[A-Z]\w* = "([a-z_]+)" =>', block, flags=re.M)
    if len(names) != 59 or names[:2] != ["timestamp", "project_name"]:
        sys.exit(f"unexpected columns in record.rs ({len(names)}): {names[:3]}...")
    return names


def num(x: float) -> str:
    """A float as the kernel writes it: shortest round-trip digits, never an exponent."""
    import numpy as np

    return np.format_float_positional(x, trim="-")


def generate(dest: Path, students: int, rows: int, seed: int) -> tuple[list[Path], int]:
    cols = kernel_columns()
    at = {c: i for i, c in enumerate(cols)}
    rnd = random.Random(seed)
    start = datetime(2026, 9, 7, 8, 0)
    fixed = [""] * len(cols)
    for c, v in {
        "project_name": "carbon-kernel",  # shared by every file: students are the files
        "water_consumed": "0",
        "country_name": "France",
        "country_iso_code": "FRA",
        "os": "Linux-6.8.0-45-generic-x86_64-with-glibc2.39",
        "python_version": "3.12.3",
        "cpu_count": "16",
        "cpu_model": "AMD EPYC 7763 64-Core Processor",
        "gpu_count": "0",
        "ram_total_size": "62.7",
        "on_cloud": "N",
        "pue": "1",
        "wue": "0",
        "status": "ok",
        "carbon_intensity": "56",
        "intensity_source": "Ember 2024 (FRA)",
        "kernel_version": "0.1.0",
    }.items():
        fixed[at[c]] = v
    files = []
    models = [("groq", "llama-3.3-70b-versatile"), ("gemini", "gemini-2.5-flash"), ("openai", "gpt-4")]
    langs = [("python", 1.0), ("java", 0.3), ("rust", 0.2)]
    for s in range(students):
        experiment = str(uuid.UUID(int=rnd.getrandbits(128)))
        # A semester: ~15 weeks of labs, a few cells a minute during a session.
        when = start + timedelta(days=rnd.randint(0, 3), minutes=rnd.randint(0, 600))
        lines = [",".join(cols)]
        for k in range(rows):
            when += timedelta(seconds=rnd.randint(5, 240)) if k % 60 else timedelta(days=rnd.randint(1, 3))
            f = fixed.copy()
            f[at["timestamp"]] = when.strftime("%Y-%m-%dT%H:%M:%S")
            f[at["run_id"]] = str(uuid.UUID(int=rnd.getrandbits(128)))
            f[at["experiment_id"]] = experiment
            if rnd.random() < 0.1:
                provider, model = rnd.choice(models)
                tokens = rnd.randint(50, 900)
                kwh = tokens * rnd.uniform(4e-7, 2e-5)
                dur = tokens / 150
                f[at["kind"]] = "llm"
                f[at["method"]] = "tokens x parameters"
                f[at["llm_provider"]] = provider
                f[at["llm_model"]] = model
                f[at["prompt_tokens"]] = str(rnd.randint(10, 400))
                f[at["completion_tokens"]] = str(tokens)
                f[at["cpu_energy"]] = num(kwh)
                f[at["emissions_min_kg"]] = num(kwh * 0.2)
                f[at["emissions_max_kg"]] = num(kwh * 0.8)
                em = kwh * 0.4
            else:
                lang, speed = rnd.choice(langs)
                dur = rnd.uniform(0.05, 4.0) * speed
                cpu_w, ram_w = rnd.uniform(8, 40), 3.0
                cpu, ram = cpu_w * dur / 3.6e6, ram_w * dur / 3.6e6
                kwh = cpu + ram
                em = kwh * 0.056
                f[at["kind"]] = "cell"
                f[at["language"]] = lang
                f[at["label"]] = f"cell {k}"
                f[at["method"]] = "RAPL package; process share"
                f[at["cpu_method"]] = "rapl"
                f[at["ram_method"]] = "model 3 W"
                f[at["tracking_mode"]] = "process"
                f[at["cpu_power"]] = num(cpu_w)
                f[at["ram_power"]] = num(ram_w)
                f[at["cpu_energy"]] = num(cpu)
                f[at["ram_energy"]] = num(ram)
                f[at["cpu_utilization_percent"]] = num(round(rnd.uniform(1, 100), 1))
                f[at["process_cpu_seconds"]] = num(round(dur * 0.9, 3))
            f[at["duration"]] = num(dur)
            f[at["energy_consumed"]] = num(kwh)
            f[at["emissions"]] = num(em)
            f[at["emissions_rate"]] = num(em / dur if dur else 0.0)
            lines.append(",".join(f))
        p = dest / f"student{s:03d}" / "emissions.csv"
        p.parent.mkdir(parents=True)
        p.write_text("\n".join(lines) + "\n")
        files.append(p)
    return files, students * rows


def run_kernel(bin_: str, data: Path, out: Path) -> float:
    html, js = out / "report.html", out / "totals.json"
    t = time.perf_counter()
    r = subprocess.run(
        [bin_, "report", str(data), "--out", str(html), "--json", str(js)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"carbon-kernel report failed ({r.returncode}): {r.stderr[-2000:]}")
    return wall


def run_pandas(files: list[Path]) -> tuple[float, dict]:
    import pandas as pd

    t = time.perf_counter()
    df = pd.concat(pd.read_csv(f).assign(student=f.parent.name) for f in files)
    kind = df["kind"]
    df["cells"] = kind.eq("cell")
    df["llm_requests"] = kind.eq("llm")
    df["runs"] = ~(df["cells"] | df["llm_requests"])
    df["day"] = pd.to_datetime(df["timestamp"], format="ISO8601").dt.date
    code = df[~df["llm_requests"]]
    llm = df[df["llm_requests"]].assign(model=lambda d: d["llm_provider"] + ":" + d["llm_model"])
    sums = ["cells", "llm_requests", "runs", "duration", "energy_consumed", "emissions"]
    totals = {
        "students": df.groupby("student")[sums].sum(),
        "languages": code.groupby(code["language"].fillna("not recorded"))[sums].sum(),
        "models": llm.groupby("model")[sums].sum(),
        "days": df.groupby("day")[sums].sum(),
    }
    wall = time.perf_counter() - t
    return wall, {k: len(v) for k, v in totals.items()} | {"rows": len(df)}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel-bin", default=str(ROOT / "target" / "release" / "carbon-kernel"))
    ap.add_argument("--students", type=int, default=300)
    ap.add_argument("--rows", type=int, default=3000, help="rows per student")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--keep", type=Path, help="generate here and keep the files (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args()
    if not os.access(a.kernel_bin, os.X_OK):
        sys.exit(f"no carbon-kernel at {a.kernel_bin} (cargo build --release -p carbon-kernel, or --kernel-bin)")

    tmp = Path(tempfile.mkdtemp(prefix="report-bench-"))
    data = a.keep or tmp / "class"
    out = tmp / "out"
    out.mkdir()
    try:
        t = time.perf_counter()
        files, n = generate(data, a.students, a.rows, a.seed)
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"generated {a.students} students x {a.rows} rows = {n:,} rows, {mb:,.0f} MB "
              f"in {time.perf_counter() - t:.1f} s ({data})", flush=True)
        print(f"load average before: {loadavg()}  ({os.cpu_count()} CPUs, {platform.machine()})", flush=True)
        run_kernel(a.kernel_bin, data, out)  # warm-up: page cache, binary
        _, shape = run_pandas(files)
        k_times, p_times = [], []
        for i in range(a.runs):
            k_times.append(run_kernel(a.kernel_bin, data, out))
            p_times.append(run_pandas(files)[0])
            print(f"  run {i + 1}: carbon-kernel {k_times[-1]:.2f} s, pandas {p_times[-1]:.2f} s", flush=True)
        k, p = statistics.median(k_times), statistics.median(p_times)
        html = (out / "report.html").stat().st_size
        js = (out / "totals.json").stat().st_size
        listed = len(json.loads((out / "totals.json").read_text())["students"])
        print(f"load average after: {loadavg()}")
        print()
        print(f"{'':16}{'wall (median)':>15}{'rows/s':>14}")
        print(f"{'carbon-kernel':16}{k:>13.2f} s{n / k:>14,.0f}")
        print(f"{'pandas ' + __import__('pandas').__version__:16}{p:>13.2f} s{n / p:>14,.0f}")
        print(f"carbon-kernel / pandas wall time: {k / p:.2f}")
        print(f"HTML {html / 1e3:,.0f} kB, JSON {js / 1e3:,.0f} kB ({listed} students listed; pandas groups {shape})")
        if a.json:
            a.json.write_text(json.dumps({
                "students": a.students, "rows_per_student": a.rows, "rows": n, "csv_mb": mb,
                "kernel_bin": a.kernel_bin, "kernel_s": k_times, "pandas_s": p_times,
                "kernel_median_s": k, "pandas_median_s": p, "html_bytes": html, "json_bytes": js,
                "students_in_json": listed, "loadavg": loadavg(),
            }, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
