"""Shared set-up of the Python-side tests.

The tests drive the real `carbon-kernel` binary built by cargo (target/debug by default, or
$CARBON_KERNEL_BIN) through Jupyter's own clients. Before any test runs:

* every Jupyter/IPython directory that would otherwise live in the user's home (data, runtime,
  config, IPython history, JupyterLab settings) points into a throwaway folder, so a user-level
  kernelspec cannot shadow ours and the tests leave nothing behind;
* the kernels start in a throwaway working folder (their `emissions.csv` and any `.env` lookup stay
  out of the repository);
* the `carbon_kernelspecs` fixture runs `carbon-kernel install --sys-prefix` into the project venv,
  the same command install/setup.sh runs, and checks where the specs landed.

Kernel-specific test modules (test_conformance*.py) use it with
``pytestmark = pytest.mark.usefixtures("carbon_kernelspecs")``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
NOTEBOOKS = ROOT / "notebooks"
KERNEL_NAMES = ("carbon", "carbon-java", "carbon-rust")

# --- isolation, done at import time so that jupyter_core sees it before any path is computed ---
_SANDBOX = Path(tempfile.mkdtemp(prefix="carbon-pytest-"))
atexit.register(shutil.rmtree, _SANDBOX, ignore_errors=True)
for _var, _sub in {
    "JUPYTER_DATA_DIR": "jupyter-data",
    "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "JUPYTER_CONFIG_DIR": "jupyter-config",
    "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
    "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
    # A fresh history database: IPython's is shared by every earlier session otherwise, which
    # breaks jupyter-kernel-test's "unique" history search (shared/reference/jupyter-kernel.md §5).
    "IPYTHONDIR": "ipython",
    "MPLCONFIGDIR": "matplotlib",
}.items():
    (_SANDBOX / _sub).mkdir()
    os.environ[_var] = str(_SANDBOX / _sub)
os.environ.pop("JUPYTER_PATH", None)
# Kernels run the notebooks' Python from this venv, as an activated venv would.
if sys.prefix != sys.base_prefix:
    os.environ["VIRTUAL_ENV"] = sys.prefix
    _bin = str(Path(sys.prefix) / "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != _bin:
        os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")
# Provider keys from the developer's shell must not turn tests into live LLM calls.
for _var in list(os.environ):
    if _var.endswith("_API_KEY") or _var in ("HF_TOKEN", "HUGGINGFACEHUB_API_TOKEN"):
        del os.environ[_var]


def kernel_binary() -> Path:
    """The carbon-kernel binary under test: $CARBON_KERNEL_BIN, else cargo's debug, else release."""
    env = os.environ.get("CARBON_KERNEL_BIN")
    if env:
        return Path(env).resolve()
    for profile in ("debug", "release"):
        candidate = ROOT / "target" / profile / "carbon-kernel"
        if candidate.is_file():
            return candidate
    return ROOT / "target" / "debug" / "carbon-kernel"


@pytest.fixture(scope="session")
def kernel_bin() -> Path:
    """Path of the built binary; fails with the command to run when it is missing."""
    path = kernel_binary()
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found: build it with `cargo build -p carbon-kernel` (install/test.sh does)")
    return path


@pytest.fixture(scope="session")
def carbon_kernelspecs(kernel_bin: Path) -> dict:
    """Installs the carbon kernelspecs into this venv (`--sys-prefix`) and returns them by name."""
    if sys.prefix == sys.base_prefix:
        pytest.fail("run the Python tests from the project venv (.venv/bin/python -m pytest): "
                    "`--sys-prefix` would otherwise write into the system Python")
    proc = subprocess.run(
        [str(kernel_bin), "install", "--sys-prefix"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )
    if proc.returncode != 0:
        pytest.fail(f"`carbon-kernel install --sys-prefix` failed ({proc.returncode}):\n"
                    f"{proc.stdout}\n{proc.stderr}")
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    found = {}
    for name in KERNEL_NAMES:
        if name not in specs:
            continue
        spec = specs[name]
        resource_dir = Path(spec["resource_dir"]).resolve()
        assert resource_dir.is_relative_to(Path(sys.prefix).resolve()), (
            f"kernelspec {name} landed in {resource_dir}, not in the venv {sys.prefix}")
        argv0 = Path(spec["spec"]["argv"][0])
        assert argv0.resolve() == kernel_bin.resolve(), (
            f"kernelspec {name} runs {argv0}, not the binary under test {kernel_bin}")
        found[name] = spec
    assert "carbon" in found, f"`carbon` kernelspec missing after install; have {sorted(specs)}"
    return found


@pytest.fixture(scope="session", autouse=True)
def _kernel_workdir() -> Path:
    """Runs the whole session in a throwaway folder: kernels inherit it as their working dir."""
    work = _SANDBOX / "work"
    work.mkdir(exist_ok=True)
    old = os.getcwd()
    os.chdir(work)
    yield work
    os.chdir(old)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """tests/artifacts/ (git-ignored): screenshots and executed notebooks kept for a look."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
