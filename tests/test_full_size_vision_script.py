"""benchmarks/load_full_size.py --model vision: the snapshot it writes has the published
Phi-3-vision-128k-instruct geometry (checked without writing 8 GB), and its --quick run (a tiny
model of the same layout) goes through every step, writes its two sections beside the others,
and deletes the snapshots it wrote."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tinyphi3.config import Phi3Config
from tinyphi3.models.vision.weights import parameter_shapes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import load_full_size_vision


def test_the_full_size_geometry_is_the_published_one(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(load_full_size_vision.config_json()))
    config = Phi3Config.from_json_file(tmp_path / "config.json")
    shapes = parameter_shapes(config)
    assert config.model_type == "phi3_v" and config.rope_scaling["type"] == "longrope"
    assert len(config.rope_scaling["short_factor"]) == len(config.rope_scaling["long_factor"]) == 48
    assert (config.max_position_embeddings, config.original_max_position_embeddings,
            config.sliding_window, config.eos_token_id) == (131072, 4096, 131072, 2)
    assert len(shapes) == 592                                           # REFERENCE-vision §1.4
    assert sum(int(np.prod(s)) for s in shapes.values()) == 4_146_621_440
    shards = load_full_size_vision.plan_shards(shapes, load_full_size_vision.MAX_SHARD_BYTES)
    assert len(shards) == 2 and sum(map(len, shards)) == 592
    assert sum(2 * int(np.prod(shapes[n])) for shard in shards for n in shard) == 8_293_242_880
    assert load_full_size_vision.preprocessor_json()["num_crops"] == 16


def test_the_quick_run_measures_every_step_and_writes_its_sections(tmp_path):
    full_size, benchmarks = tmp_path / "full_size_load.md", tmp_path / "benchmarks.md"
    full_size.write_text("# Loading a full-size phi-3-mini snapshot\n\nmini's numbers\n")
    benchmarks.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    snapshot = tmp_path / "snap"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "load_full_size.py"),
                           "--model", "vision", "--quick", "--dir", str(snapshot),
                           "--out", str(full_size), "--benchmarks", str(benchmarks)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "failed" not in done.stdout, done.stdout
    text = full_size.read_text()
    assert text.startswith("# Loading a full-size phi-3-mini snapshot\n\nmini's numbers\n")
    assert "## Phi-3-vision-128k-instruct geometry (4.15 B parameters) (quick)" in text
    for fragment in ("17 crops, 95 tokens (79 image)", "logits finite: True",
                     "`tinyphi3 quantize --block 32`", "time to first token, 4-bit"):
        assert fragment in text, text
    bench = benchmarks.read_text()
    assert "## Other\n\nkept" in bench and "| 95 tokens (79 image) |" in bench
    assert not snapshot.exists() and not (tmp_path / "snap-q4").exists()
