"""benchmarks/gpu.py, the GPU benchmark, checked where no GPU is: its help, its one-line exit
without a GPU, a dry run of every part on the CPU (NumPy references in place of the kernels),
the section it writes from a saved run, and its pure helpers (flop counts, bytes per token, the
equality check, the pytest summary, the exit status) against brute force and tinyphi3's own
numbers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyphi3.config import preset
from tinyphi3.models.model import BF16, Q4, Phi3
from tinyphi3.models.weights import init_parameters, parameter_count
from tinyphi3.nn.blocksparse_layout import blocksparse_layout
from tinyphi3.quant.bf16 import to_bf16_weights
from tinyphi3.quant.checkpoint import is_quantized_name
from tinyphi3.quant.q4 import quantize_q4
from tinyphi3_gpu.device import gpu_unavailable

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.py"
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu  # noqa: E402


def run_script(*args, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_help_says_what_it_measures_and_how_to_run_it():
    done = run_script("--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for words in ("bandwidth", "block-sparse", "scaled_dot_product_attention", "SDPA",
                  "decode", "phi-3-mini", "transformers", "4-bit", "$OUT", "timeout",
                  "--skip-tests", "--fp32", "--lengths", "--report", "--dry-run", "gpu.json",
                  "Exit status"):
        assert words in text, words


@pytest.mark.skipif(gpu_unavailable() is None, reason="a GPU is here: the script measures")
def test_without_a_gpu_it_says_why_in_one_line_and_exits_2():
    done = run_script()
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2
    assert len(output.splitlines()) == 1 and output.startswith("no GPU: ")
    assert gpu_unavailable() in output
    assert "Traceback" not in output


def test_a_dry_run_runs_every_part_and_its_report_writes_the_section(tmp_path, capsys):
    """The whole script on the CPU (in this process, to share its imports): every part runs,
    every check passes, and --report writes the same section from the saved JSON. The
    transformers side is left out to keep this test short (importing transformers takes
    seconds); `python benchmarks/gpu.py --dry-run` runs it too."""
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    status = gpu.main(["--dry-run", "--fp32", "--decode-sides", "bf16,q4",
                       "--out", str(tmp_path / "out"), "--docs", str(docs)])
    printed = capsys.readouterr().out
    assert status == 0, printed[-3000:]
    results = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert results["errors"] == {}
    assert results["exit_status"] == 0
    assert {"machine", "bandwidth", "attention", "decode"} <= set(results)
    att = results["attention"]
    assert [r["tokens"] for r in att["rows"]] == [64, 112]
    assert all({"sparse_ms", "dense_ms", "sdpa_ms", "vs_sdpa"} <= set(r) for r in att["rows"])
    assert all(r["density"] < 1 for r in att["rows"])          # the dry layout is sparse
    assert [r["tokens"] for r in att["fp32_rows"]] == [64, 112]
    assert [c["passed"] for c in att["checks"]] == [True] * 5
    sides = {(r["format"], r["depth"]) for r in results["decode"]["rows"]}
    assert sides == {(f, d) for f in ("bf16", "q4") for d in (0, 8)}
    section = (tmp_path / "out" / "gpu.md").read_text()
    assert section.startswith("## GPU\n") and "Dry run" in section
    assert "## GPU" in docs.read_text() and "kept" in docs.read_text()
    assert "| tinyphi3 4-bit (block 32) | 8 |" in section
    assert "block-sparse prefill >= 3x SDPA at 32K: not measured" in printed
    assert "tinyphi3 q4 decode at depth 8 >= 1x transformers: not measured" in section

    again = tmp_path / "again.md"
    assert gpu.main(["--report", str(tmp_path / "out" / "gpu.json"), "--docs", str(again)]) == 0
    assert again.read_text().rstrip("\n").endswith(section.rstrip("\n"))


# ---- the helpers -----------------------------------------------------------------------------

def brute_force_flops(layout, length, block, head_dim):
    """4 * head_dim per (head, query, key) with key <= query in an active block."""
    q, k = np.arange(length)[:, None], np.arange(length)[None, :]
    allowed = (k <= q)[None] & layout[:, q // block, k // block]          # [H, T, T]
    return 4 * head_dim * int(allowed.sum())


@pytest.mark.parametrize("heads,length,block,local,stride",
                         [(4, 23, 4, 2, 3), (8, 64, 8, 2, 4), (3, 17, 5, 1, 2), (2, 16, 16, 1, 1)])
def test_flops_equal_a_brute_force_count(heads, length, block, local, stride):
    nb = -(-length // block)
    layout = blocksparse_layout(heads, nb, local, stride)
    assert gpu.attention_flops(layout, length, block, 16) == brute_force_flops(layout, length,
                                                                                 block, 16)
    random = np.random.default_rng(length).random((heads, nb, nb)) < 0.5
    assert gpu.attention_flops(random, length, block, 16) == brute_force_flops(random, length,
                                                                                 block, 16)
    everything = np.ones((heads, nb, nb), dtype=bool)
    assert gpu.attention_flops(everything, length, block, 16) == gpu.dense_flops(heads, length,
                                                                                  16)
    assert gpu.dense_flops(heads, length, 16) == brute_force_flops(everything, length, block, 16)


def test_published_layout_keeps_fewer_flops_as_it_grows():
    g = gpu.GEOMETRY
    shares = [gpu.attention_flops(gpu.layout_of(g, n), n, g["block"], g["head_dim"])
              / gpu.dense_flops(g["heads"], n, g["head_dim"]) for n in (8192, 32768)]
    assert 0 < shares[1] < shares[0] < 1


@pytest.mark.parametrize("block", [32, 64])
def test_bytes_per_token_equal_the_models_own_weight_bytes_and_cache(block):
    config = preset("tiny")
    params = init_parameters(config, seed=0)
    q4 = {n: quantize_q4(a, block, name=n) if is_quantized_name(n, a.shape) else a
          for n, a in params.items()}
    models = {"q4": Phi3(config, q4, weight_format=Q4),
              "bf16": Phi3(config, to_bf16_weights(params), weight_format=BF16),
              "float32": Phi3(config, params)}
    ids = np.arange(3, 3 + 21)[None]
    for fmt, model in models.items():
        assert gpu.weight_bytes_of(config, fmt, block) == model.weight_bytes(), fmt
        cache = model.new_cache(1)
        model(ids, cache=cache)
        assert gpu.kv_bytes(config, fmt, 21) == cache.nbytes(), fmt
        assert gpu.bytes_per_token(config, fmt, block, 21) == model.weight_bytes() \
            + cache.nbytes()
    assert gpu.weight_bytes_of(config, "torch-bf16") == 2 * parameter_count(config)


@pytest.mark.parametrize("fmt", ["bf16", "q4"])
def test_the_benchmarks_model_builder_makes_the_format_it_measures(fmt):
    """device_model on the host (the dry run's device): the weight format, bytes, and a
    deterministic greedy generate()."""
    config = preset("tiny")
    dev = gpu.Device(dry_run=True)
    model = gpu.device_model(dev, config, fmt, block=32)
    assert model.weight_format is (BF16 if fmt == "bf16" else Q4)
    assert model.weight_bytes() == gpu.weight_bytes_of(config, fmt, 32)
    prefill, decode, tokens = gpu.tinyphi3_decode(model, list(range(3, 19)), 5)
    assert prefill > 0 and decode > 0 and len(tokens) == 5
    assert gpu.tinyphi3_decode(model, list(range(3, 19)), 5)[2] == tokens


def test_the_equality_check_can_fail():
    """Negative controls: the float64 reference holds the kernel's output, and a layout with one
    block switched off (or a NaN) fails the check."""
    dev = gpu.Device(dry_run=True)
    geo = gpu.DRY_GEOMETRY
    length = 200
    q, k, v = gpu.attention_inputs(dev, geo, length, seed=0)
    layout = gpu.layout_of(geo, length)
    prefill, _ = dev.attention_kernels()
    out = prefill(q, k, v, layout, geo["block"], gpu.scale_of(geo), 0)
    qb = layout.shape[1] - 1
    rows = slice(qb * geo["block"], length)
    ref = gpu.masked_reference(np, q, k, v, layout, geo["block"], gpu.scale_of(geo), qb, length)
    assert gpu.compare(out[0, :, rows], ref, **gpu.REF_TOL)["passed"]
    wrong = layout.copy()
    wrong[:, qb, np.flatnonzero(layout[0, qb])[0]] = False
    bad = gpu.masked_reference(np, q, k, v, wrong, geo["block"], gpu.scale_of(geo), qb, length)
    assert not gpu.compare(out[0, :, rows], bad, **gpu.REF_TOL)["passed"]
    nan = out[0, :, rows].copy()
    nan[0, 0, 0] = np.nan
    assert not gpu.compare(nan, ref, **gpu.REF_TOL)["passed"]
    assert gpu.check_blocks(layout.shape[1], geo) == [0, 6, 12]


def test_pytest_output_is_counted_finished_or_cut_short():
    finished = ("tests/a.py::test_x PASSED\nFAILED tests/a.py::test_y - assert 0\n"
                "==== 1 failed, 40 passed, 6 skipped, 1 error in 12.3s ====\n")
    parsed = gpu.parse_pytest(finished)
    assert parsed["counts"] == {"failed": 1, "passed": 40, "skipped": 6, "errors": 1}
    assert parsed["failing"] == ["tests/a.py::test_y"] and parsed["finished"]
    cut = ("tests/a.py::test_x[1] PASSED  [ 10%]\ntests/a.py::test_x[2] FAILED  [ 20%]\n"
           "tests/b.py::test_z SKIPPED (needs a CUDA GPU)  [ 30%]\ntests/b.py::test_w PASSED\n")
    parsed = gpu.parse_pytest(cut)
    assert parsed["counts"] == {"passed": 2, "failed": 1, "skipped": 1}
    assert not parsed["finished"]


def test_exit_status():
    passing = {"passed": True, "gating": True}
    assert gpu.exit_status({"attention": {"checks": [passing]}, "errors": {}}) == 0
    assert gpu.exit_status({"attention": {"checks": [passing]}, "errors": {"decode": "x"}}) == 3
    assert gpu.exit_status({"attention": {"checks": [dict(passing, passed=False)]},
                            "errors": {}}) == 1
    assert gpu.exit_status({"attention": {"checks": [{"passed": False, "gating": False}]},
                            "errors": {}}) == 0
    assert gpu.exit_status({"tests": {"counts": {"failed": 2}}, "errors": {}}) == 1


def test_the_default_run_is_estimated_under_six_minutes():
    args = gpu.parse_args([])
    assert args.lengths == "8192,16384,32768,65536" and args.runs == 3
    assert sum(gpu.estimate_seconds(args).values()) < 360
