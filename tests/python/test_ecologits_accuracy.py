"""Accuracy of `%llm estimate` against the real EcoLogits (issue 12, "Accuracy check").

Each case runs `%llm estimate PROVIDER:MODEL --tokens N --latency S [--zone Z]` in a real carbon
kernel (through jupyter_client), reads the unrounded figures the kernel attaches to the result
(`application/vnd.carbon-kernel.llm-estimate+json`), and computes EcoLogits' own `llm_impacts`
for the same model, tokens, latency and zone with the pinned `ecologits` package
(install/requirements-test.txt). Each kernel figure — energy, usage GWP and embodied GWP, both
ends of its range — must lie inside EcoLogits' range.

The cases cover every EcoLogits provider (Anthropic, Mistral and Cohere through a local gateway
with a LiteLLM-style prefix, which routes to that provider's datacenter), dense and MoE models,
exact/ranged parameter counts, models with and without tps/ttft, latencies that do and do not
cap the generation time, the provider's zone and chosen zones, and the name rules (dated names,
`models/` and provider prefixes, HF `:provider` suffixes, case, aliases, the nearest-name rule).
The table of all cases is written to tests/artifacts/ecologits_accuracy.md.
"""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

ecologits = pytest.importorskip("ecologits")
from ecologits.tracers.utils import llm_impacts  # noqa: E402
from ecologits.utils.range_value import RangeValue  # noqa: E402

pytestmark = pytest.mark.usefixtures("carbon_kernelspecs")

MIME = "application/vnd.carbon-kernel.llm-estimate+json"
ECOLOGITS_VERSION = "0.11.3"

# (kernel PROVIDER:MODEL, EcoLogits provider, EcoLogits model the kernel must use, tokens,
#  latency s, zone or None = the provider's datacenter zone)
CASES = [
    # OpenAI
    ("openai:gpt-4o", "openai", "gpt-4o", 500, 5.0, None),
    ("openai:gpt-4o-mini", "openai", "gpt-4o-mini", 500, 5.0, "USA"),
    ("openai:gpt-4o-2024-08-06", "openai", "gpt-4o-2024-08-06", 250, 30.0, "FRA"),
    ("openai:GPT-4o-Mini", "openai", "gpt-4o-mini", 120, 0.8, "SWE"),
    ("openai:gpt-4o-2099-01-01", "openai", "gpt-4o", 800, 60.0, None),
    ("openai:openai/gpt-4.1-nano", "openai", "gpt-4.1-nano", 60, 1.0, "DEU"),
    ("openai:gpt-4", "openai", "gpt-4", 300, 20.0, "WOR"),
    ("openai:gpt-5", "openai", "gpt-5", 2000, 45.0, "IND"),
    ("openai:o3-mini", "openai", "o3-mini", 1000, 12.0, None),
    ("openai:gpt-35-turbo", "openai", "gpt-35-turbo", 150, 2.0, "GBR"),
    # Google
    ("gemini:gemini-2.5-flash", "google_genai", "gemini-2.5-flash", 400, 4.0, None),
    ("gemini:models/gemini-2.5-pro", "google_genai", "gemini-2.5-pro", 900, 25.0, "CHN"),
    ("gemini:gemini-2.5-flash-lite", "google_genai", "gemini-2.5-flash-lite", 50, 0.5, "BRA"),
    ("gemini:gemini-1.5-flash", "google_genai", "gemini-2.5-flash", 300, 3.0, None),  # nearest
    ("gemini:gemini-1.5-pro", "google_genai", "gemini-2.5-pro", 300, 9.0, "FRA"),  # nearest
    ("gemini:gemma-4-26b-a4b-it", "google_genai", "gemma-4-26b-a4b-it", 700, 100.0, "NOR"),
    # Hugging Face
    ("hf:mistralai/Mistral-7B-Instruct-v0.2:featherless-ai", "huggingface_hub",
     "mistralai/Mistral-7B-Instruct-v0.2", 100, 1000.0, None),
    ("hf:meta-llama/Meta-Llama-3.1-8B-Instruct", "huggingface_hub",
     "meta-llama/Meta-Llama-3.1-8B-Instruct", 350, 3.0, "FRA"),
    ("hf:META-LLAMA/meta-llama-3.1-70b-instruct", "huggingface_hub",
     "meta-llama/Meta-Llama-3.1-70B-Instruct", 200, 50.0, "USA"),
    ("hf:meta-llama/Meta-Llama-3.1-405B-Instruct:together", "huggingface_hub",
     "meta-llama/Meta-Llama-3.1-405B-Instruct", 600, 40.0, "WOR"),
    ("hf:mistralai/Mixtral-8x22B-Instruct-v0.1", "huggingface_hub",
     "mistralai/Mixtral-8x22B-Instruct-v0.1", 1, 0.05, "DEU"),
    ("hf:openai/gpt-oss-120b", "huggingface_hub", "openai/gpt-oss-120b", 4000, 80.0, None),
    ("hf:databricks/dbrx-instruct", "huggingface_hub", "databricks/dbrx-instruct", 250, 10.0, "JPN"),
    # Anthropic, Mistral AI, Cohere: a local gateway (LiteLLM proxy) with a provider prefix
    ("local:anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", 500, 10.0, None),
    ("local:anthropic/claude-opus-4-5-20251101", "anthropic", "claude-opus-4-5-20251101", 800, 30.0, "FRA"),
    ("local:anthropic/claude-opus-4-6-20260101", "anthropic", "claude-opus-4-6", 100, 2.0, "USA"),
    ("local:anthropic/claude-haiku-4-5", "anthropic", "claude-haiku-4-5", 2000, 15.0, "IRL"),
    ("local:mistral/mistral-large-latest", "mistralai", "mistral-large-latest", 400, 8.0, None),
    ("local:mistral/codestral-2508", "mistralai", "codestral-2508", 900, 6.0, "FRA"),
    ("local:mistralai/ministral-8b-2512", "mistralai", "ministral-8b-2512", 300, 2.5, "SWE"),
    ("local:cohere/command-a-03-2025", "cohere", "command-a-03-2025", 600, 12.0, None),
    ("local:cohere/command-r-plus", "cohere", "command-r-plus-08-2024", 200, 4.0, "CAN"),
    ("local:cohere/command-r7b-12-2024", "cohere", "command-r7b-12-2024", 1500, 7.0, "AUS"),
]


def _value_range(v) -> tuple[float, float]:
    if isinstance(v, RangeValue):
        return float(v.min), float(v.max)
    return float(v), float(v)


def _start(env_extra: dict | None = None):
    import os

    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="carbon")
    env = os.environ.copy()
    env.pop("LLM_ZONE", None)
    env.update(env_extra or {})
    km.start_kernel(env=env)
    client = km.blocking_client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return km, client


@pytest.fixture(scope="module")
def kc():
    km, client = _start()
    yield client
    client.stop_channels()
    km.shutdown_kernel(now=True)


def _estimate(kc, spec: str, tokens: int, latency: float, zone: str | None) -> dict:
    code = f"%llm estimate {spec} --tokens {tokens} --latency {latency}"
    if zone:
        code += f" --zone {zone}"
    msg_id = kc.execute(code)
    data, errors = None, []
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=60)
        except queue.Empty:
            pytest.fail(f"{code}: no answer from the kernel")
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        t, c = msg["msg_type"], msg["content"]
        if t == "execute_result" and MIME in c["data"]:
            data = c["data"][MIME]
        elif t == "error":
            errors.append(f"{c['ename']}: {c['evalue']}")
        elif t == "status" and c["execution_state"] == "idle":
            break
    assert not errors, f"{code}: {errors}"
    assert data is not None, f"{code}: no {MIME} in the result"
    return data


def _inside(k: dict, lo: float, hi: float) -> bool:
    tol = 1e-9 * max(abs(hi), 1e-30)
    return lo - tol <= k["min"] <= hi + tol and lo - tol <= k["max"] <= hi + tol


def _equal(eco: dict, want: dict) -> bool:
    """Both ends equal to EcoLogits' (relative 1e-9): recorded in the table, not required."""
    return all(
        abs(eco[f][end] - want[f][i]) <= 1e-9 * max(abs(want[f][i]), 1e-30)
        for f in want for i, end in enumerate(("min", "max"))
    )


def test_ecologits_version_is_the_generated_one():
    """The installed ecologits is the version the kernel's data was generated from."""
    import json
    from importlib.metadata import version

    root = Path(__file__).resolve().parents[2]
    data = json.loads((root / "magics" / "data" / "ecologits_models.json").read_text())
    assert data["ecologits_version"] == ECOLOGITS_VERSION

    assert version("ecologits") == ECOLOGITS_VERSION


def test_nearest_rule_is_ecologits_litellm_rule():
    """The kernel's nearest-name picks are rapidfuzz's extractOne over EcoLogits' repository."""
    rapidfuzz = pytest.importorskip("rapidfuzz")
    from ecologits.model_repository import models

    choices = [f"{m.provider.value}/{m.name}" for m in models.list_models()]
    for query, expected in [("gemini-1.5-flash", "google_genai/gemini-2.5-flash"),
                            ("gemini-1.5-pro", "google_genai/gemini-2.5-pro")]:
        got = rapidfuzz.process.extractOne(query, choices, scorer=rapidfuzz.fuzz.token_sort_ratio,
                                           score_cutoff=51)
        assert got is not None and got[0] == expected, (query, got)


def test_kernel_inside_ecologits_range(kc, artifacts_dir: Path):
    assert len(CASES) >= 30
    rows, failures = [], []
    for spec, provider, model, tokens, latency, zone in CASES:
        k = _estimate(kc, spec, tokens, latency, zone)
        eco = k["ecologits"]
        assert eco["model_used"] == model, (spec, eco["model_used"], eco["resolution"])
        ref = llm_impacts(provider=provider, model_name=model, output_token_count=tokens,
                          request_latency=latency, electricity_mix_zone=zone)
        assert not ref.has_errors, (spec, ref.errors)
        want = {
            "energy_kwh": _value_range(ref.energy.value),
            "usage_kg": _value_range(ref.usage.gwp.value),
            "embodied_kg": _value_range(ref.embodied.gwp.value),
        }
        ok = {f: _inside(eco[f], *want[f]) for f in want}
        rows.append((spec, f"{provider}/{model}", tokens, latency, eco["zone"], eco, want, ok))
        if not all(ok.values()):
            failures.append((spec, {f: (eco[f], want[f]) for f in want}))
    lines = [
        f"# %llm estimate vs EcoLogits {ECOLOGITS_VERSION} llm_impacts ({len(rows)} cases)",
        "",
        "| kernel model | EcoLogits model | tokens | latency s | zone | energy kWh kernel | energy kWh EcoLogits "
        "| usage kg kernel | usage kg EcoLogits | embodied kg kernel | embodied kg EcoLogits | inside | equal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def r(x):
        return f"{x['min']:.4g}–{x['max']:.4g}" if x["min"] != x["max"] else f"{x['min']:.4g}"

    def w(x):
        return f"{x[0]:.4g}–{x[1]:.4g}" if x[0] != x[1] else f"{x[0]:.4g}"

    for spec, em, n, lat, z, eco, want, ok in rows:
        lines.append(
            f"| {spec} | {em} | {n} | {lat} | {z} | {r(eco['energy_kwh'])} | {w(want['energy_kwh'])} "
            f"| {r(eco['usage_kg'])} | {w(want['usage_kg'])} | {r(eco['embodied_kg'])} "
            f"| {w(want['embodied_kg'])} | {'yes' if all(ok.values()) else 'NO'} "
            f"| {'yes' if _equal(eco, want) else 'no'} |")
    (artifacts_dir / "ecologits_accuracy.md").write_text("\n".join(lines) + "\n")
    assert not failures, failures


def test_zone_from_env_and_report_names_it(kc):
    """`--zone` chooses; the report names the zone, its intensity and its source."""
    k = _estimate(kc, "openai:gpt-4o-mini", 100, 2.0, "FRA")
    eco = k["ecologits"]
    assert eco["zone"] == "FRA"
    assert abs(eco["intensity_kg_per_kwh"] - 0.04144) < 1e-12
    assert "--zone" in eco["zone_source"] and "electricity_mixes.json" in eco["zone_source"]
    k = _estimate(kc, "gemini:gemini-1.5-flash", 100, 2.0, None)
    assert "nearest registered model google_genai/gemini-2.5-flash" in k["ecologits"]["resolution"]


def test_llm_zone_setting_and_zone_flag_precedence():
    """`LLM_ZONE` (environment or .env) sets the default zone; `--zone` still wins."""
    km, client = _start({"LLM_ZONE": "swe"})
    try:
        eco = _estimate(client, "openai:gpt-4o-mini", 100, 2.0, None)["ecologits"]
        assert eco["zone"] == "SWE" and "LLM_ZONE" in eco["zone_source"], eco
        ref = llm_impacts("openai", "gpt-4o-mini", 100, 2.0, "SWE")
        assert _inside(eco["usage_kg"], *_value_range(ref.usage.gwp.value))
        eco = _estimate(client, "openai:gpt-4o-mini", 100, 2.0, "FRA")["ecologits"]
        assert eco["zone"] == "FRA"
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)
