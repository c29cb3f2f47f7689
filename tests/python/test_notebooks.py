"""Every teaching notebook in notebooks/ runs top to bottom through nbclient without an error.

Each notebook runs on a copy of notebooks/ in a throwaway folder (its `emissions.csv` and the files
it writes stay out of the repository), with the kernel its metadata names (the `carbon` family),
no provider keys and no network. The executed copies are kept in tests/artifacts/notebooks/.
"""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import KERNEL_NAMES, NOTEBOOKS

pytestmark = pytest.mark.usefixtures("carbon_kernelspecs")

NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_notebooks_folder_is_not_empty():
    assert NOTEBOOK_PATHS, f"no notebooks in {NOTEBOOKS}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_notebook_runs_without_error(path: Path, tmp_path: Path, artifacts_dir: Path):
    work = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "emissions.csv"))
    nb = nbformat.read(work / path.name, as_version=4)
    kernel_name = nb.metadata.get("kernelspec", {}).get("name", "carbon")
    assert kernel_name in KERNEL_NAMES, f"{path.name} uses kernel {kernel_name!r}, not a carbon kernel"
    # The repository keeps notebooks with outputs cleared (issue 6).
    stale = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not stale, f"{path.name}: cells {stale} have saved outputs; clear them before committing"

    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=300,
        startup_timeout=120,
        resources={"metadata": {"path": str(work)}},
    )
    out_dir = artifacts_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell failed:\n{err}")
    finally:
        nbformat.write(nb, out_dir / path.name)

    # nbclient only raises on `error` outputs; a cell whose reply said error without one is caught here.
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{path.name} cell {i}: {errors[0].ename}: {errors[0].evalue}"
    ran = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count for c in ran), f"{path.name}: some code cells did not run"
