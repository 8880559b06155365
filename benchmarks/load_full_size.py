"""Load a full-size snapshot (bf16, 2 shards) with random weights and measure memory and time.

--model mini (the default): phi-3-mini-4k, 3.82 B parameters. Writes a snapshot with random
weights in the published layout (bf16, `model-0000K-of-00002` shards + index), generating each
tensor only when its bytes are written, then loads it in a fresh process with
`Phi3.from_pretrained` and reports peak resident memory against the size of the float32 weights:
loading tensor by tensor should need the float32 model plus about one tensor, not a second full
copy. Finally runs one short forward pass on the loaded model.

    python benchmarks/load_full_size.py --dir /tmp/phi3-mini-random --out docs/full_size_load.md

--model vision: Phi-3-vision-128k-instruct, 4.15 B parameters (see load_full_size_vision.py):
the same for the float32 model with one forward pass of a 17-crop image, then `tinyphi3
quantize` (block 32) and the 4-bit model's memory and time to first token.

    python benchmarks/load_full_size.py --model vision [--keep]
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from tinyphi3.config import preset
from tinyphi3.models.weights import parameter_shapes
from tinyphi3.io.safetensors import write_safetensors


def write_snapshot(directory: Path, shards: int = 2, seed: int = 0):
    config = preset("phi-3-mini-4k")
    shapes = parameter_shapes(config)
    names = list(shapes)
    per_shard = -(-len(names) // shards)
    rng = np.random.default_rng(seed)

    def make(shape, is_norm):
        def produce():
            if is_norm:
                return np.ones(shape, ml_dtypes.bfloat16)
            return (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
        return produce

    directory.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for k in range(shards):
        filename = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        chunk = names[k * per_shard:(k + 1) * per_shard]
        write_safetensors(directory / filename,
                          [(n, ml_dtypes.bfloat16, shapes[n], make(shapes[n], "norm" in n))
                           for n in chunk], {"format": "pt"})
        weight_map.update({n: filename for n in chunk})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config.save(directory / "config.json")


def load_and_measure(directory: str):
    """Runs in a fresh process: load, report peak RSS, run a forward pass."""
    from tinyphi3.models.model import Phi3
    start = time.perf_counter()
    model = Phi3.from_pretrained(directory)
    load_seconds = time.perf_counter() - start
    peak_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fp32_bytes = sum(a.nbytes for a in model.params.values())
    largest = max(a.nbytes for a in model.params.values())
    start = time.perf_counter()
    logits = model(np.array([[1, 450, 3303, 310, 2023, 338, 263, 1243]]))
    forward_seconds = time.perf_counter() - start
    print(json.dumps({"parameters": model.num_parameters(), "fp32_bytes": fp32_bytes,
                      "largest_tensor_fp32_bytes": largest, "peak_rss_after_load": peak_after_load,
                      "load_seconds": load_seconds, "forward_8_tokens_seconds": forward_seconds,
                      "logits_finite": bool(np.isfinite(logits).all())}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mini", "vision"], default="mini")
    parser.add_argument("--dir", default=None, help="snapshot directory (default: /tmp/phi3-mini-"
                                                    "random or /tmp/phi3-vision-random)")
    parser.add_argument("--out", default="docs/full_size_load.md")
    parser.add_argument("--benchmarks", default="docs/benchmarks.md",
                        help="vision: where the time-to-first-token section goes")
    parser.add_argument("--keep", action="store_true",
                        help="vision: keep the snapshots this run wrote (default: delete them)")
    parser.add_argument("--note", default="", help="vision: a line about the machine's state")
    parser.add_argument("--quick", action="store_true",
                        help="vision: a tiny model of the same layout, to check the script")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model == "vision":
        import load_full_size_vision
        return load_full_size_vision.main(args)
    args.dir = args.dir or "/tmp/phi3-mini-random"
    if args.measure:
        return load_and_measure(args.dir)
    directory = Path(args.dir)
    start = time.perf_counter()
    if not (directory / "model.safetensors.index.json").exists():
        write_snapshot(directory)
    write_seconds = time.perf_counter() - start
    on_disk = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    result = subprocess.run([sys.executable, __file__, "--dir", str(directory), "--measure"],
                            check=True, capture_output=True, text=True)
    r = json.loads(result.stdout.strip().splitlines()[-1])
    gb = 1e9
    report = f"""# Loading a full-size phi-3-mini snapshot

Measured by `python benchmarks/load_full_size.py` on {platform.machine()}, {os.cpu_count()} cores,
{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, Python {platform.python_version()}, NumPy {np.__version__}.

A snapshot of the exact phi-3-mini-4k geometry with random weights, in the published layout
(bf16, 2 shards + `model.safetensors.index.json`), written tensor by tensor in {write_seconds:.0f} s.

| | |
|---|---|
| parameters | {r['parameters']:,} |
| bytes on disk (bf16) | {on_disk / gb:.2f} GB |
| float32 weights in memory | {r['fp32_bytes'] / gb:.2f} GB |
| largest tensor (float32) | {r['largest_tensor_fp32_bytes'] / gb:.3f} GB |
| **peak resident memory after loading** | **{r['peak_rss_after_load'] / gb:.2f} GB** |
| peak minus float32 weights | {(r['peak_rss_after_load'] - r['fp32_bytes']) / gb:.2f} GB |
| load time | {r['load_seconds']:.0f} s |
| forward pass, 8 tokens | {r['forward_8_tokens_seconds']:.1f} s (logits finite: {r['logits_finite']}) |

Two full copies (bf16 file contents plus float32 weights) would be
{(on_disk + r['fp32_bytes']) / gb:.2f} GB; tensor-by-tensor loading stays at the float32 weights
plus the interpreter, libraries and about one tensor in flight.
"""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rest = out.read_text() if out.exists() else ""
    rest = rest[rest.index("\n## "):] if "\n## " in rest else ""   # other models' sections
    out.write_text(report + rest)
    print(report)


if __name__ == "__main__":
    main()
