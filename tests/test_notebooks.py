"""The notebooks run top to bottom, headless, on the venv's kernel (so they cannot rot) and are committed clean."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# Notebooks that read the shared real data (the oracle's COCO annotations, coco-mini), found as the configs find it.
SHARED = Path(os.environ.get("BOTTOMUP_SHARED_DATA", REPO.parent / "shared" / "data"))
NEEDS_SHARED = {"decoder_cost", "oracle_ablation"}


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if path.stem in NEEDS_SHARED and not SHARED.is_dir():
        pytest.skip(f"{path.name} reads the shared data, not found at {SHARED}")
    # The kernel inherits this environment: generated data goes to a temporary cache, not the repository's.
    monkeypatch.setenv("BOTTOMUP_CACHE", str(tmp_path / "cache"))
    notebook = nbformat.read(path, as_version=4)
    # jupyter_client starts the "python3" kernel with this interpreter (the venv's), from the notebook's folder.
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
