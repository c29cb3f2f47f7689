"""`carbon-kernel install --sys-prefix` makes the three kernels visible to Jupyter's own tools."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KERNEL_NAMES


def test_jupyter_kernelspec_list_shows_carbon_kernels(carbon_kernelspecs, kernel_bin):
    """`jupyter kernelspec list --json` (a separate process, like a user's) lists all three."""
    jupyter = Path(sys.prefix) / "bin" / "jupyter"
    proc = subprocess.run([str(jupyter), "kernelspec", "list", "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    specs = json.loads(proc.stdout)["kernelspecs"]
    missing = [n for n in KERNEL_NAMES if n not in specs]
    assert not missing, f"jupyter kernelspec list lacks {missing}; it has {sorted(specs)}"
    for name in KERNEL_NAMES:
        spec = specs[name]["spec"]
        assert "{connection_file}" in spec["argv"], f"{name}: argv must take the connection file"
        assert os.path.isabs(spec["argv"][0]), f"{name}: argv[0] must be an absolute path"
        assert Path(spec["argv"][0]).resolve() == kernel_bin.resolve()
        assert spec["display_name"], f"{name}: empty display_name"
        assert spec["language"], f"{name}: empty language"
        # Interrupts go over the control channel (shared/reference/jupyter-kernel.md §7).
        assert spec.get("interrupt_mode") == "message", f"{name}: interrupt_mode should be message"


def test_languages_of_the_three_kernels(carbon_kernelspecs):
    languages = {name: carbon_kernelspecs[name]["spec"]["language"].lower()
                 for name in KERNEL_NAMES if name in carbon_kernelspecs}
    assert languages.get("carbon") == "python"
    assert languages.get("carbon-java") == "java"
    assert languages.get("carbon-rust") == "rust"


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernelspec_has_logos(carbon_kernelspecs, name):
    if name not in carbon_kernelspecs:
        pytest.fail(f"kernelspec {name} not installed")
    resource_dir = Path(carbon_kernelspecs[name]["resource_dir"])
    logos = sorted(p.name for p in resource_dir.iterdir() if p.name.startswith("logo-"))
    assert logos, f"{name}: no logo-*.png/svg in {resource_dir}"
