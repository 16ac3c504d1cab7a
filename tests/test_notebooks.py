"""The inspection notebooks run top to bottom (synthetic data, a tiny model trained inside), and
are stored with their outputs (the model notebook's from the default run) so they read as
documentation without running them."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there():
    assert {p.name for p in NOTEBOOKS} == {"inspect_data.ipynb", "inspect_model.ipynb"}


def figures(notebook) -> list:
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    return [o for o in outputs if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_executed_with_its_figures(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), f"{path.name}: run it top to bottom"
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"], path.name
    assert len(figures(notebook)) >= 4, f"{path.name}: every section draws"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it
    monkeypatch.delenv("BOOKSEGM_CKPT", raising=False)  # the model notebook trains its tiny model
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})  # runs in tmp_path
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    assert len(figures(notebook)) >= 4  # every section draws
