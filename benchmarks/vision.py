"""The CLIP vision tower of phi-3-vision on the CPU: tinyphi3 against transformers, same weights.

The published tower, CLIP ViT-L/14-336 (303.5 M parameters, 577 positions), with random weights
in float32, on one crop and on a 17-crop image (16 crops and the global view, Phi-3-vision's
num_crops = 16). Four sides, in the same run, on the same weights and pixels:

  tinyphi3 numpy         clip_features on the "numpy" backend: the reference, NumPy's BLAS
  tinyphi3 numba         clip_features on the "numba" backend (its fused masked softmax)
  transformers, all layers      CLIPVisionModel, output_hidden_states=True, then
                                hidden_states[-2][:, 1:]: as phi-3-vision's published code runs
                                it (all 24 layers and post_layernorm, the last layer's output
                                thrown away)
  transformers, layers needed   the same class built with the 23 layers that the features need
                                (as vLLM builds it): the same work as tinyphi3's clip_features

tinyphi3 runs 23 layers: the features are the output of the last layer but one. PyTorch runs in
float32 with its default attention (SDPA) and as many threads as NumPy's BLAS and Numba
(--threads, default all cores). Each side is warmed up on one crop; a time is the median of
--runs runs, the sides taking turns within each run so that a change in the machine's load falls
on all of them alike. The features of every side are compared with tinyphi3 numpy's.

    python benchmarks/vision.py [--crops 1,17] [--runs 3] [--threads 2] [--out docs/benchmarks.md]
    python benchmarks/vision.py --quick       # a small tower (width 128, 4 layers): seconds
"""

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

THREADS = next((a.split("=")[1] for a in sys.argv if a.startswith("--threads=")), None) or (
    sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else str(os.cpu_count()))
for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMBA_NUM_THREADS"):
    os.environ[variable] = THREADS                # before NumPy, Numba and PyTorch start

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from tinyphi3.backends import use_backend
from tinyphi3.config.vision import CLIP_VIT_L14_336, ClipConfig
from tinyphi3.models.vision.clip import clip_features, init_clip_weights

QUICK = ClipConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                   num_attention_heads=4, image_size=112, patch_size=14, layer_norm_eps=1e-5)
SIDES = ("tinyphi3 numpy", "tinyphi3 numba", "transformers, all layers",
         "transformers, layers needed")
HEADING = "## Vision tower: CLIP ViT-L/14-336"


def tower_flops(config: ClipConfig, layers: int, crops: int) -> int:
    """Floating-point operations (a multiply-add is 2) of the patch embedding and `layers`
    layers on `crops` crops: per layer and token 4 C^2 (q, k, v, out) + 2 C I (fc1, fc2)
    multiply-adds, and 2 T C for attention's two products over the T x T scores."""
    T, C, I = config.num_positions, config.hidden_size, config.intermediate_size
    patches = 2 * config.grid ** 2 * config.num_channels * config.patch_size ** 2 * C
    layer = 2 * T * (4 * C * C + 2 * C * I) + 2 * 2 * T * T * C
    return crops * (patches + layers * layer)


def torch_tower(config: ClipConfig, weights: dict, layers: int):
    """transformers' CLIPVisionModel with `layers` layers, built on the meta device and given
    tinyphi3's arrays without a copy (torch.from_numpy shares their memory)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel
    hf_config = CLIPVisionConfig(
        hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=layers, num_attention_heads=config.num_attention_heads,
        image_size=config.image_size, patch_size=config.patch_size,
        layer_norm_eps=config.layer_norm_eps, hidden_act=config.hidden_act)
    with torch.device("meta"):
        model = CLIPVisionModel(hf_config)
    keep = [f"encoder.layers.{n}." for n in range(layers)]
    state = {n: torch.from_numpy(w) for n, w in weights.items()
             if not n.startswith("encoder.layers.") or n.startswith(tuple(keep))}
    model.load_state_dict(state, assign=True, strict=True)
    positions = torch.arange(config.num_positions).expand((1, -1))   # a buffer, not a weight:
    model.embeddings.register_buffer("position_ids", positions, persistent=False)   # off meta
    return model.eval()


def make_sides(config: ClipConfig, weights: dict) -> dict:
    """Each side as a function: pixels [N, 3, S, S] float32 -> features [N, G*G, C] (NumPy)."""
    import torch
    full = torch_tower(config, weights, config.num_hidden_layers)
    short = torch_tower(config, weights, config.num_hidden_layers - 1)

    def tinyphi3(backend):
        def run(pixels):
            with use_backend(backend):
                return clip_features(pixels, weights, config)
        return run

    @torch.inference_mode()
    def transformers_all(pixels):
        out = full(pixel_values=torch.from_numpy(pixels), output_hidden_states=True)
        return out.hidden_states[-2][:, 1:].numpy()

    @torch.inference_mode()
    def transformers_needed(pixels):
        return short(pixel_values=torch.from_numpy(pixels)).last_hidden_state[:, 1:].numpy()

    return dict(zip(SIDES, (tinyphi3("numpy"), tinyphi3("numba"), transformers_all,
                            transformers_needed)))


def median_seconds(sides: dict, pixels, runs: int) -> dict:
    """Median seconds of each side on `pixels`, the sides taking turns within each run."""
    times = {name: [] for name in sides}
    for _ in range(runs):
        for name, run in sides.items():
            start = time.perf_counter()
            run(pixels)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(spent) for name, spent in times.items()}


def describe_machine() -> str:
    import numba
    import torch
    import transformers
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    from _docs import cpu_name
    cpu = cpu_name()
    return (f"{cpu} ({platform.machine()}, {os.cpu_count()} cores), {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, NumPy {np.__version__} "
            f"(BLAS: {blas.get('name', '?')} {blas.get('version', '')}, {THREADS} threads), "
            f"Numba {numba.__version__} ({numba.get_num_threads()} threads), PyTorch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), transformers "
            f"{transformers.__version__}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", default="1,17", help="crops per forward, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for NumPy's BLAS, Numba and PyTorch alike")
    parser.add_argument("--quick", action="store_true",
                        help="a small tower (width 128, 4 layers, 112-pixel crops) instead of "
                             "ViT-L/14-336, to check the script in seconds")
    parser.add_argument("--out", default=None,
                        help="also write the section into this Markdown file (replacing a "
                             "section of the same heading, else appending it)")
    parser.add_argument("--note", default="", help="a sentence on the conditions of the run")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    torch.set_num_threads(int(THREADS))
    config = QUICK if args.quick else CLIP_VIT_L14_336
    crop_counts = [int(n) for n in args.crops.split(",")]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    weights = init_clip_weights(config, rng)                 # normal(0, 0.02), LayerNorms at 1
    sides = make_sides(config, weights)
    S = config.image_size
    print(f"{sum(w.size for w in weights.values()):,} weights made in "
          f"{time.perf_counter() - start:.1f} s", flush=True)

    warm = rng.standard_normal((1, 3, S, S), dtype=np.float32)
    reference = None
    worst = {}
    for name, run in sides.items():                          # warm-up, and the features compared
        features = run(warm)
        reference = features if reference is None else reference
        scale = max(1.0, float(np.abs(reference).max()))
        worst[name] = float(np.abs(features - reference).max()) / scale
    print("features against tinyphi3 numpy (max |difference| / max(1, max |value|)): "
          + ", ".join(f"{name} {error:.1e}" for name, error in worst.items()), flush=True)
    assert all(error < 1e-3 for error in worst.values()), worst

    rows = []
    for crops in crop_counts:
        pixels = rng.standard_normal((crops, 3, S, S), dtype=np.float32)
        seconds = median_seconds(sides, pixels, args.runs)
        base = seconds["transformers, all layers"]
        for name in SIDES:
            layers = config.num_hidden_layers - (0 if name == "transformers, all layers" else 1)
            flops = tower_flops(config, layers, crops)
            rows.append(f"| {crops} | {name} | {layers} | {seconds[name]:,.3f} | "
                        f"{seconds[name] / crops * 1e3:,.1f} | "
                        f"{flops / seconds[name] / 1e9:,.1f} | {base / seconds[name]:.2f}x |")
            print(rows[-1], flush=True)

    tower = ("a small tower for checking the script (--quick): " if args.quick else "") + (
        f"{config.grid} x {config.grid} patches of {config.patch_size} pixels "
        f"({config.num_positions} positions), width {config.hidden_size}, "
        f"{config.num_hidden_layers} layers, {config.num_attention_heads} heads, MLP "
        f"{config.intermediate_size}")
    heading = HEADING + (" (quick)" if args.quick else "")
    command = shlex.join(["python", "benchmarks/vision.py", *(argv if argv is not None
                                                               else sys.argv[1:])])
    section = f"""{heading}

`{command}` — {tower}; random weights, float32, crops of random pixels. tinyphi3's
`clip_features` (the output of the last layer but one, class token dropped: what phi-3-vision
uses) on its numpy and numba backends, against transformers' `CLIPVisionModel` (PyTorch,
default SDPA attention) run as the published phi-3-vision code runs it (every layer, then
`hidden_states[-2]`) and built with only the layers the features need. Seconds per forward,
median of {args.runs} run(s) after a warm-up, the sides taking turns; GFLOP/s counts each side's
own work (patch embedding, matrix products and attention of the layers it runs). Features of
every side within {max(worst.values()):.0e} of tinyphi3 numpy's (relative). Machine:
{describe_machine()}. {args.note}

| crops | side | layers | seconds | ms per crop | GFLOP/s | vs transformers (all layers) |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    print()
    print(section)
    if args.out:
        from _docs import write_section
        write_section(Path(args.out), heading, section)
    return section


if __name__ == "__main__":
    main()
