"""tinyphi3_gpu on an NVIDIA GPU: every number the GPU backend is judged by, in one run.

What it measures, in this order (each part prints its numbers as soon as it has them, and one
part that fails is reported with its error while the others still run):

  machine    the GPU (name, SMs, memory, compute capability), CUDA runtime and driver, CuPy,
             PyTorch and transformers versions, the host's CPU.
  tests      pytest tests/test_gpu_attention.py tests/test_gpu_linear.py tests/test_gpu_model.py
             in a subprocess (the kernels against the reference, on this GPU): pass/fail counts.
  bandwidth  a device-to-device copy of --bandwidth-bytes (bytes read + written per second) and
             a read-only reduction over as many bytes (cupy sum): the read bandwidth is the bound
             the decode numbers are held against.
  attention  block-sparse prefill in phi-3-small's shape (batch 1, 32 query heads, 8 KV heads,
             head dim 128; block 64, 16 local blocks, vertical stride 8: the published per-head
             layout blocksparse_layout(32, NB, 16, 8)) at each of --lengths, bf16 inputs:
             tinyphi3_gpu's block-sparse kernel, the same kernel dense (every block active), and
             torch.nn.functional.scaled_dot_product_attention(is_causal=True, enable_gqa=True)
             on bf16 CUDA tensors (FlashAttention backend; KV heads repeated where enable_gqa is
             refused). Milliseconds, TFLOP/s on the work each does (4 * head_dim flops per
             attended query-key pair: the active causal pairs for block-sparse, all causal pairs
             for the dense kernel and SDPA), speed-up against SDPA, the layout's density and the
             ideal 1/density; the goal ">= 3x SDPA at 32K" marked PASS or MISS. Before the
             timings, at the smallest length: the dense kernel equals SDPA on the same inputs
             (bf16 tolerance), and the block-sparse and dense kernels equal a float64 masked
             softmax reference (CuPy/cuBLAS, not the kernel) on a few query blocks.
  decode     the phi-3-mini geometry (3.82 B parameters) with random weights made on the GPU
             (bf16: drawn there; 4-bit: quantize_q4 on the host, one matrix per distinct shape
             unless --q4-quantize-all, each tensor uploaded as its own copy): a --prompt-tokens
             prompt after --depths tokens, then --new-tokens greedy tokens with
             tinyphi3.inference.generate, prefill and decode timed apart; against
             transformers.Phi3ForCausalLM in bf16 (random init, PyTorch eager, --hf-attention)
             with model.generate(do_sample=False), decode timed from the first to the last new
             token. Tokens/s each side, the ratio (goal >= 1.0x), and the achieved bandwidth
             (bytes read per token: weights + KV cache at the mean context, times tokens/s)
             against the measured read bandwidth (goal >= 60% for 4-bit).

Times: the device is synchronised around each call (cudaDeviceSynchronize, which waits for
CuPy's and PyTorch's work alike); each case is warmed up once, then the median of --runs runs
(alternating between the kernels compared). The inputs of the attention part are drawn so that
the scaled logits have standard deviation 2 (a peaked softmax, so a wrong block shows).

Results: DIR/gpu.json (rewritten after every part, so a run cut short leaves its numbers),
DIR/gpu.md (the "## GPU" section of docs/benchmarks.md), DIR/gpu.log and DIR/gpu_tests.log,
DIR being --out, else $OUT, else /tmp/tinyphi3-gpu; the section is also written into --docs.
`--report DIR/gpu.json` writes the section from a saved run into --docs, on any machine.

Exit status: 0 all ran and every check and test passed; 1 an equality check or a GPU test
failed; 2 no GPU here (one line: "no GPU: <reason>"); 3 no check failed but a part could not
run (its error is in the report).

On a lent GPU machine, one call of the run tool, from the repository root, with
carry=["tinyphi3.egg-info"] (ignored by git; with the repository on PYTHONPATH it holds the
entry point that registers the backend "cupy", which the GPU tests need; the script itself
registers it by hand when missing) and timeout_s=600:

    python -c "import cupy" 2>/dev/null || pip install -q -e ".[gpu]";
    PYTHONPATH=$PWD timeout -k 20 -s INT 540 python benchmarks/gpu.py     # results in $OUT

(the machine has no internet: the pip line only helps where CuPy can be installed from what
is there). The defaults take about 4 minutes on an H200 (the script prints its estimate
first); --time-budget stops starting new runs past that many seconds, so the command ends in
time with fewer runs. Then, here: python benchmarks/gpu.py --report <fetched>/gpu.json.

--dry-run runs every part on the CPU with tiny shapes and the NumPy references in place of the
kernels: it checks this script, not the GPU (its numbers mean nothing).
"""

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO), str(REPO / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
from _docs import cpu_name  # noqa: E402

HEADING = "## GPU"
GEOMETRY = {"heads": 32, "kv_heads": 8, "head_dim": 128,     # phi-3-small's attention
            "block": 64, "local": 16, "stride": 8}              # and its layout
DRY_GEOMETRY = {"heads": 8, "kv_heads": 2, "head_dim": 32, "block": 16, "local": 2, "stride": 4}
LOGIT_STD = 2.0                                 # q drawn so that q.k * scale has this std
GOAL_LENGTH, GOAL_SPEEDUP = 32768, 3.0          # block-sparse >= 3x SDPA at 32K
GOAL_RATIO, GOAL_BANDWIDTH = 1.0, 0.60          # decode vs transformers; 4-bit of read bw
SDPA_TOL = {"atol": 2e-2, "rtol": 1e-2}         # bf16 output of FlashAttention vs float32
REF_TOL = {"atol": 1e-4, "rtol": 1e-3}          # float32 sums vs the float64 reference
TEST_FILES = ("tests/test_gpu_attention.py", "tests/test_gpu_linear.py",
              "tests/test_gpu_model.py")
DEFAULTS = {   # (GPU run, --dry-run): what an option left unset means
    "lengths": ("8192,16384,32768,65536", "64,112"),
    "bandwidth_bytes": (2_000_000_000, 64_000_000),
    "prompt_tokens": (128, 16),
    "new_tokens": (64, 4),
    "depths": ("0,512", "0,8"),
    "runs": (3, 1),
    "decode_runs": (3, 1),
    "model": ("phi-3-mini-4k", "tiny"),
}
RATES = {   # what the estimate assumes on an H200 (rough)
    "ours_tflops": 15.0, "sdpa_tflops": 300.0, "tinyphi3_tok_s": 40.0, "hf_tok_s": 30.0,
    "prefill_tok_s": 2000.0, "tests_s": 90.0,
}


# ---- pure helpers (tested without a GPU) -----------------------------------------------------

def causal_pair_counts(num_blocks, length, block):
    """int64 [NB, NB]: the (query, key) pairs with key <= query between query block qb and key
    block kb, for `length` tokens cut into blocks of `block` (the last one may be short)."""
    size = np.minimum(block, length - block * np.arange(num_blocks)).clip(0)    # [NB]
    counts = size[:, None] * size[None, :]                                     # kb < qb: all
    counts = np.tril(counts, -1)
    diagonal = size * (size + 1) // 2                                          # kb == qb
    counts[np.arange(num_blocks), np.arange(num_blocks)] = diagonal
    return counts.astype(np.int64)


def attention_flops(layout, length, block, head_dim):
    """Flops of block-sparse causal attention over `length` tokens, prefill from position 0:
    4 * head_dim per attended (query, key) pair (2 for q.k, 2 for p.v), summed over heads."""
    layout = np.asarray(layout, dtype=bool)
    counts = causal_pair_counts(layout.shape[1], length, block)
    heads_on = layout.sum(axis=0, dtype=np.int64)                              # [NB, NB]
    return 4 * head_dim * int((heads_on * counts).sum())


def dense_flops(heads, length, head_dim):
    """Flops of dense causal attention: 4 * head_dim per pair, length (length + 1) / 2 pairs."""
    return 4 * head_dim * heads * length * (length + 1) // 2


def weight_bytes_of(config, fmt, block=32):
    """Bytes of the model's weights in memory, from the shapes alone: "q4" (tinyphi3 4-bit,
    symmetric: packed levels and float16 scales in tiles of 64 rows, matrices; float32 vectors),
    "bf16" (tinyphi3: matrices as bf16 bits, vectors float32), "float32", or "torch-bf16"
    (every tensor in bf16, as transformers holds it)."""
    from tinyphi3.models.weights import parameter_shapes
    total = 0
    for shape in parameter_shapes(config).values():
        size = math.prod(shape)
        if fmt == "torch-bf16":
            total += 2 * size
        elif len(shape) != 2 or fmt == "float32":
            total += 4 * size
        elif fmt == "bf16":
            total += 2 * size
        elif fmt == "q4":
            tiles, blocks = -(-shape[0] // 64), -(-shape[1] // block)
            total += tiles * blocks * 64 * (block // 2 + 2)       # levels + a float16 scale
        else:
            raise ValueError(f"unknown weight format {fmt!r}")
    return total


def kv_vector_bytes(config, fmt):
    """Bytes of one cached key (or value) vector: float32 for tinyphi3's bf16 and float32
    models, 8 bits and a float32 scale for its 4-bit ones (quant/kv8.py), bf16 for torch."""
    hd = config.head_dim
    return {"q4": hd + 4, "bf16": 4 * hd, "float32": 4 * hd, "torch-bf16": 2 * hd}[fmt]


def kv_bytes(config, fmt, context):
    """Bytes of keys and values held (and read by one decoding step) for `context` tokens."""
    return (2 * config.num_hidden_layers * config.num_key_value_heads * context
            * kv_vector_bytes(config, fmt))


def bytes_per_token(config, fmt, block, context, weights=None):
    """Bytes one decoding step reads: the weights (all of them, the embedding table included,
    as benchmarks/inference.py counts) plus the KV cache at `context` tokens."""
    weights = weight_bytes_of(config, fmt, block) if weights is None else weights
    return weights + kv_bytes(config, fmt, context)


def parse_pytest(text):
    """Counts of a `pytest -v` run: from its summary line when it finished, else from the
    per-test lines (a run cut short); and the failing tests' names."""
    counts = {}
    summary = [line for line in text.splitlines()
               if re.match(r"^=+ .*\b(passed|failed|skipped|error|errors|no tests ran)\b.* in ",
                           line)]
    if summary:
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed"
                                       r"|deselected|warnings?)", summary[-1]):
            word = {"error": "errors", "warning": "warnings"}.get(word, word)
            counts[word] = int(number)
    else:
        for word in re.findall(r"::\S+.*? (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b", text):
            key = {"ERROR": "errors", "XFAIL": "xfailed", "XPASS": "xpassed"}.get(
                word, word.lower())
            counts[key] = counts.get(key, 0) + 1
    failing = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.MULTILINE)))
    return {"counts": counts, "failing": failing, "finished": bool(summary)}


def compare(out, ref, atol, rtol):
    """Whether |out - ref| <= atol + rtol |ref| everywhere (and both finite): the largest
    difference, the largest |ref|, and the verdict. Arrays of one module (NumPy or CuPy)."""
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    diff = abs(out - ref)
    finite = bool(diff.max() < np.inf)                   # False for a NaN or an infinity
    excess = float((diff - (atol + rtol * abs(ref))).max()) if finite else float("inf")
    return {"max_abs_diff": float(diff.max()) if finite else float("nan"),
            "max_abs_ref": float(abs(ref).max()), "atol": atol, "rtol": rtol,
            "passed": finite and excess <= 0}


def check_blocks(num_blocks, geo):
    """The query blocks the references check: the first, the first with remote (vertical)
    blocks, one in the middle, the last."""
    return sorted({0, min(geo["local"] + geo["stride"], num_blocks - 1), num_blocks // 2,
                   num_blocks - 1})


def scale_of(geo):
    return 1.0 / geo["head_dim"]                  # muP: 1/d, as phi-3-small


def layout_of(geo, length):
    from tinyphi3.nn.blocksparse_layout import blocksparse_layout
    return blocksparse_layout(geo["heads"], -(-length // geo["block"]), geo["local"],
                              geo["stride"])


def exit_status(results):
    """0 all ran and passed; 1 a check or a GPU test failed; 3 a part could not run."""
    checks = results.get("attention", {}).get("checks", [])
    tests = results.get("tests", {})
    failed_tests = tests.get("counts", {}).get("failed", 0) + tests.get("counts", {}).get(
        "errors", 0)
    if any(c.get("gating") and not c.get("passed") for c in checks) or failed_tests:
        return 1
    return 3 if results.get("errors") else 0


def estimate_seconds(args):
    """A rough estimate of the run's seconds on an H200 with these settings, by part (the rates
    assumed are RATES)."""
    from tinyphi3.nn.blocksparse_layout import density
    lengths = [int(n) for n in args.lengths.split(",")]
    attention = 0.0
    g = GEOMETRY
    for length in lengths:
        dense = dense_flops(g["heads"], length, g["head_dim"])
        share = density(layout_of(g, length))
        call = (dense * share + dense) / (RATES["ours_tflops"] * 1e12) \
            * (2 if args.fp32 else 1) + dense / (RATES["sdpa_tflops"] * 1e12)
        attention += 2 + call * (args.runs + 1)
    depths = [int(n) for n in args.depths.split(",")]
    runs = (args.decode_runs + 1) * len(depths)
    per_run = args.new_tokens / RATES["tinyphi3_tok_s"] + (
        max(depths) + args.prompt_tokens) / RATES["prefill_tok_s"]
    decode = 2 * runs * per_run + runs * args.new_tokens / RATES["hf_tok_s"] \
        + (120 if args.q4_quantize_all else 20) + 30
    parts = {"tests": 0 if args.skip_tests else RATES["tests_s"], "bandwidth": 3,
             "attention": round(attention), "decode": round(decode)}
    return {name: seconds for name, seconds in parts.items() if name in args.parts}


# ---- the report ------------------------------------------------------------------------------

def _fmt(x, spec=",.1f", none="-"):
    return none if x is None else format(x, spec)


def _times(x):
    return "-" if x is None else f"{x:.2f}x"


def decode_table(decode, bandwidth):
    """Rows of the decode table, with ratios against transformers at the same depth."""
    rows = decode.get("rows", [])
    hf = {r["depth"]: r["decode_tok_s"] for r in rows if r["side"] == "transformers"}
    out = []
    for r in rows:
        achieved = r["bytes_per_token"] * r["decode_tok_s"] / 1e9
        share = achieved / bandwidth if bandwidth else None
        ratio = r["decode_tok_s"] / hf[r["depth"]] if hf.get(r["depth"]) else None
        out.append(dict(r, achieved_GBps=achieved, of_bandwidth=share, vs_transformers=ratio))
    return out


def goal_lines(results):
    """The goals, each with PASS, MISS or 'not measured'."""
    lines = []
    rows = results.get("attention", {}).get("rows", [])
    at = [r for r in rows if r["tokens"] == GOAL_LENGTH and r.get("vs_sdpa")]
    if at:
        x = at[0]["vs_sdpa"]
        lines.append(f"block-sparse prefill >= {GOAL_SPEEDUP:g}x SDPA at {GOAL_LENGTH // 1024}K: "
                     f"{'PASS' if x >= GOAL_SPEEDUP else 'MISS'} ({x:.2f}x)")
    else:
        lines.append(f"block-sparse prefill >= {GOAL_SPEEDUP:g}x SDPA at "
                     f"{GOAL_LENGTH // 1024}K: not measured")
    bandwidth = results.get("bandwidth", {}).get("read_GBps")
    table = decode_table(results.get("decode", {}), bandwidth)
    for r in table:
        if r["side"] == "transformers":
            continue
        name = f"tinyphi3 {r['format']} decode at depth {r['depth']}"
        if r["vs_transformers"] is None:
            lines.append(f"{name} >= {GOAL_RATIO:g}x transformers: not measured")
        else:
            x = r["vs_transformers"]
            lines.append(f"{name} >= {GOAL_RATIO:g}x transformers: "
                         f"{'PASS' if x >= GOAL_RATIO else 'MISS'} ({x:.2f}x)")
        if r["format"] == "q4":
            if r["of_bandwidth"] is None:
                lines.append(f"{name}: achieved bandwidth >= {GOAL_BANDWIDTH:.0%} of the "
                             f"measured: not measured")
            else:
                x = r["of_bandwidth"]
                lines.append(f"{name}: achieved bandwidth >= {GOAL_BANDWIDTH:.0%} of the "
                             f"measured: {'PASS' if x >= GOAL_BANDWIDTH else 'MISS'} ({x:.0%})")
    if not table:
        lines.append("decode goals: not measured")
    return lines


def render_section(results):
    """The "## GPU" section of docs/benchmarks.md from a run's results (gpu.json)."""
    m = results.get("machine", {})
    gpu = m.get("gpu", {})
    parts = [HEADING, ""]
    dry = " **Dry run on the CPU: the numbers below mean nothing.**" if results.get(
        "dry_run") else ""
    details = (f" ({gpu['sms']} SMs, {gpu['memory_GiB']:.0f} GiB, compute capability "
               f"{gpu['compute_capability']})" if "sms" in gpu else "")
    parts.append(f"`{results.get('command', 'python benchmarks/gpu.py')}` on "
                 f"{gpu.get('name', 'an unknown GPU')}{details}, CUDA runtime "
                 f"{m.get('cuda_runtime', '?')}, driver {m.get('cuda_driver', '?')}, CuPy "
                 f"{m.get('cupy', '?')}, PyTorch {m.get('torch', '?')}, transformers "
                 f"{m.get('transformers', '?')}; host {m.get('cpu', '?')}, Python "
                 f"{m.get('python', '?')}, NumPy {m.get('numpy', '?')}. Each case warmed up "
                 f"once, then the median of the runs; the device synchronised around each "
                 f"call. {results.get('note', '')}{dry}".rstrip())
    parts.append("")
    tests = results.get("tests")
    if tests:
        counts = ", ".join(f"{n} {w}" for w, n in tests.get("counts", {}).items()) or "no counts"
        missing = (f"; not found: {', '.join(tests['missing'])}" if tests.get("missing")
                   else "")
        extra = "" if tests.get("finished", True) else f" (cut short: {tests.get('note', '')})"
        failing = (f" Failing: {', '.join(tests['failing'])}." if tests.get("failing") else "")
        parts += [f"GPU tests (`pytest {' '.join(tests.get('files', []))}`): {counts}{extra}"
                  f"{missing}.{failing}", ""]
    bw = results.get("bandwidth")
    if bw:
        peak = (f"; the memory's nominal peak is {bw['nominal_GBps']:,.0f} GB/s"
                if bw.get("nominal_GBps") else "")
        parts += [f"Memory bandwidth over {bw['bytes'] / 1e9:.1f} GB: device-to-device copy "
                  f"{bw['copy_GBps']:,.0f} GB/s (bytes read + written), read-only reduction "
                  f"(cupy sum) {bw['read_GBps']:,.0f} GB/s, the bound used below{peak}.", ""]
    att = results.get("attention")
    if att:
        g = att.get("geometry", GEOMETRY)
        parts += [
            "### Block-sparse prefill", "",
            f"phi-3-small's attention: batch 1, {g['heads']} query heads, {g['kv_heads']} KV "
            f"heads, head dim {g['head_dim']}, block {g['block']}, {g['local']} local blocks, "
            f"vertical stride {g['stride']} (the per-head layout `blocksparse_layout("
            f"{g['heads']}, NB, {g['local']}, {g['stride']})`), scale 1/{g['head_dim']}, "
            f"{att.get('dtype', 'bf16')} "
            f"inputs. Block-sparse and dense are tinyphi3_gpu's kernel "
            f"(`tinyphi3_gpu/kernels/blocksparse_attention.cu`), dense with every causal block "
            f"active; SDPA is `torch.nn.functional.scaled_dot_product_attention(is_causal=True)` "
            f"on bf16 tensors ({att.get('sdpa_path', 'not run')}). TFLOP/s count 4 x head dim "
            f"flops per attended query-key pair: the active causal pairs for block-sparse, all "
            f"causal pairs for dense and SDPA. Blocks kept: the share of the causal blocks the "
            f"layout keeps; ideal: its inverse.", "",
            "| tokens | blocks kept | ideal | block-sparse ms | TFLOP/s | dense ms | TFLOP/s | "
            "SDPA ms | TFLOP/s | vs SDPA | vs dense |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in att.get("rows", []):
            parts.append(attention_row(r))
        for r in att.get("fp32_rows", []):
            parts.append(attention_row(r, "fp32 inputs: "))
        if att.get("checks"):
            parts += ["", "Checks at the smallest length (before the timings):", ""]
            parts += [f"- {check_line(c)}" for c in att["checks"]]
        parts.append("")
    dec = results.get("decode")
    if dec:
        bandwidth = (bw or {}).get("read_GBps")
        parts += [
            "### Decode", "",
            f"The {dec.get('model', '?')} geometry ({dec.get('parameters', 0) / 1e9:.2f} B "
            f"parameters, random weights made on the GPU): a {dec.get('prompt_tokens')}-token "
            f"prompt after `depth` tokens (one prompt of depth + {dec.get('prompt_tokens')}), "
            f"then {dec.get('new_tokens')} new tokens greedy; decode tokens/s count the tokens "
            f"after the first (which comes out of the prefill), median of "
            f"{dec.get('runs')} runs. tinyphi3: `tinyphi3.inference.generate` on the cupy "
            f"backend, bf16 matrices (float32 KV cache) or 4-bit block {dec.get('block')} "
            f"(8-bit KV cache). transformers: `Phi3ForCausalLM` in bf16, PyTorch eager, "
            f"attention `{dec.get('hf_attention')}`, `generate(do_sample=False)`. Bytes per "
            f"token: the weights plus the KV cache at the mean context of the decode; achieved "
            f"= bytes per token x tokens/s, against the measured read bandwidth.", "",
            "| side | depth | prompt | prefill tok/s | decode tok/s | bytes / token | "
            "achieved GB/s | of read bw | vs transformers |",
            "|---|---|---|---|---|---|---|---|---|"]
        names = {"bf16": "tinyphi3 bf16", "q4": f"tinyphi3 4-bit (block {dec.get('block')})",
                 "torch-bf16": "transformers bf16"}
        for r in decode_table(dec, bandwidth):
            parts.append(
                f"| {names.get(r['format'], r['format'])} | {r['depth']:,} | "
                f"{r['prompt']:,} | {_fmt(r['prefill_tok_s'])} | {_fmt(r['decode_tok_s'], '.2f')}"
                f" | {r['bytes_per_token'] / 1e9:.2f} GB | {_fmt(r['achieved_GBps'], ',.0f')} | "
                f"{_fmt(r['of_bandwidth'], '.0%')} | {_times(r['vs_transformers'])} |")
        parts.append("")
    parts += ["Goals:", ""] + [f"- {line}" for line in goal_lines(results)] + [""]
    errors = results.get("errors", {})
    if errors:
        parts += ["Not measured (errors):", ""]
        parts += [f"- {name}: {e.splitlines()[0] if e else ''}" for name, e in errors.items()]
        parts.append("")
    return "\n".join(parts)


def attention_row(r, prefix=""):
    def ms(key):
        return _fmt(r.get(key), ",.2f")

    def rate(key):
        return _fmt(r.get(key), ".1f")
    return (f"| {prefix}{r['tokens']:,} | {r['density']:.1%} | {1 / r['density']:.2f}x | "
            f"{ms('sparse_ms')} | {rate('sparse_tflops')} | {ms('dense_ms')} | "
            f"{rate('dense_tflops')} | {ms('sdpa_ms')} | {rate('sdpa_tflops')} | "
            f"{_times(r.get('vs_sdpa'))} | {_times(r.get('vs_dense'))} |")


def check_line(c):
    verdict = "PASS" if c["passed"] else ("FAIL" if c.get("gating") else "differs")
    note = "" if c.get("gating") else " (informative)"
    return (f"{c['name']}: max |diff| {c['max_abs_diff']:.2e} (max |ref| "
            f"{c['max_abs_ref']:.2f}; tolerance {c['atol']:g} + {c['rtol']:g} |ref|): "
            f"{verdict}{note}")


# ---- the device ------------------------------------------------------------------------------

class Device:
    """Where the measurement runs: CuPy and a CUDA GPU, or (--dry-run) NumPy on the CPU with the
    NumPy references standing in for the kernels."""

    def __init__(self, dry_run):
        self.dry_run = dry_run
        if dry_run:
            self.xp, self.backend, self.torch_device = np, "numpy", "cpu"
        else:
            import cupy
            from tinyphi3 import backends
            self.xp, self.backend, self.torch_device = cupy, "cupy", "cuda"
            self.by_hand = "cupy" not in backends.backend_names()
            if self.by_hand:                       # tinyphi3 not installed: no entry point
                import tinyphi3_gpu
                tinyphi3_gpu.register()

    def sync(self):
        if not self.dry_run:
            self.xp.cuda.Device().synchronize()

    def free(self):
        """Give the device memory of dropped arrays back (CuPy's and PyTorch's pools)."""
        if not self.dry_run:
            gc.collect()
            self.xp.get_default_memory_pool().free_all_blocks()
            if "torch" in sys.modules:
                import torch
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def normal(self, rs, shape, std):
        """float32 normal(0, std) on the device, from a RandomState of the device's module."""
        try:
            w = rs.standard_normal(shape, dtype=np.float32)
        except TypeError:                                    # NumPy's RandomState: no dtype
            w = rs.standard_normal(shape).astype(np.float32)
        return self.xp.asarray(w) * np.float32(std)

    def random_state(self, seed):
        return self.xp.random.RandomState(seed)

    def copy(self, dst, src):
        if self.dry_run:
            np.copyto(dst, src)
        else:
            dst.data.copy_from_device_async(src.data, src.nbytes)

    def attention_kernels(self):
        """(blocksparse_prefill(q, k, v, layout, block, scale, past), dense(q, k, v, scale))."""
        if not self.dry_run:
            from tinyphi3_gpu import attention
            return attention.blocksparse_prefill, attention.dense_causal_attention
        from tinyphi3 import backends
        from tinyphi3.nn.blocksparse import blocksparse_attention

        def prefill(q, k, v, layout, block, scale, past):
            with backends.use_backend("numpy"):
                return blocksparse_attention(widen(q), widen(k), widen(v), layout, block,
                                             scale, past)

        def dense(q, k, v, scale):
            layout = np.ones((q.shape[1],) + (-(-k.shape[2] // 64),) * 2, dtype=bool)
            return prefill(q, k, v, layout, 64, scale, k.shape[2] - q.shape[2])
        return prefill, dense

    def to_torch_bf16(self, bits):
        """bf16 bits (uint16, on the device) as a torch bfloat16 tensor, no copy."""
        import torch
        if self.dry_run:
            return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
        return torch.from_dlpack(bits.view(self.xp.int16)).view(torch.bfloat16)

    def from_torch(self, tensor):
        tensor = tensor.float().contiguous()
        if self.dry_run:
            return tensor.numpy()
        return self.xp.from_dlpack(tensor)

    def seconds(self, fn):
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start


def widen(x):
    """float32 values of bf16 bits (uint16), exactly; float arrays as float32."""
    if x.dtype == np.uint16:
        return (x.astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float32, copy=False)


class Budget:
    """No new timed run starts after `seconds` from the start (one per case always runs)."""

    def __init__(self, seconds):
        self.start, self.seconds = time.perf_counter(), seconds

    def elapsed(self):
        return time.perf_counter() - self.start

    def exceeded(self):
        return self.elapsed() > self.seconds


def median_ms(dev, fns, runs, budget, case_seconds=float("inf")):
    """Median milliseconds of each function over up to `runs` runs, alternating between them;
    a function stops being run once its runs took case_seconds (it keeps at least one), and
    no run after the first starts past the budget. Returns ({name: ms}, {name: runs})."""
    times = {name: [] for name in fns}
    for run in range(runs):
        if run and budget.exceeded():
            break
        for name, fn in fns.items():
            if not run or sum(times[name]) < case_seconds:
                times[name].append(dev.seconds(fn))
    return ({name: 1e3 * statistics.median(t) for name, t in times.items()},
            {name: len(t) for name, t in times.items()})


# ---- a run: results, printed and saved as they come ------------------------------------------

class Run:
    def __init__(self, args, out):
        self.args, self.out = args, out
        self.results = {"command": shlex.join(["python", "benchmarks/gpu.py", *args.argv]),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                        "dry_run": args.dry_run, "note": args.note, "errors": {}}
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "gpu.log", "a", encoding="utf-8")

    def log(self, message=""):
        print(message, flush=True)
        self.log_file.write(message + "\n")
        self.log_file.flush()

    def save(self):
        (self.out / "gpu.json").write_text(json.dumps(self.results, indent=1, default=str))
        (self.out / "gpu.md").write_text(render_section(self.results))

    def part(self, name, fn, *args):
        """Run one part; an exception is recorded (with its traceback in the log) and the run
        goes on."""
        self.log(f"== {name}")
        start = time.perf_counter()
        try:
            fn(self, *args)
        except Exception as error:                       # noqa: BLE001 - reported, not hidden
            text = f"{type(error).__name__}: {error}"
            self.results["errors"][name] = text
            self.log(f"{name}: ERROR {text}")
            self.log_file.write(traceback.format_exc())
        self.log(f"({name}: {time.perf_counter() - start:.1f} s)")
        self.save()


# ---- the parts -------------------------------------------------------------------------------

def part_machine(run, dev):
    m = {"python": platform.python_version(), "numpy": np.__version__,
         "cpu": cpu_name(), "cores": os.cpu_count()}
    if dev.dry_run:
        m["gpu"] = {"name": "no GPU (dry run on the CPU)"}
    else:
        cupy = dev.xp
        device = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(device.id)
        name = props.get("name", b"?")
        gpu = {"name": name.decode() if isinstance(name, bytes) else str(name),
               "sms": props.get("multiProcessorCount"),
               "memory_GiB": props.get("totalGlobalMem", 0) / 2**30,
               "compute_capability": f"{props.get('major')}.{props.get('minor')}",
               "count": cupy.cuda.runtime.getDeviceCount()}
        clock, width = props.get("memoryClockRate"), props.get("memoryBusWidth")
        if clock and width:                                  # kHz, bits; DDR: 2 per clock
            gpu["nominal_GBps"] = 2 * clock * 1e3 * width / 8 / 1e9
        m["gpu"] = gpu
        m["cuda_runtime"] = version(cupy.cuda.runtime.runtimeGetVersion())
        m["cuda_driver"] = version(cupy.cuda.runtime.driverGetVersion())
        m["cupy"] = cupy.__version__
        if dev.by_hand:
            m["backend"] = ("registered by hand: no tinyphi3.backends entry point (the GPU "
                            "tests need it: pip install -e ., or carry tinyphi3.egg-info)")
            run.log(f"backend cupy {m['backend']}")
    m["torch"], m["transformers"] = package_version("torch"), package_version("transformers")
    if not dev.dry_run and m["torch"] != "not installed":
        try:
            import torch
            m["torch"] += (f" (CUDA {torch.version.cuda}, "
                           f"{'sees' if torch.cuda.is_available() else 'does not see'} a GPU)")
        except Exception as error:                       # noqa: BLE001 - reported
            m["torch"] += f" (does not import: {type(error).__name__}: {error})"
    run.results["machine"] = m
    gpu = m["gpu"]
    run.log(f"GPU: {gpu['name']}" + (f", {gpu['sms']} SMs, {gpu['memory_GiB']:.1f} GiB, "
                                      f"compute capability {gpu['compute_capability']}"
                                      if "sms" in gpu else ""))
    run.log(f"CUDA runtime {m.get('cuda_runtime', '-')}, driver {m.get('cuda_driver', '-')}, "
            f"CuPy {m.get('cupy', '-')}, PyTorch {m['torch']}, transformers "
            f"{m['transformers']}")
    run.log(f"host: {m['cpu']}, {m['cores']} cores, Python {m['python']}, NumPy {m['numpy']}")


def package_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def version(number):
    return f"{number // 1000}.{number % 1000 // 10}"


def part_tests(run, dev):
    files = [f for f in TEST_FILES if (REPO / f).exists()]
    missing = [f for f in TEST_FILES if f not in files]
    tests = {"files": files, "missing": missing}
    run.results["tests"] = tests
    if missing:
        run.log(f"not found: {', '.join(missing)}")
    if not files:
        raise FileNotFoundError("none of the GPU test files exists")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    command = [sys.executable, "-m", "pytest", *files, "-v", "-rfE", "--tb=short",
               "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=run.args.tests_timeout)
        text, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        text = "".join(x.decode() if isinstance(x, bytes) else (x or "")
                       for x in (expired.stdout, expired.stderr))
        code = None
        tests["note"] = f"timed out after {run.args.tests_timeout} s"
    (run.out / "gpu_tests.log").write_text(text)
    tests.update(parse_pytest(text), returncode=code)
    if not tests["counts"]:
        last = (text.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"pytest counted no tests (exit {code}): {last}")
    counts = ", ".join(f"{n} {w}" for w, n in tests["counts"].items()) or "no counts"
    run.log(f"tests: {counts}" + ("" if tests["finished"] else f" ({tests.get('note')})"))
    for name in tests["failing"]:
        run.log(f"  failed: {name}")
    if code is None:
        run.results["errors"]["tests"] = tests["note"]


def part_bandwidth(run, dev):
    xp, args = dev.xp, run.args
    n = args.bandwidth_bytes // 4
    a = xp.empty(n, np.float32)
    a.fill(1.0)
    b = xp.empty_like(a)
    fns = {"copy": lambda: dev.copy(b, a), "read": lambda: a.sum()}
    for fn in fns.values():
        fn()                                                         # warm-up
    times, runs = median_ms(dev, fns, args.bandwidth_runs, Budget(float("inf")))
    bw = {"bytes": a.nbytes, "runs": runs["read"],
          "copy_GBps": 2 * a.nbytes / (times["copy"] / 1e3) / 1e9,
          "read_GBps": a.nbytes / (times["read"] / 1e3) / 1e9}
    nominal = run.results.get("machine", {}).get("gpu", {}).get("nominal_GBps")
    if nominal:
        bw["nominal_GBps"] = nominal
    run.results["bandwidth"] = bw
    run.log(f"copy {bw['copy_GBps']:,.0f} GB/s (read + written), read (sum) "
            f"{bw['read_GBps']:,.0f} GB/s over {a.nbytes / 1e9:.2f} GB"
            + (f"; nominal {nominal:,.0f} GB/s" if nominal else ""))
    a = b = fns = None
    dev.free()


def attention_inputs(dev, geo, length, seed):
    """q [1, H, T, hd], k, v [1, KV, T, hd] as bf16 bits on the device."""
    from tinyphi3.quant.bf16 import float32_to_bf16
    rs = dev.random_state(seed)
    H, KV, hd = geo["heads"], geo["kv_heads"], geo["head_dim"]
    q_std = LOGIT_STD / (math.sqrt(hd) * scale_of(geo))
    q = float32_to_bf16(dev.normal(rs, (1, H, length, hd), q_std))
    k = float32_to_bf16(dev.normal(rs, (1, KV, length, hd), 1.0))
    v = float32_to_bf16(dev.normal(rs, (1, KV, length, hd), 1.0))
    return q, k, v


def masked_reference(xp, q, k, v, layout, block, scale, qb, length):
    """float64 [H, n, hd]: softmax(q k^T scale, causal and layout-masked) v for query block qb,
    computed directly (cuBLAS through CuPy, or NumPy), not by the kernel; layout None: dense."""
    H, KV = q.shape[1], k.shape[1]
    start, stop = qb * block, min((qb + 1) * block, length)
    qs = widen(q[0, :, start:stop]).astype(np.float64)                  # [H, n, hd]
    ks = xp.repeat(widen(k[0, :, :stop]).astype(np.float64), H // KV, axis=0)   # [H, stop, hd]
    vs = xp.repeat(widen(v[0, :, :stop]).astype(np.float64), H // KV, axis=0)
    s = (qs @ ks.transpose(0, 2, 1)) * scale                            # [H, n, stop]
    allowed = xp.arange(stop)[None, :] <= xp.arange(start, stop)[:, None]    # [n, stop]
    if layout is not None:
        blocks = xp.asarray(layout[:, qb, np.arange(stop) // block])     # [H, stop]
        allowed = allowed[None] & blocks[:, None, :]
    s = xp.where(allowed, s, -np.inf)
    p = xp.exp(s - s.max(axis=-1, keepdims=True))
    return (p @ vs) / p.sum(axis=-1, keepdims=True)


def make_sdpa(dev, q, k, v, scale):
    """(a function running torch's SDPA on these bf16 inputs, how it runs): the FlashAttention
    backend with enable_gqa, else with the KV heads repeated, else torch's own choice."""
    import torch
    import torch.nn.functional as F
    if not dev.dry_run and not torch.cuda.is_available():
        raise RuntimeError(f"PyTorch {torch.__version__} sees no CUDA device")
    tq, tk, tv = (dev.to_torch_bf16(x) for x in (q, k, v))
    g = tq.shape[1] // tk.shape[1]
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def flash():
            return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    except ImportError:
        flash = None
    attempts = [("FlashAttention backend, enable_gqa", flash, True),
                ("FlashAttention backend, KV heads repeated", flash, False),
                ("torch's choice of backend, enable_gqa", contextlib.nullcontext, True),
                ("torch's choice of backend, KV heads repeated", contextlib.nullcontext, False)]
    refused = []
    for label, context, gqa in attempts:
        if context is None:
            continue
        keys, values = (tk, tv) if gqa else (tk.repeat_interleave(g, dim=1),
                                             tv.repeat_interleave(g, dim=1))
        extra = {"enable_gqa": True} if gqa else {}

        def fn(context=context, keys=keys, values=values, extra=extra):
            with context():
                return F.scaled_dot_product_attention(tq, keys, values, is_causal=True,
                                                      scale=scale, **extra)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn()
            dev.sync()
            return fn, label, refused
        except Exception as error:                       # noqa: BLE001 - the next way
            refused.append(f"{label}: {type(error).__name__}: {str(error).splitlines()[0]}")
    raise RuntimeError("SDPA ran no way: " + "; ".join(refused))


def attention_checks(run, dev, geo, kernels, inputs, layout, length, sdpa):
    """Equality checks at one length: kernels against the float64 reference on a few query
    blocks, the dense kernel against SDPA everywhere."""
    xp = dev.xp
    block, scale = geo["block"], scale_of(geo)
    prefill, dense = kernels
    checks = []
    q, k, v = inputs["bf16"]
    outs = {"block-sparse": prefill(q, k, v, layout, block, scale, 0),
            "dense": dense(q, k, v, scale)}
    if "fp32" in inputs:
        outs["block-sparse fp32"] = prefill(*inputs["fp32"], layout, block, scale, 0)
    sdpa_out = None
    if sdpa is not None:
        sdpa_out = dev.from_torch(sdpa[0]())
    qbs = check_blocks(layout.shape[1], geo)

    def against_reference(out, dense_layout, tol):
        found = []
        for qb in qbs:
            ref = masked_reference(xp, q, k, v, None if dense_layout else layout, block,
                                   scale, qb, length)
            rows = slice(qb * block, min((qb + 1) * block, length))
            found.append(compare(out[0, :, rows], ref, **tol))
        failed = [c for c in found if not c["passed"]]
        return failed[0] if failed else max(found, key=lambda c: c["max_abs_diff"])
    where = f"query blocks {', '.join(map(str, qbs))} of {length:,} tokens"
    for name, out in outs.items():
        c = against_reference(out, name == "dense", REF_TOL)
        c.update(name=f"{name} kernel = float64 masked reference, {where}", gating=True)
        checks.append(c)
    if sdpa_out is not None:
        c = compare(outs["dense"], sdpa_out, **SDPA_TOL)
        c.update(name=f"dense kernel = SDPA (bf16 output), all {length:,} tokens", gating=True)
        checks.append(c)
        c = against_reference(sdpa_out, True, SDPA_TOL)
        c.update(name=f"SDPA = float64 masked reference (its own bf16 error), {where}",
                 gating=False)
        checks.append(c)
    for c in checks:
        run.log(f"check: {check_line(c)}")
    return checks


def part_attention(run, dev, budget):
    from tinyphi3.nn.blocksparse_layout import density
    args = run.args
    kernels = dev.attention_kernels()
    prefill, dense = kernels
    lengths = sorted(int(n) for n in args.lengths.split(","))
    geo = DRY_GEOMETRY if dev.dry_run else GEOMETRY
    block, scale = geo["block"], scale_of(geo)
    att = {"dtype": "bf16", "geometry": geo, "rows": [], "fp32_rows": [], "checks": [],
           "sdpa_path": "not run", "lengths": lengths, "runs": args.runs}
    run.results["attention"] = att
    for i, length in enumerate(lengths):
        if budget.exceeded():
            run.log(f"{length:,} tokens: skipped (past --time-budget)")
            att.setdefault("skipped", []).append(length)
            continue
        layout = layout_of(geo, length)
        share = density(layout)
        q, k, v = attention_inputs(dev, geo, length, seed=i)
        inputs = {"bf16": (q, k, v)}
        if args.fp32:
            inputs["fp32"] = tuple(widen(x) for x in (q, k, v))
        sdpa = None
        try:
            sdpa = make_sdpa(dev, q, k, v, scale)
            att["sdpa_path"] = sdpa[1]
            if sdpa[2] and i == 0:
                run.log("SDPA refused: " + "; ".join(sdpa[2]))
        except Exception as error:                       # noqa: BLE001 - reported
            run.results["errors"]["attention: SDPA"] = f"{type(error).__name__}: {error}"
            run.log(f"SDPA: not run ({type(error).__name__}: {error})")
        if i == 0:
            try:
                att["checks"] = attention_checks(run, dev, geo, kernels, inputs, layout,
                                                 length, sdpa)
            except Exception as error:                   # noqa: BLE001 - reported
                run.results["errors"]["attention: checks"] = f"{type(error).__name__}: {error}"
                run.log(f"checks: ERROR {type(error).__name__}: {error}")
                run.log_file.write(traceback.format_exc())
            run.save()
        fns = {"sparse": partial(prefill, q, k, v, layout, block, scale, 0),
               "dense": partial(dense, q, k, v, scale)}
        if sdpa is not None:
            fns["sdpa"] = sdpa[0]
        if args.fp32:
            fns["sparse_fp32"] = partial(prefill, *inputs["fp32"], layout, block, scale, 0)
            fns["dense_fp32"] = partial(dense, *inputs["fp32"], scale)
        working = {}
        for name, fn in fns.items():                     # warm-up; a kernel that raises is out
            try:
                fn()
                working[name] = fn
            except Exception as error:                   # noqa: BLE001 - reported
                run.results["errors"][f"attention: {name} at {length}"] = \
                    f"{type(error).__name__}: {error}"
                run.log(f"{name} at {length:,}: ERROR {type(error).__name__}: {error}")
        times, runs = median_ms(dev, working, args.runs, budget, args.case_seconds)
        sparse_flops = attention_flops(layout, length, block, geo["head_dim"])
        full_flops = dense_flops(geo["heads"], length, geo["head_dim"])
        for suffix, rows in (("", att["rows"]), ("_fp32", att["fp32_rows"])):
            if suffix and not args.fp32:
                continue
            row = {"tokens": length, "density": share, "runs": runs,   # {kernel: runs}
                   "sparse_flops": sparse_flops, "dense_flops": full_flops}
            for name, flops in (("sparse", sparse_flops), ("dense", full_flops),
                                ("sdpa", full_flops)):
                key = name if name == "sdpa" else name + suffix
                if key in times:
                    row[f"{name}_ms"] = times[key]
                    row[f"{name}_tflops"] = flops / (times[key] / 1e3) / 1e12
            if "sparse_ms" in row:
                if "sdpa_ms" in row:
                    row["vs_sdpa"] = row["sdpa_ms"] / row["sparse_ms"]
                if "dense_ms" in row:
                    row["vs_dense"] = row["dense_ms"] / row["sparse_ms"]
            rows.append(row)
            run.log(attention_row(row, "fp32 inputs: " if suffix else ""))
        run.save()
        q = k = v = inputs = fns = working = sdpa = None
        dev.free()
    for line in goal_lines(run.results)[:1]:
        run.log(line)


def decode_config(args):
    from tinyphi3.config import preset
    return preset(args.model)


def device_model(dev, config, fmt, block=32, seed=0, quantize_all=False):
    """A Phi3 with random weights on the device, in `fmt` ("bf16" or "q4"), never whole on the
    host: bf16 matrices drawn on the device (normal(0, init_std)) and rounded there; 4-bit ones
    drawn and quantized (quantize_q4) on the host one at a time, one per distinct shape unless
    quantize_all, each tensor uploaded as its own copy. Norm gains ones, biases zeros."""
    from tinyphi3.models.model import BF16, Q4, Phi3
    from tinyphi3.models.variants import variant_for
    from tinyphi3.models.weights import parameter_shapes
    from tinyphi3.quant.bf16 import float32_to_bf16
    from tinyphi3.quant.q4 import quantize_q4
    xp = dev.xp
    variant = variant_for(config)
    rs = dev.random_state(seed)
    host = np.random.default_rng(seed)
    templates = {}
    params = {}
    for name, shape in parameter_shapes(config).items():
        if name.endswith("norm.weight"):
            params[name] = xp.ones(shape, np.float32)
        elif name.endswith(".bias"):
            params[name] = xp.zeros(shape, np.float32)
        elif fmt == "bf16" or len(shape) != 2:
            w = dev.normal(rs, shape, variant.init_std(name, config))
            params[name] = float32_to_bf16(w) if len(shape) == 2 else w
            del w
        elif fmt == "q4":
            key = name if quantize_all else tuple(shape)
            if key not in templates:
                w = host.standard_normal(shape, dtype=np.float32) * np.float32(
                    variant.init_std(name, config))
                templates = {} if quantize_all else templates
                templates[key] = quantize_q4(w, block, name=name)
                del w
            params[name] = templates[key].map_arrays(xp.asarray)
        else:
            raise ValueError(f"unknown format {fmt!r}")
    model = Phi3(config, params, weight_format=BF16 if fmt == "bf16" else Q4)
    if fmt == "q4":
        model.quantization = {"quant_method": "tinyphi3_q4", "bits": 4, "block_size": block,
                              "scheme": "symmetric"}
    return model.to_backend(dev.backend)


def tinyphi3_decode(model, prompt, new_tokens):
    """(prefill tokens/s, decode tokens/s, tokens) of one greedy generate() call."""
    from tinyphi3.inference.generate import GenerationStats, generate
    stats = GenerationStats()
    tokens = list(generate(model, list(prompt), max_new_tokens=new_tokens, stats=stats))
    if len(tokens) != new_tokens:
        raise RuntimeError(f"generate() gave {len(tokens)} tokens, not {new_tokens}")
    return stats.prefill_tokens_per_second, stats.decode_tokens_per_second, tokens


def hf_model(dev, config, attention):
    """transformers' Phi3ForCausalLM in bf16 with random weights, made on the device."""
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    if not dev.dry_run and not torch.cuda.is_available():
        raise RuntimeError(f"PyTorch {torch.__version__} sees no CUDA device")
    hf_config = transformers.Phi3Config(**config.to_dict())
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)              # as from_pretrained(dtype=bf16) does
    try:
        with torch.device(dev.torch_device):
            model = transformers.Phi3ForCausalLM(hf_config)
    finally:
        torch.set_default_dtype(default)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attention)
    else:
        model.config._attn_implementation = attention
    return model.eval()


def hf_decode(dev, model, prompt, new_tokens):
    """(prefill tokens/s, decode tokens/s, tokens) of one greedy model.generate() call, timed
    by a streamer at the prompt, the first new token and the last one."""
    import torch
    try:
        from transformers.generation.streamers import BaseStreamer
    except ImportError:
        BaseStreamer = object

    class Clock(BaseStreamer):
        def __init__(self):
            self.times = []

        def put(self, value):
            dev.sync()
            self.times.append(time.perf_counter())

        def end(self):
            pass
    clock = Clock()
    ids = torch.tensor([list(prompt)], device=dev.torch_device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=0, streamer=clock)
    tokens = out[0, ids.shape[1]:].tolist()
    t = clock.times
    if len(tokens) != new_tokens or len(t) < 3:
        raise RuntimeError(f"generate() gave {len(tokens)} tokens and {len(t)} streamer calls")
    return len(prompt) / (t[1] - t[0]), (len(t) - 2) / (t[-1] - t[1]), tokens


def part_decode(run, dev, budget):
    from tinyphi3.models.weights import parameter_count
    args = run.args
    config = decode_config(args)
    depths = [int(n) for n in args.depths.split(",")]
    rng = np.random.default_rng(0)
    prompt_all = rng.integers(3, min(config.vocab_size, 32000),
                              max(depths) + args.prompt_tokens).tolist()
    dec = {"model": args.model, "parameters": parameter_count(config), "block": args.q4_block,
           "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
           "depths": depths, "runs": args.decode_runs, "hf_attention": args.hf_attention,
           "rows": [], "setup_s": {}}
    run.results["decode"] = dec
    bandwidth = run.results.get("bandwidth", {}).get("read_GBps")
    sides = [s for s in ("bf16", "q4", "torch-bf16") if s in args.decode_sides.split(",")]
    for side in sides:
        if budget.exceeded():
            run.log(f"{side}: skipped (past --time-budget)")
            run.results["errors"][f"decode: {side}"] = "skipped: past --time-budget"
            continue
        model = None
        try:
            start = time.perf_counter()
            if side == "torch-bf16":
                model = hf_model(dev, config, args.hf_attention)
                weights = sum(p.numel() * p.element_size() for p in model.parameters())

                def once(prompt, model=model):
                    return hf_decode(dev, model, prompt, args.new_tokens)
            else:
                model = device_model(dev, config, side, args.q4_block,
                                     quantize_all=args.q4_quantize_all)
                weights = model.weight_bytes()

                def once(prompt, model=model):
                    return tinyphi3_decode(model, prompt, args.new_tokens)
            dev.sync()
            dec["setup_s"][side] = time.perf_counter() - start
            run.log(f"{side}: model ready in {dec['setup_s'][side]:.1f} s, weights "
                    f"{weights / 1e9:.2f} GB")
            if side == "torch-bf16":                                     # warm-up
                hf_decode(dev, model, prompt_all[:16], 4)
            else:
                tinyphi3_decode(model, prompt_all[:16], 4)
            for depth in depths:
                prompt = prompt_all[:depth + args.prompt_tokens]
                prefills, decodes = [], []
                for r in range(args.decode_runs):
                    if r and budget.exceeded():
                        break
                    prefill_rate, decode_rate, _ = once(prompt)
                    prefills.append(prefill_rate)
                    decodes.append(decode_rate)
                context = len(prompt) + args.new_tokens // 2
                row = {"side": "transformers" if side == "torch-bf16" else "tinyphi3",
                       "format": side, "depth": depth, "prompt": len(prompt),
                       "runs": len(decodes), "weight_bytes": weights,
                       "prefill_tok_s": statistics.median(prefills),
                       "decode_tok_s": statistics.median(decodes),
                       "bytes_per_token": weights + kv_bytes(config, side, context)}
                dec["rows"].append(row)
                shown = decode_table(dec, bandwidth)[-1]
                run.log(f"{side} depth {depth}: prefill {row['prefill_tok_s']:,.1f} tok/s, "
                        f"decode {row['decode_tok_s']:,.2f} tok/s, "
                        f"{shown['achieved_GBps']:,.0f} GB/s"
                        + (f" = {shown['of_bandwidth']:.0%} of the read bandwidth"
                           if shown["of_bandwidth"] is not None else "")
                        + f" ({len(decodes)} runs)")
                run.save()
        except Exception as error:                       # noqa: BLE001 - reported
            run.results["errors"][f"decode: {side}"] = f"{type(error).__name__}: {error}"
            run.log(f"{side}: ERROR {type(error).__name__}: {error}")
            run.log_file.write(traceback.format_exc())
        finally:
            model = once = None
            dev.free()
    for line in goal_lines(run.results)[1:]:
        run.log(line)


# ---- main ------------------------------------------------------------------------------------

PARTS = ("tests", "bandwidth", "attention", "decode")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--out", type=Path, default=None,
        help="folder for gpu.json, gpu.md, gpu.log, gpu_tests.log (default: $OUT if set, "
             "else /tmp/tinyphi3-gpu)")
    add("--docs", default=str(REPO / "docs" / "benchmarks.md"),
        help="Markdown file whose '## GPU' section is written (default docs/benchmarks.md; "
             "'' writes none)")
    add("--report", type=Path, default=None, metavar="GPU_JSON",
        help="measure nothing: write the section of a saved gpu.json into --docs (no GPU "
             "needed) and print it")
    add("--parts", default=",".join(PARTS),
        help=f"parts to run, comma-separated, from {','.join(PARTS)} (the machine is always "
             f"described)")
    add("--skip-tests", action="store_true", help="do not run the GPU tests first")
    add("--tests-timeout", type=int, default=180, help="seconds for the GPU tests (180)")
    add("--time-budget", type=float, default=330,
        help="seconds after which no new timed run or part starts (330); a case already "
             "started keeps its first run")
    add("--runs", type=int, default=None, help="timed runs per attention case, median (3)")
    add("--case-seconds", type=float, default=20,
        help="a kernel whose runs at one length took this many seconds is not run again "
             "there (20; it keeps at least one timed run)")
    add("--lengths", default=None,
        help=f"prefill lengths in tokens (default {DEFAULTS['lengths'][0]})")
    add("--fp32", action="store_true",
        help="also time the block-sparse and dense kernels on float32 inputs (same values)")
    add("--bandwidth-bytes", type=int, default=None,
        help=f"bytes copied and summed (default {DEFAULTS['bandwidth_bytes'][0]:,})")
    add("--bandwidth-runs", type=int, default=10, help="runs of each bandwidth test (10)")
    add("--model", default=None,
        help=f"tinyphi3 preset of the decode test (default {DEFAULTS['model'][0]})")
    add("--decode-sides", default="bf16,q4,torch-bf16",
        help="decode sides: tinyphi3 bf16, tinyphi3 q4, transformers torch-bf16 (all)")
    add("--decode-runs", type=int, default=None,
        help="generate() runs per decode case, median (3)")
    add("--prompt-tokens", type=int, default=None,
        help=f"prompt after the depth (default {DEFAULTS['prompt_tokens'][0]})")
    add("--new-tokens", type=int, default=None,
        help=f"tokens generated per run (default {DEFAULTS['new_tokens'][0]})")
    add("--depths", default=None,
        help=f"tokens before the prompt, comma-separated (default {DEFAULTS['depths'][0]})")
    add("--q4-block", type=int, default=32, help="4-bit block size (32)")
    add("--q4-quantize-all", action="store_true",
        help="quantize every 4-bit tensor from its own random matrix (about 2 more minutes "
             "of host time) instead of one per distinct shape")
    add("--hf-attention", default="sdpa", choices=["sdpa", "eager"],
        help="transformers' attention implementation (sdpa)")
    add("--note", default="", help="a sentence on the conditions of the run")
    add("--dry-run", action="store_true",
        help="run every part on the CPU with tiny shapes and NumPy references for the kernels "
             "(checks the script, not the GPU)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name, values in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, values[1] if args.dry_run else values[0])
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if args.skip_tests or args.dry_run:
        args.parts = [p for p in args.parts if p != "tests"]
        args.skip_tests = True
    return args


def write_docs(args, results):
    if args.docs:
        from _docs import write_section
        write_section(Path(args.docs), HEADING, render_section(results))


def main(argv=None):
    args = parse_args(argv)
    if args.report is not None:
        results = json.loads(args.report.read_text())
        write_docs(args, results)
        print(render_section(results))
        return 0
    if not args.dry_run:
        from tinyphi3_gpu.device import gpu_unavailable
        why = gpu_unavailable()
        if why is not None:
            print(f"no GPU: {why}", flush=True)
            return 2
    out = args.out or Path(os.environ.get("OUT") or "/tmp/tinyphi3-gpu")
    run = Run(args, out)
    budget = Budget(args.time_budget)
    try:
        dev = Device(args.dry_run)
        estimate = estimate_seconds(args)
        run.results["estimate_s"] = estimate
        run.log(f"tinyphi3 GPU benchmark: {run.results['command']}")
        run.log(f"rough estimate on an H200: {sum(estimate.values()):.0f} s ("
                + ", ".join(f"{k} {v:.0f}" for k, v in estimate.items())
                + f"); no new run starts after {args.time_budget:.0f} s; results in {out}")
        run.part("machine", part_machine, dev)
        if "tests" in args.parts:
            run.part("tests", part_tests, dev)
        for name, fn in (("bandwidth", part_bandwidth), ("attention", part_attention),
                         ("decode", part_decode)):
            if name not in args.parts:
                continue
            if budget.exceeded():
                run.results["errors"][name] = "skipped: past --time-budget"
                run.log(f"== {name}: skipped (past --time-budget)")
                continue
            run.part(name, fn, dev, *([budget] if name != "bandwidth" else []))
    except KeyboardInterrupt:
        run.results["errors"]["interrupted"] = f"interrupted after {budget.elapsed():.0f} s"
        run.log(f"interrupted after {budget.elapsed():.0f} s; what was measured is saved")
    finally:
        run.results["elapsed_s"] = budget.elapsed()
        run.results["exit_status"] = exit_status(run.results)
        run.save()
        try:
            write_docs(args, run.results)
        except OSError as error:
            run.log(f"docs not written: {error}")
        run.log()
        run.log(render_section(run.results))
        run.log_file.close()
    return run.results["exit_status"]


if __name__ == "__main__":
    sys.exit(main())
