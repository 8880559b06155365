"""benchmarks/inference.py's llama.cpp side: how llama-bench's JSON is read, and the one line
that says why the side is skipped."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("inference_bench",
                                                  ROOT / "benchmarks" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def llama_bench_tests(depth):
    """What `llama-bench -p 512 -n 128 -d 0,<depth> -fa 0,1 -o json` prints (the fields read),
    with tokens/s that tell the tests apart."""
    tests = []
    for fa in (0, 1):
        for d in (0, depth):
            tests.append({"n_prompt": 512, "n_gen": 0, "n_depth": d, "flash_attn": fa,
                          "avg_ts": 60.0 + fa + d / 1000, "build_commit": "abc123"})
            tests.append({"n_prompt": 0, "n_gen": 128, "n_depth": d, "flash_attn": fa,
                          "avg_ts": 10.0 + fa + d / 1000, "build_commit": "abc123"})
    return tests


def test_llama_bench_json_becomes_one_row_per_flash_attention_setting(bench):
    results = bench.read_llama_bench(llama_bench_tests(512), 512, gguf_bytes=2_000, peak=3_000)
    assert set(results) == {"llama.cpp-fa-off", "llama.cpp-fa-on"}
    off, on = results["llama.cpp-fa-off"], results["llama.cpp-fa-on"]
    assert (off["prefill"], off["decode_empty"], off["decode"]) == (60.0, 10.0, 10.512)
    assert (on["prefill"], on["decode_empty"], on["decode"]) == (61.0, 11.0, 11.512)
    assert off["weight_bytes"] == 2_000 and off["peak_rss"] == 3_000 and off["build"] == "abc123"


def test_a_missing_llama_bench_test_is_an_error_not_a_silent_gap(bench):
    tests = [t for t in llama_bench_tests(384) if not (t["n_gen"] and t["n_depth"] == 384)]
    with pytest.raises(ValueError, match="no decode for llama.cpp-fa-"):
        bench.read_llama_bench(tests, 384, gguf_bytes=1, peak=1)


def test_the_side_says_why_it_is_skipped(bench, tmp_path):
    assert bench.llama_cpp_missing(None) == "no --llama-cpp given"
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    assert bench.llama_cpp_missing(tmp_path) == f"{tmp_path / 'build/bin/llama-bench'} does not exist"
    for tool in ("llama-bench", "llama-quantize"):
        (tmp_path / "build" / "bin").mkdir(parents=True, exist_ok=True)
        (tmp_path / "build" / "bin" / tool).write_text("")
    assert bench.llama_cpp_missing(tmp_path) is None
