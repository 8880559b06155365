"""Inference speed and memory: tinyphi3 fp32 and 4-bit against transformers (PyTorch CPU eager,
fp32) and llama.cpp (Q4_0) on the same weights, in the same run.

llama-bench conventions: a warm-up, then the median of --runs runs; prefill (the prompt into the
KV cache, as tinyphi3's generate() does it: 256 tokens per forward pass; transformers: one pass)
and decode (new tokens one at a time, greedy) timed separately, from an empty context and after
the prompt; prompt tokens never counted as generated. Each side runs in its own process, one
after the other, and reports its peak resident memory (ru_maxrss) over loading, prefill and decode.

Two models:
  --model mini        checkpoints/mini (4.25 M parameters), quantized here with each block size;
  --model phi-3-mini  the phi-3-mini geometry (3.82 B parameters) with random weights, generated
                      tensor by tensor from a seed per tensor: each 4-bit checkpoint is written
                      to --workdir without fp32 ever in memory whole; the fp32 sides generate the
                      same weights in memory (15.3 GB each, one process at a time).

The read bandwidth of this machine is measured in the same run (NumPy's fp32 matrix-vector
product over 1 GB, so, out of cache) and gives the bound: decode tokens/s <= bandwidth / bytes
read per token (the weights plus the KV cache). Results go to docs/benchmarks.md.

llama.cpp (side `llama.cpp`, skipped with a line saying why when --llama-cpp is not a built
source tree): the same weights written as a Hugging Face directory in bf16 (with
checkpoints/mini's tokenizer; llama.cpp pads the vocabulary), converted by llama.cpp's own
convert_hf_to_gguf.py, quantized to Q4_0 by its llama-quantize, and timed by its llama-bench
(-p N -n M -d 0,D, flash attention off and on, one row each) in a process of its own.
docs/benchmarks.md ("Building llama.cpp") says how to build it.

    python benchmarks/inference.py --model mini
    python benchmarks/inference.py --model phi-3-mini --workdir /tmp/tinyphi3-bench --runs 5 \
        --llama-cpp /path/to/llama.cpp
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

THREADS = str(os.cpu_count())
os.environ.setdefault("OPENBLAS_NUM_THREADS", THREADS)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")   # idle BLAS threads sleep (tinyphi3/__init__)
os.environ.setdefault("NUMBA_NUM_THREADS", THREADS)

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
BLOCKS = (32, 64, 128)


# ---- the weights ------------------------------------------------------------------------------

def random_tensor(name, shape, std=0.02):
    """The benchmark's weights: normal(0, std) from a seed per tensor name; norms are ones."""
    if name.endswith("norm.weight"):
        return np.ones(shape, np.float32)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def model_config(model):
    from tinyphi3.io.checkpoint import load_config
    from tinyphi3.config import preset
    if model == "mini":
        return load_config(REPO / "checkpoints" / "mini")
    return preset("phi-3-mini-4k")


def float_params(model):
    """All weights in fp32, by Hugging Face name."""
    from tinyphi3.io.checkpoint import load_tensors, tied_copies
    from tinyphi3.models.weights import parameter_shapes
    config = model_config(model)
    shapes = parameter_shapes(config)
    if model == "mini":
        return load_tensors(REPO / "checkpoints" / "mini", shapes, tied_copies(config))
    return {name: random_tensor(name, shape) for name, shape in shapes.items()}


def write_q4(model, block, workdir):
    """The 4-bit checkpoint of the benchmark's weights with this block size (written once)."""
    from tinyphi3.models.weights import parameter_shapes
    from tinyphi3.models.quantize import quantize_checkpoint
    from tinyphi3.quant.checkpoint import write_quantized
    out = Path(workdir) / f"{model}-q4-b{block}"
    if (out / "config.json").exists():
        return out
    if model == "mini":
        quantize_checkpoint(REPO / "checkpoints" / "mini", out, block, progress=False)
    else:
        config = model_config(model)
        shapes = parameter_shapes(config)
        write_quantized(out, config, shapes, lambda name: random_tensor(name, shapes[name]), block,
                        progress=True)
    return out


def write_gguf(model, workdir, llama):
    """The benchmark's weights as llama.cpp's Q4_0 GGUF, by llama.cpp's own tools (written once)."""
    import shutil
    import ml_dtypes
    from tinyphi3.io.safetensors import write_safetensors
    from tinyphi3.models.weights import parameter_shapes
    out = Path(workdir) / f"{model}-q4_0.gguf"
    if out.exists():
        return out
    config = model_config(model)
    shapes = parameter_shapes(config)
    hf, bf16 = Path(workdir) / f"{model}-bf16-hf", Path(workdir) / f"{model}-bf16.gguf"
    hf.mkdir(parents=True, exist_ok=True)
    if model == "mini":
        params = float_params(model)
        produce = params.__getitem__
    else:
        def produce(name):
            return random_tensor(name, shapes[name])
    write_safetensors(hf / "model.safetensors",
                      [(n, ml_dtypes.bfloat16, shape,
                        lambda n=n: produce(n).astype(ml_dtypes.bfloat16))
                       for n, shape in shapes.items()], {"format": "pt"})
    config.save(hf / "config.json")
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                 "added_tokens.json"):
        shutil.copy(REPO / "checkpoints" / "mini" / name, hf / name)
    subprocess.run([sys.executable, str(llama / "convert_hf_to_gguf.py"), str(hf),
                    "--outtype", "bf16", "--outfile", str(bf16)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(hf)
    partial = out.with_suffix(".partial")
    subprocess.run([str(llama / "build" / "bin" / "llama-quantize"), str(bf16), str(partial),
                    "Q4_0", THREADS], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    bf16.unlink()
    partial.rename(out)
    return out


def llama_cpp_missing(llama):
    """Why the llama.cpp side cannot run, or None."""
    if llama is None:
        return "no --llama-cpp given"
    for part in ("convert_hf_to_gguf.py", "build/bin/llama-bench", "build/bin/llama-quantize"):
        if not (Path(llama) / part).exists():
            return f"{Path(llama) / part} does not exist"
    return None


def llama_cpp_build(llama):
    """The build's CPU options as CMake recorded them, and whether this CPU has AMX."""
    cache = Path(llama) / "build" / "CMakeCache.txt"
    options = []
    for line in cache.read_text().splitlines() if cache.exists() else []:
        key = line.split(":", 1)[0]
        if key in ("GGML_NATIVE", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16",
                   "CMAKE_CXX_COMPILER"):
            options.append(f"{key}={line.split('=', 1)[1]}")
    amx = any("amx_int8" in line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    return ", ".join(options) + f"; this CPU {'has' if amx else 'has no'} AMX"


def llama_cpp_worker(gguf, llama, prompt_tokens, depth, new_tokens, runs):
    """llama-bench's tokens/s, flash attention off and on, and its peak resident memory."""
    out = subprocess.run([str(Path(llama) / "build" / "bin" / "llama-bench"), "-m", str(gguf),
                          "-p", str(prompt_tokens), "-n", str(new_tokens), "-d", f"0,{depth}",
                          "-fa", "0,1", "-t", THREADS, "-r", str(runs), "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return read_llama_bench(json.loads(out), depth, gguf.stat().st_size, peak)


def read_llama_bench(tests, depth, gguf_bytes, peak):
    """llama-bench's JSON tests as one result per flash-attention setting: prefill (the prompt
    test at depth 0), decode from an empty context and decode after `depth` tokens, tokens/s."""
    results = {}
    for test in tests:
        fa = "on" if test["flash_attn"] in (1, True, "on", "enabled") else "off"
        r = results.setdefault(f"llama.cpp-fa-{fa}", {"peak_rss": peak, "weight_bytes": gguf_bytes,
                                                      "build": test.get("build_commit", "?")})
        if test["n_prompt"] and not test["n_gen"] and test["n_depth"] == 0:
            r["prefill"] = test["avg_ts"]
        elif test["n_gen"] and not test["n_prompt"] and test["n_depth"] in (0, depth):
            r["decode" if test["n_depth"] == depth else "decode_empty"] = test["avg_ts"]
    for side, r in results.items():
        missing = {"prefill", "decode", "decode_empty"} - set(r)
        if missing:
            raise ValueError(f"llama-bench gave no {', '.join(sorted(missing))} for {side}")
    return results


# ---- one side, in its own process ------------------------------------------------------------

def peak_rss():
    """This process's peak resident memory in bytes (VmHWM; ru_maxrss would include the parent's
    peak from before exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_tinyphi3(model, prompt, new_tokens):
    """(prefill seconds, decode seconds for new_tokens - 1 steps) with greedy decoding."""
    from tinyphi3.inference.generate import prefill as fill_cache
    cache = model.new_cache(1, len(prompt) + new_tokens)             # as generate() does it
    start = time.perf_counter()
    logits = fill_cache(model, prompt, cache)
    prefill = time.perf_counter() - start
    token = int(logits.argmax())
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        token = int(model(np.array([[token]]), cache=cache)[0, -1].argmax())
    return prefill, time.perf_counter() - start


def time_transformers(model, prompt, new_tokens):
    import torch
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(torch.tensor([prompt]), use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - start
        past, token = out.past_key_values, int(out.logits[0, -1].argmax())
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past, token = out.past_key_values, int(out.logits[0, -1].argmax())
    return prefill, time.perf_counter() - start


def worker(side, model_name, workdir, prompt_tokens, decode_prompt, new_tokens, runs):
    rng = np.random.default_rng(0)
    config = model_config(model_name)
    prompt = rng.integers(3, min(config.vocab_size, 32000), prompt_tokens).tolist()
    short = prompt[:decode_prompt]
    if side == "transformers":
        import torch
        import transformers
        torch.set_num_threads(int(THREADS))
        hf_config = transformers.Phi3Config(**config.to_dict())
        with torch.device("meta"):
            model = transformers.Phi3ForCausalLM(hf_config)
        state = {n: torch.from_numpy(a) for n, a in float_params(model_name).items()}
        model.load_state_dict(state, assign=True, strict=True)
        rotary = model.model.rotary_emb                              # its buffers are not weights:
        model.model.rotary_emb = type(rotary)(config=hf_config)      # built off the meta device
        model.config._attn_implementation = "eager"
        model.eval()
        weight_bytes = sum(t.numel() * 4 for t in state.values())
        del state
        timer = time_transformers
    else:
        from tinyphi3.models.model import Phi3
        if side == "fp32":
            model = Phi3(config, float_params(model_name))
        else:
            model = Phi3.from_pretrained(Path(workdir) / f"{model_name}-q4-b{side[len('q4-b'):]}")
        weight_bytes = model.weight_bytes()
        timer = time_tinyphi3
    timer(model, prompt[:16], 4)                                     # warm-up: compile, caches
    prefills, decodes, empties = [], [], []
    for _ in range(runs):
        if decode_prompt == prompt_tokens:                           # one pass times both
            prefill, decode = timer(model, prompt, new_tokens)
        else:
            prefill, _ = timer(model, prompt, 1)                     # prefill: the whole prompt
            _, decode = timer(model, short, new_tokens)              # decode after decode_prompt
        _, empty = timer(model, prompt[:1], new_tokens)              # decode, empty context
        prefills.append(prompt_tokens / prefill)
        decodes.append((new_tokens - 1) / decode)
        empties.append((new_tokens - 1) / empty)
    return {"prefill": statistics.median(prefills), "decode": statistics.median(decodes),
            "decode_empty": statistics.median(empties), "peak_rss": peak_rss(),
            "weight_bytes": weight_bytes}


def read_bandwidth():
    """GB/s of NumPy's fp32 matrix-vector product over 1 GB (out of cache), median of 5."""
    w = np.random.default_rng(0).standard_normal((65536, 4096), dtype=np.float32)
    x = np.ones(4096, np.float32)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        w @ x
        times.append(time.perf_counter() - start)
    return w.nbytes / statistics.median(times[1:]) / 1e9


USER_ENVIRONMENT = dict(os.environ)       # before tinyphi3 chooses Numba's thread policy


def run_side(side, args, runs):
    out = subprocess.run([sys.executable, __file__, "--worker", side, "--model", args.model,
                          "--workdir", str(args.workdir), "--runs", str(runs),
                          "--prompt-tokens", str(args.prompt_tokens),
                          "--decode-prompt", str(args.decode_prompt),
                          "--new-tokens", str(args.new_tokens)]
                         + (["--llama-cpp", str(args.llama_cpp)] if args.llama_cpp else []),
                         check=True, capture_output=True, text=True,
                         env=USER_ENVIRONMENT).stdout   # each side chooses as a user's would
    result = json.loads(out.strip().splitlines()[-1])
    print(side, result, flush=True)
    return result


def describe_machine():
    import numba
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    from _docs import cpu_name
    return (f"{cpu_name()}, {os.cpu_count()} cores, Linux {platform.release()}, Python "
            f"{platform.python_version()}, NumPy {np.__version__} (BLAS: {blas.get('name', '?')} "
            f"{blas.get('version', '')}, {THREADS} threads), Numba {numba.__version__} "
            f"({THREADS} threads)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mini", "phi-3-mini"], default="mini")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tinyphi3-bench"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fp32-runs", type=int, default=None,
                        help="runs for the fp32 sides (default --runs)")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-prompt", type=int, default=None,
                        help="prompt before the decode test [default: 512, or the context less "
                             "the new tokens]")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--sides", default="transformers,fp32,q4-b32,q4-b64,q4-b128,llama.cpp")
    parser.add_argument("--llama-cpp", type=Path, default=os.environ.get("TINYPHI3_LLAMA_CPP"),
                        help="a built llama.cpp source tree (convert_hf_to_gguf.py, "
                             "build/bin/llama-bench, build/bin/llama-quantize) [default: "
                             "$TINYPHI3_LLAMA_CPP]; without it the llama.cpp side is skipped")
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--note", default="")
    parser.add_argument("--section", default=None,
                        help="the heading of the section written to --out [default: 'Inference: "
                             "<the model>']; another name keeps an earlier section, measured on "
                             "another machine, beside the new one")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.decode_prompt is None:
        context = model_config(args.model).max_position_embeddings
        args.decode_prompt = min(args.prompt_tokens, context - args.new_tokens)
    if args.worker == "llama.cpp":
        print(json.dumps(llama_cpp_worker(args.workdir / f"{args.model}-q4_0.gguf", args.llama_cpp,
                                          args.prompt_tokens, args.decode_prompt,
                                          args.new_tokens, args.runs)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.workdir, args.prompt_tokens,
                                args.decode_prompt, args.new_tokens, args.runs)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    sides = args.sides.split(",")
    why = "llama.cpp" in sides and llama_cpp_missing(args.llama_cpp)
    if why:
        print(f"llama.cpp side skipped: {why} (docs/benchmarks.md, 'Building llama.cpp', says how "
              f"to build it)", flush=True)
        sides.remove("llama.cpp")
    sizes = {}
    for side in sides:
        if side.startswith("q4-b"):
            path = write_q4(args.model, int(side[len("q4-b"):]), args.workdir)
            sizes[side] = (path / "model.safetensors").stat().st_size
        if side == "llama.cpp":
            gguf = write_gguf(args.model, args.workdir, args.llama_cpp)
            sizes["llama.cpp-fa-off"] = sizes["llama.cpp-fa-on"] = gguf.stat().st_size
    bandwidth = read_bandwidth()
    print(f"read bandwidth {bandwidth:.1f} GB/s", flush=True)
    results = {}
    for side in sides:
        fp32 = side in ("fp32", "transformers")
        runs = args.fp32_runs if fp32 and args.fp32_runs else args.runs
        if side == "llama.cpp":
            results.update(run_side(side, args, runs))
        else:
            results[side] = run_side(side, args, runs)
    write_report(args, results, sizes, bandwidth)


def write_report(args, results, sizes, bandwidth):
    from _docs import write_section
    from tinyphi3.cli.info import human_bytes
    config = model_config(args.model)
    c = config
    fp32_vector = 4 * c.head_dim                                     # bytes per cached vector:
    vector_bytes = {"fp32": fp32_vector, "transformers": fp32_vector,   # 4-bit: 8 bits + a
                    "llama.cpp-fa-off": 2 * c.head_dim,                 # float32 scale;
                    "llama.cpp-fa-on": 2 * c.head_dim}                  # llama.cpp: f16
    context = args.decode_prompt + args.new_tokens // 2               # mean context while decoding
    names = {"transformers": "transformers fp32 (eager)", "fp32": "tinyphi3 fp32",
             "llama.cpp-fa-off": "llama.cpp Q4_0, flash attention off",
             "llama.cpp-fa-on": "llama.cpp Q4_0, flash attention on"}
    rows = []
    base = results.get("transformers", {}).get("decode")
    for side, r in results.items():
        kv = 2 * c.num_hidden_layers * c.num_key_value_heads * context \
            * vector_bytes.get(side, c.head_dim + 4)
        per_token = r["weight_bytes"] + kv
        bound = bandwidth * 1e9 / per_token
        name = names.get(side, f"tinyphi3 4-bit, block {side[len('q4-b'):]}")
        disk = human_bytes(sizes[side]) if side in sizes else "-"
        rows.append(f"| {name} | {disk} | {human_bytes(r['weight_bytes'])} | "
                    f"{human_bytes(r['peak_rss'])} | {r['prefill']:.1f} | "
                    f"{r['decode_empty']:.2f} | {r['decode']:.2f} | "
                    f"{bound:.2f} | {100 * r['decode'] / bound:.0f}% | "
                    + (f"{r['decode'] / base:.2f}x |" if base else "- |"))
    llama = ""
    if "llama.cpp-fa-off" in results:
        llama = (f" llama.cpp (build {results['llama.cpp-fa-off']['build']}; "
                 f"{llama_cpp_build(args.llama_cpp)}): its weights in memory are the GGUF file, "
                 f"mapped, and its peak memory counts the mapped pages; its KV cache is f16.")
    from tinyphi3.backends.numba import q4 as q4_kernels
    product = ("VNNI" if q4_kernels.has_vnni() else "portable")
    kernels = (f" tinyphi3's 4-bit products ran on its AMX kernel for the prompt (16 rows or more) "
               f"and its {product} kernel for decoding." if q4_kernels.has_amx() else
               f" tinyphi3's 4-bit products ran on its {product} kernel (this CPU has no AMX).")
    fp32_runs = args.fp32_runs or args.runs
    title = ("checkpoints/mini" if args.model == "mini"
             else "the phi-3-mini geometry (3.82 B parameters, random weights)")
    heading = f"## {args.section or f'Inference: {title}'}"
    section = f"""{heading}

`python benchmarks/inference.py --model {args.model}` — prefill of {args.prompt_tokens} tokens and
decode of {args.new_tokens} tokens (greedy) after a {args.decode_prompt}-token prompt, reported
separately in tokens/s, median of {args.runs} runs after a warm-up ({fp32_runs} for the fp32 sides);
prompt tokens are never counted as generated. Each side in its own process; peak memory is the
process's maximum resident set over loading, prefill and decode. The bound is the measured read
bandwidth ({bandwidth:.1f} GB/s, NumPy fp32 matrix-vector product over 1 GB) over the bytes read per
generated token: the weights plus the KV cache at the mean context ({context} tokens; fp32 cache for
the fp32 sides, 8 bits and a float32 scale per vector for the 4-bit ones). Machine: {describe_machine()}; PyTorch and
transformers as installed, {THREADS} threads.{llama}{kernels} {args.note}

| side | on disk | weights in memory | peak memory | prefill tokens/s | decode tokens/s, empty context | decode tokens/s after {args.decode_prompt} | bound | of bound | decode vs transformers |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    write_section(REPO / args.out, heading, section)
    print(section)


if __name__ == "__main__":
    main()
