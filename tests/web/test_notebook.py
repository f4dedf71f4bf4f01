"""notebooks/quickstart.ipynb: committed without outputs, and runs top to bottom.

The notebook is executed with nbclient in a kernel of this very interpreter (a kernelspec
written to a temporary JUPYTER_PATH), in a temporary folder, so it uses the package under
test and leaves nothing behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fashiongen.data.sources import resolve_idx_dir

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
KERNEL_NAME = "fashiongen-test"
TIMEOUT_S = 300  # per cell; the whole notebook takes about a minute on 2 busy CPU cores
HAS_FASHION_MNIST = resolve_idx_dir("fashion-mnist") is not None


def test_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_FASHION_MNIST, reason="Fashion-MNIST not available")
def test_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    spec = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "fashiongen (test)",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    work = tmp_path / "work"
    work.mkdir()

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook,
        kernel_name=KERNEL_NAME,
        timeout=TIMEOUT_S,
        resources={"metadata": {"path": str(work)}},
    ).execute()

    outputs = {cell.id: cell.outputs for cell in notebook.cells if cell.cell_type == "code"}
    text = {key: "".join(o.get("text", "") for o in out) for key, out in outputs.items()}
    assert "classes: T-shirt/top, Trouser" in text["model"] or "zoo" in text["model"]
    for key in ("grid", "strip"):
        assert any("image/png" in o.get("data", {}) for o in outputs[key]), key
    assert "seed 0" in text["strip"] or "seeds 0, 1" in text["strip"]
    assert "fid" in text["scores"] or "note:" in text["scores"]
