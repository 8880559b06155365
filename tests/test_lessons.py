"""The lessons run: every `lessons/NN_*.py` executes top to bottom with plain `python`, each in a
fresh temporary directory, and asserts its own claims. They are numbered 01, 02, ... without gaps
and are jupytext percent-format notebooks."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_lesson_runs(path, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (f"{path.name} exited with {result.returncode}\n"
                                    f"--- stderr ---\n{result.stderr}\n"
                                    f"--- last stdout ---\n{result.stdout[-2000:]}")


def test_lessons_are_numbered_consecutively_from_01():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert numbers, "no lessons found in lessons/"
    assert numbers == list(range(1, len(numbers) + 1)), (
        f"lessons must be numbered 01, 02, ... without gaps or duplicates: "
        f"{[p.name for p in LESSONS]}")


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_lesson_is_jupytext_percent_format(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines and lines[0] == "# ---":                 # optional jupytext metadata header
        end = lines.index("# ---", 1)
        lines = lines[end + 1:]
    first = next((line for line in lines if line.strip()), "")
    assert first.startswith("# %%"), f"{path.name} must start with a '# %%' cell marker"
    markers = [line for line in lines if line.startswith("# %%")]
    assert any(re.match(r"# %% \[markdown\]", m) for m in markers), \
        f"{path.name} has no '# %% [markdown]' cell"
    assert any(m.strip() == "# %%" for m in markers), f"{path.name} has no code cell"


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_lesson_opens_as_notebook(path):
    import jupytext          # in the `test` extra
    notebook = jupytext.read(path, fmt="py:percent")
    kinds = {cell.cell_type for cell in notebook.cells}
    assert {"markdown", "code"} <= kinds, f"{path.name} cells: {kinds}"
