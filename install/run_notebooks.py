"""Executes notebooks with nbclient, each with the kernel its metadata names.

Used by install/setup.sh: `python install/run_notebooks.py [--out DIR] NOTEBOOK...`.
Each notebook runs in its own folder (so it finds its data files and writes its emissions.csv
beside itself); the executed copy goes to --out, the source stays with its outputs cleared.
Exit status 1 when any notebook fails, after running all of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def run(path: Path, out_dir: Path | None, timeout: int) -> str | None:
    """Runs one notebook; returns None when it passed, else a one-line reason."""
    nb = nbformat.read(path, as_version=4)
    kernel = nb.metadata.get("kernelspec", {}).get("name", "carbon")
    client = NotebookClient(nb, kernel_name=kernel, timeout=timeout, startup_timeout=120,
                            resources={"metadata": {"path": str(path.parent)}})
    error = None
    try:
        client.execute()
    except CellExecutionError as err:
        error = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    except Exception as err:  # a kernel that died or never started: report it, go on with the rest
        error = f"{type(err).__name__}: {err}"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / path.name)
    return error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="folder for the executed copies")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args()

    failures = 0
    for path in args.notebooks:
        if not path.is_file():
            print(f"  skip  {path} (not a file)")
            continue
        start = time.monotonic()
        error = run(path.resolve(), args.out, args.timeout)
        took = time.monotonic() - start
        if error:
            failures += 1
            print(f"  FAIL  {path.name} ({took:.1f}s): {error}")
        else:
            print(f"  ok    {path.name} ({took:.1f}s)")
    if args.out:
        print(f"executed copies in {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
