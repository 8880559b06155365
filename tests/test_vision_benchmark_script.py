"""benchmarks/vision.py runs: its --quick mode (a small tower) times every side, finds their
features equal, and writes its section. Run in a subprocess: the script sets the thread
variables of NumPy, Numba and PyTorch when it starts, which must not leak into this process."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIDES = ("tinyphi3 numpy", "tinyphi3 numba", "transformers, all layers",
         "transformers, layers needed")


def test_the_quick_run_times_every_side_and_writes_its_section(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vision.py"), "--quick",
                           "--runs", "1", "--crops", "1,2", "--threads", "1",
                           "--out", str(docs)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    text = docs.read_text()
    assert "## Other\n\nkept" in text and "## Vision tower: CLIP ViT-L/14-336 (quick)" in text
    for crops in (1, 2):
        for side in SIDES:
            assert f"| {crops} | {side} |" in text, (crops, side)
    assert "features against tinyphi3 numpy" in done.stdout
