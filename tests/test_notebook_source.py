"""A notebook drafted as a percent-format script becomes one papermill can parameterise (README, "The notebooks")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import papermill

REPO = Path(__file__).resolve().parent.parent
COMMAND = "jupytext --to ipynb --set-kernel python3"

SCRIPT = '''# %% [markdown]
# # A stage
# what it does

# %% tags=["parameters"]
params_file = "params/demo.yaml"
n = 3

# %%
print(params_file, n)
'''


def test_percent_script_converts_with_a_tagged_parameters_cell(tmp_path):
    assert COMMAND in (REPO / "README.md").read_text().replace("\n", " ")
    script = tmp_path / "09_stage.py"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, "-m", *COMMAND.split(), str(script)], check=True, capture_output=True)
    path = tmp_path / "09_stage.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
    assert nb.cells[0].source == "# A stage\nwhat it does"
    assert nb.cells[1].metadata.get("tags") == ["parameters"] and not nb.cells[2].metadata.get("tags")
    assert nb.metadata.kernelspec.name == "python3"
    assert {k: v["default"] for k, v in papermill.inspect_notebook(str(path)).items()} == {
        "params_file": '"params/demo.yaml"', "n": "3"}
