"""A full-size Phi-3-vision snapshot (random weights): loading, a 17-crop forward, 4 bits.

Run through `python benchmarks/load_full_size.py --model vision [--keep]`. Steps:

1. Write a snapshot of the exact Phi-3-vision-128k-instruct geometry (REFERENCE-vision §1):
   config.json with its img_processor and embd_layer, the 592 tensors (4,146,621,440 weights)
   under their published names, bf16, in 2 shards + model.safetensors.index.json,
   preprocessor_config.json with num_crops 16. Each tensor is generated when its bytes are
   written, so the whole model is never in memory.
2. In a fresh process: `Phi3V.from_pretrained` (float32, tensor by tensor) with peak resident
   memory and time; one forward pass of a prompt with a random 1344 x 1344 image (16 crops and
   the global view: 2,509 image tokens), the tower and the decoder timed apart.
3. `tinyphi3 quantize --block 32` in a fresh process (peak memory, time, size).
4. In a fresh process: the 4-bit model's load (peak memory) and time to first token for the same
   image and prompt (processor, tower, chunked prefill with the 8-bit cache), after a warm-up
   on a text prompt.

Each measuring process raises its own OOM score, so that on a machine short of memory the kernel
stops it rather than a neighbour; a step that fails is reported as such and the next one runs.
Random weights: the LongRoPE factors are phi-3-mini-128K's (the repository's preset lists, 48
each) rather than Phi-3-vision's own, which this repository does not ship; a prompt of 2.5 K
tokens uses the short factors only. The tokenizer is checkpoints/mini's (ids below 2112).
"""

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from tinyphi3.config import Phi3Config, preset
from tinyphi3.io.safetensors import write_safetensors
from tinyphi3.models.vision.hd_transform import tokens_from_grid
from tinyphi3.models.vision.weights import parameter_shapes

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = "/tmp/phi3-vision-random"
MAX_SHARD_BYTES = 5_000_000_000       # transformers' default: the published file has 2 shards
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
PROMPT = "<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n"
IMAGE_SIDE = 1344                     # 4 x 336: 4 x 4 crops and the global view
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
HEADING = "## Phi-3-vision-128k-instruct geometry (4.15 B parameters)"
BENCH_HEADING = "## Phi-3-vision at 4 bits: time to first token, one 17-crop image"
MARGIN = 2_500_000_000                # memory left free beside the float32 model, at least


def config_json(quick=False) -> dict:
    """config.json of Phi-3-vision-128k-instruct (REFERENCE-vision §1.1), rope_scaling of type
    "su" as published, with phi-3-mini-128K's factor lists (see the module docstring). quick: a
    tiny model of the same layout (a 2-layer decoder of width 64, a 3-layer tower of width 32 on
    28-pixel crops), for checking this script in seconds."""
    if quick:
        clip = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                "num_attention_heads": 2, "image_size": 28, "patch_size": 7,
                "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"}
        tiny = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 2112,
                "rope_scaling": {"type": "su", "short_factor": [1.0 + 0.1 * i for i in range(8)],
                                 "long_factor": [1.0 + 2.0 * i for i in range(8)]}}
        full = config_json()
        full["img_processor"] |= {"image_dim_out": 32, "clip_config": clip}
        return full | tiny
    rope = preset("phi-3-mini-128k").rope_scaling
    return {
        "architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v",
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "embd_pdrop": 0.0,
        "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb",
                       "projection_cls": "mlp", "use_hd_transform": True,
                       "with_learnable_separator": True},
        "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02,
        "img_processor": {"image_dim_out": 1024,
                          "model_name": "openai/clip-vit-large-patch14-336",
                          "name": "clip_vision_model", "num_img_tokens": 144},
        "intermediate_size": 8192, "max_position_embeddings": 131072,
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
        "original_max_position_embeddings": 4096, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
        "rope_scaling": {"long_factor": rope["long_factor"], "short_factor": rope["short_factor"],
                         "type": "su"},
        "rope_theta": 10000.0, "sliding_window": 131072, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 32064}


def preprocessor_json(quick=False) -> dict:
    """The published preprocessor_config.json (quick: crops of 28 pixels, patches of 7)."""
    return {"do_convert_rgb": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "image_processor_type": "Phi3VImageProcessor", "num_crops": 16,
            "num_img_tokens": 144, "processor_class": "Phi3VProcessor"} | (
                {"crop_size": 28, "patch_size": 7} if quick else {})


def random_tensor(name, shape, rng):
    """bf16 values for one tensor: norm gains 1, biases 0, the rest normal(0, 0.02)."""
    def make():
        if len(shape) == 1 and "norm" in name:
            return np.ones(shape, ml_dtypes.bfloat16)
        if name.endswith(".bias"):
            return np.zeros(shape, ml_dtypes.bfloat16)
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
    return make


def plan_shards(shapes: dict, max_bytes: int) -> list:
    """Tensor names in checkpoint order cut into contiguous shards of at most max_bytes (bf16)."""
    shards, current, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = 2 * int(np.prod(shape))
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    return shards + [current]


def write_snapshot(directory: Path, quick=False, seed: int = 0) -> dict:
    """The snapshot, shard by shard, tensor by tensor; returns the shapes by name."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config_json(quick), indent=2) + "\n")
    config = Phi3Config.from_json_file(directory / "config.json")
    shapes = parameter_shapes(config)
    total = sum(2 * int(np.prod(s)) for s in shapes.values())
    shards = plan_shards(shapes, total // 2 + 1 if quick else MAX_SHARD_BYTES)
    rng = np.random.default_rng(seed)
    weight_map = {}
    for k, names in enumerate(shards):
        filename = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(directory / filename,
                          [(n, ml_dtypes.bfloat16, shapes[n], random_tensor(n, shapes[n], rng))
                           for n in names], {"format": "pt"})
        weight_map.update({n: filename for n in names})
    (directory / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (directory / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_json(quick), indent=2))
    for name in TOKENIZER_FILES:
        shutil.copy(REPO / "checkpoints" / "mini" / name, directory / name)
    return shapes


# ---- the measuring processes -------------------------------------------------------------------
def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def first_to_go():
    """Ask the kernel to stop this process first if memory runs out (not a neighbour's run)."""
    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass


def picture():
    """A random 1344 x 1344 RGB picture (seed 0): 4 x 4 crops and the global view."""
    from PIL import Image
    pixels = np.random.default_rng(0).integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), np.uint8)
    return Image.fromarray(pixels)


def measure_float(directory):
    from tinyphi3.errors import NonFiniteError
    from tinyphi3.models.vision.phi3v import Phi3V
    from tinyphi3.models.vision.processor import Phi3VProcessor
    start = time.perf_counter()
    model = Phi3V.from_pretrained(directory)
    load_seconds = time.perf_counter() - start
    after_load = peak_rss()
    params = model.params
    processor, image = Phi3VProcessor.from_pretrained(directory), picture()
    start = time.perf_counter()
    inputs = processor(PROMPT, [image])
    processor_seconds = time.perf_counter() - start
    ids = inputs["input_ids"]
    start, cpu = time.perf_counter(), time.process_time()
    embeds = model.embed(ids, inputs["pixel_values"], inputs["image_sizes"])   # [1, T, D]
    tower_seconds, tower_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    try:
        logits = model(ids, inputs_embeds=embeds, logits_to_keep=1)
        finite = bool(np.isfinite(logits).all())
    except NonFiniteError:
        finite = False
    decoder_seconds, decoder_cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"parameters": model.num_parameters(), "tensors": len(params),
            "fp32_bytes": model.weight_bytes(),
            "largest_tensor_fp32_bytes": max(a.nbytes for a in params.values()),
            "peak_rss_after_load": after_load, "load_seconds": load_seconds,
            "tokens": int(ids.shape[1]), "image_tokens": int((ids < 0).sum()),
            "crops": int(inputs["pixel_values"].shape[1]), "processor_seconds": processor_seconds,
            "tower_seconds": tower_seconds, "decoder_seconds": decoder_seconds,
            "tower_cpu_seconds": tower_cpu, "decoder_cpu_seconds": decoder_cpu,
            "logits_finite": finite, "peak_rss": peak_rss()}


def measure_quantize(directory, out):
    from tinyphi3.cli import main
    start = time.perf_counter()
    main(["quantize", "--ckpt", str(directory), "--out", str(out), "--block", "32"],
         standalone_mode=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss": peak_rss(),
            "bytes": sum(p.stat().st_size for p in Path(out).glob("*.safetensors"))}


def measure_q4(directory):
    from tinyphi3.inference.generate import PREFILL_CHUNK, generate
    from tinyphi3.models.vision.phi3v import Phi3V
    from tinyphi3.models.vision.processor import Phi3VProcessor
    from tinyphi3.models.vision.weights import part_of
    start = time.perf_counter()
    model = Phi3V.from_pretrained(directory)
    load_seconds = time.perf_counter() - start
    after_load = peak_rss()
    parts = {}
    for name, w in model.params.items():
        parts[part_of(name)] = parts.get(part_of(name), 0) + int(w.nbytes)
    start = time.perf_counter()                 # warm-up: the kernels' first calls, text only
    warm_ids = [1] + [int(i) for i in np.random.default_rng(1).integers(3, 2000, PREFILL_CHUNK + 8)]
    next(iter(generate(model, warm_ids, 1)))
    warm_seconds = time.perf_counter() - start
    towers = []
    features = model.image_features

    def timed_features(*args):
        begin = time.perf_counter()
        out = features(*args)
        towers.append(time.perf_counter() - begin)
        return out

    model.image_features = timed_features
    processor, image = Phi3VProcessor.from_pretrained(directory), picture()
    start, cpu = time.perf_counter(), time.process_time()   # the image and prompt to a token
    inputs = processor(PROMPT, [image])
    processed = time.perf_counter()
    ids = inputs["input_ids"][0].tolist()
    token = next(iter(generate(model, ids, 1, pixel_values=inputs["pixel_values"],
                               image_sizes=inputs["image_sizes"])))
    ttft, ttft_cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"load_seconds": load_seconds, "peak_rss_after_load": after_load,
            "weight_bytes": model.weight_bytes(), "part_bytes": parts,
            "warmup_seconds": warm_seconds, "warmup_tokens": len(warm_ids),
            "tokens": len(ids), "image_tokens": sum(i < 0 for i in ids),
            "processor_seconds": processed - start,
            "tower_seconds": sum(towers), "ttft_seconds": ttft, "ttft_cpu_seconds": ttft_cpu,
            "first_token": int(token),
            "prefill_chunk": PREFILL_CHUNK, "peak_rss": peak_rss()}


STAGES = {"float": measure_float, "quantize": measure_quantize, "q4": measure_q4}


def run_stage(stage, directory, out=None) -> dict:
    """One step in a fresh process: its JSON, or {"failed": why}."""
    command = [sys.executable, str(Path(__file__).with_name("load_full_size.py")), "--model",
               "vision", "--stage", stage, "--dir", str(directory)]
    command += [] if out is None else ["--out", str(out)]
    print(f"[{time.strftime('%H:%M:%S')}] {stage} ...", flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == -9:
        why = "killed by signal 9 (out of memory: the kernel's OOM killer)"
    elif result.returncode < 0:
        why = f"killed by signal {-result.returncode}"
    elif result.returncode > 0:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        why = f"exit status {result.returncode}: {last}"
    else:
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"  {r}", flush=True)
        return r
    print(f"  failed: {why}", flush=True)
    return {"failed": why}


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# ---- the report --------------------------------------------------------------------------------
def gb(n) -> str:
    return f"{n / 1e9:.2f} GB"


def machine(note) -> str:
    threads = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                          "NUMBA_NUM_THREADS") if k in os.environ)
    import numba
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return (f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} cores, {ram:.0f} GiB RAM, "
            f"Python "
            f"{platform.python_version()}, NumPy {np.__version__}, Numba {numba.__version__}"
            + (f"; {threads}" if threads else "")
            + (f". {note[:1].upper()}{note[1:].rstrip('.')}." if note else ""))


def cpu_name() -> str:
    """The CPU's model name, and whether the 4-bit kernel runs its AVX-512 VNNI path on it."""
    from _docs import cpu_name as model_name
    from tinyphi3.backends.numba.q4 import has_vnni
    return model_name() + (" with" if has_vnni() else " without") + " AVX-512 VNNI"


def float_rows(f) -> str:
    if "failed" in f:
        return f"| float32 load and forward | not measured: {f['failed']} |\n"
    return f"""| float32 weights in memory | {gb(f['fp32_bytes'])} |
| largest tensor (float32) | {f['largest_tensor_fp32_bytes'] / 1e9:.3f} GB |
| **peak resident memory after loading** | **{gb(f['peak_rss_after_load'])}** |
| peak minus float32 weights | {gb(f['peak_rss_after_load'] - f['fp32_bytes'])} |
| load time | {f['load_seconds']:.0f} s |
| forward pass: {f['crops']} crops, {f['tokens']:,} tokens ({f['image_tokens']:,} image) \
| {f['tower_seconds'] + f['decoder_seconds']:.0f} s: tower and projector \
{f['tower_seconds']:.0f} s, decoder {f['decoder_seconds']:.0f} s (logits finite: \
{f['logits_finite']}){cpu_note(f.get('tower_cpu_seconds', 0) + f['decoder_cpu_seconds']
                               if 'decoder_cpu_seconds' in f else None,
                               f['tower_seconds'] + f['decoder_seconds'])} |
| peak resident memory after the forward pass | {gb(f['peak_rss'])} |
"""


def q4_rows(q, qz) -> str:
    rows = ""
    if "failed" in qz:
        return f"| `tinyphi3 quantize` | failed: {qz['failed']} |\n"
    rows += (f"| `tinyphi3 quantize --block 32` | {qz['seconds']:.0f} s, peak resident memory "
             f"{gb(qz['peak_rss'])} |\n| 4-bit checkpoint on disk | {gb(qz['bytes'])} |\n")
    if "failed" in q:
        return rows + f"| 4-bit load and first token | not measured: {q['failed']} |\n"
    parts = q["part_bytes"]
    return rows + f"""| 4-bit model in memory | {gb(q['weight_bytes'])}: decoder \
{gb(parts.get('decoder', 0))} (4-bit), tower {gb(parts.get('tower', 0))} and projector \
{gb(parts.get('projector', 0))} (float32) |
| **peak resident memory after loading (4-bit)** | **{gb(q['peak_rss_after_load'])}** |
| load time (4-bit) | {q['load_seconds']:.0f} s |
| **time to first token, 4-bit** | **{q['ttft_seconds']:.0f} s** (tower and projector \
{q['tower_seconds']:.0f} s){cpu_note(q.get('ttft_cpu_seconds'), q['ttft_seconds'])} |
| peak resident memory after the first token | {gb(q['peak_rss'])} |
"""


def cpu_note(seconds, wall) -> str:
    """The process's CPU time over a wall-clock time, and how many cores that kept busy."""
    return "" if seconds is None else (f"; {seconds:.0f} s of CPU time, {seconds / wall:.1f} "
                                       f"cores busy on average")


def heading(text, r) -> str:
    return text + (" (quick)" if r.get("quick") else "")


def report(r, note) -> str:
    f, qz, q = r["float"], r["quantize"], r["q4"]
    share = 100 * r["image_side_parameters"] / r["parameters"]
    return f"""{heading(HEADING, r)}

Measured by `python benchmarks/load_full_size.py --model vision` on {machine(note)}

A snapshot of the exact Phi-3-vision-128k-instruct geometry with random weights, written tensor
by tensor in {r['write_seconds']:.0f} s in the published layout: config.json with `img_processor`
and `embd_layer`, {r['tensors']} tensors under their published names, bf16, {r['shards']} shards
+ `model.safetensors.index.json`, and `preprocessor_config.json` with `num_crops` 16. Its LongRoPE
factors are phi-3-mini-128K's (the repository's preset lists, 48 each), not Phi-3-vision's own;
the tokenizer is checkpoints/mini's. The image is a random 1344 x 1344 picture: 4 x 4 crops and
the global view (17 crops), {r['image_tokens']:,} image tokens.

| | |
|---|---|
| parameters | {r['parameters']:,} |
| bytes on disk (bf16) | {gb(r['on_disk'])} |
{float_rows(f)}{q4_rows(q, qz)}
`tinyphi3 quantize` rounds the decoder's matrices to 4 bits exactly as phi-3-mini's and copies the
image side (CLIP tower, separators, projector: {r['image_side_parameters']:,} weights, {share:.1f}%
of the model) as stored, in bf16, bit for bit; loading widens it to float32. Loading, float32 or
4-bit, holds the weights plus the interpreter, libraries and about one tensor in flight.
""" + (f"\nThe float32 model was not loaded: {r['skipped']}\n" if r.get("skipped") else "")


def bench_section(r, note) -> str:
    q, qz = r["q4"], r["quantize"]
    head = f"""{heading(BENCH_HEADING, r)}

`python benchmarks/load_full_size.py --model vision` — the Phi-3-vision-128k-instruct geometry
with random weights (docs/full_size_load.md), quantized by `tinyphi3 quantize --block 32` (the
decoder at 4 bits; tower and projector as stored, float32 in memory). Time to first token: from
the PIL image and the prompt to the first generated token, one run after a warm-up on a
text prompt; it holds the processor (the 17 crops), the tower on 17 crops and the projector, and
the prefill in chunks of {q.get('prefill_chunk', 256)} tokens with the 8-bit KV cache.
Machine: {machine(note)}
"""
    if "failed" in q or "failed" in qz:
        return head + f"\nNot measured: {q.get('failed') or qz.get('failed')}\n"
    prefill = q["ttft_seconds"] - q["processor_seconds"] - q["tower_seconds"]
    return head + f"""
| prompt | on disk | weights in memory | peak memory | processor | tower + projector | \
decoder prefill | **time to first token** |
|---|---|---|---|---|---|---|---|
| {q['tokens']:,} tokens ({q['image_tokens']:,} image) | {gb(qz['bytes'])} | \
{gb(q['weight_bytes'])} | {gb(q['peak_rss'])} | {q['processor_seconds']:.1f} s | \
{q['tower_seconds']:.0f} s | {prefill:.0f} s ({q['tokens'] / prefill:.1f} tokens/s) | \
**{q['ttft_seconds']:.0f} s** |
""" + ("" if "ttft_cpu_seconds" not in q else f"""
Over the time to first token the process used {q['ttft_cpu_seconds']:.0f} s of CPU time, \
{q['ttft_cpu_seconds'] / q['ttft_seconds']:.1f} cores busy on average.
""")


def main(args):
    if args.stage is not None:
        first_to_go()
        paths = (args.dir, args.out) if args.stage == "quantize" else (args.dir,)
        print(json.dumps(STAGES[args.stage](*paths)))
        return
    directory = Path(args.dir or DEFAULT_DIR)
    quantized = directory.with_name(directory.name + "-q4")
    if quantized.exists():
        raise SystemExit(f"{quantized} exists: remove it first (the run quantizes into it)")
    wrote = not (directory / "model.safetensors.index.json").exists()
    start = time.perf_counter()
    shapes = write_snapshot(directory, args.quick) if wrote else parameter_shapes(
        Phi3Config.from_json_file(directory / "config.json"))
    r = {"write_seconds": time.perf_counter() - start, "tensors": len(shapes),
         "quick": args.quick,
         "image_tokens": tokens_from_grid(4, 4, 2 if args.quick else 12),     # 2,509 full size
         "parameters": sum(int(np.prod(s)) for s in shapes.values()),
         "image_side_parameters": sum(int(np.prod(s)) for n, s in shapes.items()
                                      if n.startswith("model.vision_embed_tokens.")),
         "shards": len(list(directory.glob("model-*.safetensors"))),
         "on_disk": sum(p.stat().st_size for p in directory.glob("*.safetensors"))}
    try:
        need, free = 4 * r["parameters"] + MARGIN, available_memory()
        if free < need:
            r["float"] = {"failed": f"{gb(free)} of memory available, the float32 weights and "
                                    f"a margin need {gb(need)}"}
            r["skipped"] = r["float"]["failed"]
        else:
            r["float"] = run_stage("float", directory)
        r["quantize"] = run_stage("quantize", directory, quantized)
        r["q4"] = (run_stage("q4", quantized) if "failed" not in r["quantize"]
                   else {"failed": "no 4-bit checkpoint"})
        if "image_tokens" in r["float"]:
            r["image_tokens"] = r["float"]["image_tokens"]
        directory.with_name(directory.name + ".json").write_text(json.dumps(r, indent=2))
        from _docs import write_section
        write_section(Path(args.out), heading(HEADING, r), report(r, args.note))
        write_section(Path(args.benchmarks), heading(BENCH_HEADING, r),
                      bench_section(r, args.note))
        print(report(r, args.note))
        print(bench_section(r, args.note))
    finally:
        if not args.keep:
            shutil.rmtree(quantized, ignore_errors=True)
            if wrote:
                shutil.rmtree(directory, ignore_errors=True)
