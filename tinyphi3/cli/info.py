"""What a checkpoint is and what it costs: architecture, parameters, bytes, memory; and a fresh
random checkpoint to start from."""

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import click

from tinyphi3.cli.options import DEFAULT_CKPT
from tinyphi3.errors import ConfigError
from tinyphi3.io import checkpoint
from tinyphi3.quant import checkpoint as quant_checkpoint
from tinyphi3.config import PHI3SMALL_PRESETS, PRESETS, preset
from tinyphi3.models.model import Phi3
from tinyphi3.models.weights import parameter_shapes
from tinyphi3.quant.q4 import bits_per_weight

Q4_BLOCK = 32                # the block `info` prices a 4-bit copy at (tinyphi3 quantize's default)


def human_bytes(n) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000


def describe_checkpoint(path) -> str:
    """A few lines describing a checkpoint, read from config.json and the safetensors headers."""
    config = checkpoint.load_config(path)
    index = checkpoint.tensor_index(path)
    if config.vision is not None:                        # phi-3-vision: the tower and projector too
        from tinyphi3.models.vision.phi3v import stored_shapes
        shapes, ignored = stored_shapes(config, index)
    else:
        shapes, ignored = parameter_shapes(config), checkpoint.tied_copies(config)
    index = {n: f for n, f in index.items() if n not in ignored}
    qc = quant_checkpoint.quantization_config(path)
    if qc is None:
        checkpoint.check_tensors(index, shapes)
    else:
        checkpoint.check_tensors(index, *quant_checkpoint.expected_tensors(shapes, qc))
    files = {f.path for f in index.values()}
    on_disk = sum(p.stat().st_size for p in files)
    dtypes = sorted({f.dtype(n) for n, f in index.items()})
    n_params = sum(math.prod(s) for s in shapes.values())
    c = config
    rope = f"RoPE theta {c.rope_theta:g}"
    if c.rope_scaling is not None:
        short, long = c.longrope_magnitude(False), c.longrope_magnitude(True)
        magnitude = (f"magnitude {long:.4f}" if short == long
                     else f"magnitude {short:.4f} short, {long:.4f} long")
        rope += f", LongRoPE (original context {c.original_max_position_embeddings}, {magnitude})"
    window = f", sliding window {c.sliding_window}" if c.sliding_window else ""
    kv_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4
    variant = ("phi-3-small decoder (GEGELU, muP; dense attention on one layer in "
               f"{c.dense_attention_every_n_layers}, block-sparse on the others: blocks of "
               f"{c.blocksparse_block_size}, {c.blocksparse_num_local_blocks} local, stride "
               f"{c.blocksparse_vert_stride})" if c.is_phi3small else "Phi-3 decoder")
    if c.vision is not None:
        variant = "Phi-3-vision: " + variant
    rows = [
        ("checkpoint", str(path)),
        ("architecture", f"{variant}: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
                         f"{c.num_attention_heads} heads ({c.num_key_value_heads} KV heads, "
                         f"head dim {c.head_dim}), MLP {c.intermediate_size}, "
                         f"vocab {c.vocab_size}"),
        ("positions", f"context {c.max_position_embeddings} tokens, {rope}{window}"),
        ("parameters", f"{n_params:,} ({human_count(n_params)})"),
        ("on disk", f"{human_bytes(on_disk)} ({', '.join(dtypes)}, {len(files)} file(s))"
                    + ("" if qc is None else
                       f"; 4-bit weights, blocks of {qc['block_size']}, {qc['scheme']} "
                       f"({bits_per_weight(int(qc['block_size']), qc['scheme']):g} bits/weight), "
                       f"norms and biases float32" + "".join(
                           f"; {m}.* kept as stored" for m in
                           qc.get("modules_to_not_convert", [])))),
        ("memory", f"fp32 {human_bytes(4 * n_params)} · bf16 {human_bytes(2 * n_params)} · "
                   f"4-bit {human_bytes(n_params * bits_per_weight(Q4_BLOCK) / 8)} "
                   f"({bits_per_weight(Q4_BLOCK):g} bits/weight: 4-bit values + an fp16 scale "
                   f"per {Q4_BLOCK})"),
        ("KV cache", f"{human_bytes(kv_per_token)} per token at fp32 "
                     f"({human_bytes(kv_per_token * c.max_position_embeddings)} at full context)"),
    ]
    if c.vision is not None:
        rows[3:3] = vision_rows(path, c, shapes)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def vision_rows(path, config, shapes) -> list:
    """What a phi3_v checkpoint adds to the decoder: the CLIP tower, the crops and their tokens
    (num_crops from preprocessor_config.json), the projector; and their share of parameters."""
    from tinyphi3.models.vision.hd_transform import ImageProcessor, hd_grid, tokens_from_grid
    from tinyphi3.models.vision.phi3v import VISION
    v, D = config.vision, config.hidden_size
    clip, C4 = v.clip, 4 * v.image_dim_out
    L, G, g = clip.num_hidden_layers, clip.grid, clip.grid // 2
    state = v.layer_idx % (L + 1)                     # hidden_states has L + 1 entries
    feature = ("the embeddings (hidden state 0)" if state == 0 else
               f"the output of layer {state} of {L}")
    crops, source = 1, "the class default: no preprocessor_config.json, which chat needs"
    file = Path(path) / "preprocessor_config.json"
    if file.is_file():
        try:
            processor = ImageProcessor.from_dict(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError,
                AttributeError) as err:
            raise ConfigError(f"cannot read {file}: {err}") from None
        crops, source = processor.num_crops, "preprocessor_config.json"
        if processor.crop_size != clip.image_size or processor.patch_size != clip.patch_size:
            source += (f"; its crop {processor.crop_size} / patch {processor.patch_size} differ "
                       f"from the tower's {clip.image_size} / {clip.patch_size}!")
    h_c, w_c = hd_grid(clip.image_size, clip.image_size, crops, clip.image_size)[:2]
    tower = sum(math.prod(s) for n, s in shapes.items() if n.startswith(VISION + "img_processor."))
    head = sum(math.prod(s) for n, s in shapes.items() if n.startswith(VISION)) - tower
    return [
        ("vision tower", f"CLIP ViT: {L} layers, width {clip.hidden_size}, "
                         f"{clip.num_attention_heads} heads, MLP {clip.intermediate_size}, "
                         f"{clip.hidden_act}; crop S {clip.image_size} px, patch P "
                         f"{clip.patch_size} px ({G} x {G} patches); features: layer_idx "
                         f"{v.layer_idx}, {feature}; {tower:,} parameters"),
        ("image tokens", f"num_crops {crops} ({source}); g² = {g * g} tokens per crop (g = {g} "
                         f"a side after the 2x2 merge); a square image: {h_c} x {w_c} crops and "
                         f"the global view, {tokens_from_grid(h_c, w_c, g)} tokens"),
        ("projector", f"Linear {C4} -> {D}, GELU, Linear {D} -> {D} (4C = {C4}: 2x2-merged "
                      f"features); separators sub_GN, glb_GN [{C4}]; {head:,} parameters"),
    ]


def human_count(n) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


STARTER_CORPUS_DOCUMENTS = 150         # synthetic textbook pages (seed 0): about 136 KB of text


def starter_corpus() -> str:
    """A fixed English text to train a starter tokenizer on when no tokenizer is given: the first
    synthetic textbook pages of tinyphi3's closed world (tinyphi3.data.textbooks, seed 0). It is
    made by code, so it does not change when the package's files move or their comments do."""
    from tinyphi3.data.textbooks import generate_textbooks
    return "\n\n".join(generate_textbooks(STARTER_CORPUS_DOCUMENTS, seed=0))


def init_checkpoint(preset_name, out, tokenizer_dir=None, seed=0, dtype="float32"):
    """Write a random `preset_name` model plus a tokenizer (copied, or trained on
    `starter_corpus()` with a base vocabulary that fits the model's embedding)."""
    from tinyphi3.tokenizers import load_tokenizer
    from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer
    config = preset(preset_name)
    out = Path(out)
    if tokenizer_dir is not None:
        tok = load_tokenizer(tokenizer_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "textbooks.txt"
            corpus.write_text(starter_corpus(), encoding="utf-8")
            base = min(config.vocab_size - 64, 1000)
            tok = train_tokenizer([corpus], Path(tmp) / "tok", base)
    if tok.vocab_size > config.vocab_size:
        raise checkpoint.CheckpointError(f"tokenizer has {tok.vocab_size} tokens but preset "
                                         f"{preset_name} only {config.vocab_size}")
    config = config.replace(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id)
    Phi3(config, seed=seed).save_pretrained(out, dtype=dtype)
    tok.save_pretrained(out)
    return out


# ---- the commands -----------------------------------------------------------------------
@click.command()
@click.option("--ckpt", default=DEFAULT_CKPT, show_default=True, help="Checkpoint directory.")
def info(ckpt):
    """Describe a checkpoint without loading its weights: architecture, parameters, sizes.

    \b
    Example:
      tinyphi3 info --ckpt checkpoints/mini
    """
    click.echo(describe_checkpoint(ckpt))


@click.command()
@click.option("--preset", default="tiny", show_default=True,
              type=click.Choice(PRESETS + PHI3SMALL_PRESETS),
              help="The model's configuration (tinyphi3.config.preset).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--tokenizer", "tokenizer_dir", default=None, type=click.Path(file_okay=False),
              help="Tokenizer directory to copy in (default: train a small one).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              default="float32", show_default=True)
def init(preset, out, tokenizer_dir, seed, dtype):
    """Write a randomly initialised model with a tokenizer, ready for `chat` (it answers noise
    until trained).

    \b
    Example:
      tinyphi3 init --preset tiny --out demo && tinyphi3 chat --ckpt demo
    """
    init_checkpoint(preset, out, tokenizer_dir, seed, dtype)
    click.echo(f"wrote a random {preset} model and its tokenizer to {out}")


@click.command()
@click.option("--ckpt", required=True, type=click.Path(file_okay=False),
              help="The trained checkpoint to grow (a phi3 model in float weights).")
@click.option("--layers", type=click.IntRange(min=2), default=None,
              help="Layers of the grown model: a multiple of the checkpoint's.")
@click.option("--hidden-size", type=click.IntRange(min=2), default=None,
              help="Width of the grown model's residual stream: larger than the checkpoint's, "
                   "a multiple of its head size (heads keep their size; there are more).")
@click.option("--intermediate-size", type=click.IntRange(min=1), default=None,
              help="MLP units of the grown model (with --hidden-size; default: the checkpoint's "
                   "ratio to the width).")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the new weights that read the new width (they start reading zeros).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory to write (new or empty).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              default="float32", show_default=True,
              help="Weights on disk; float32 keeps the logits equal (a wider model's norm "
                   "weights are scaled).")
def grow(ckpt, layers, hidden_size, intermediate_size, seed, out, dtype):
    """Write a deeper and/or wider model that computes the same logits as CKPT.

    \b
    --layers: each trained layer is followed by copies of itself whose output projections
      are zero (depth up-scaling).
    --hidden-size: the residual stream, the heads and the MLPs grow; the new parts start
      reading and writing zeros (width up-scaling).

    Training it further starts from everything CKPT knows (tinyphi3.train.grow).

    \b
    Examples:
      tinyphi3 grow --ckpt checkpoints/mini-base --layers 8 --out runs/mini8-init
      tinyphi3 grow --ckpt checkpoints/mini8-stages/refresh --hidden-size 512 --out runs/wide
    """
    from tinyphi3.tokenizers import load_tokenizer
    from tinyphi3.train.grow import deepen, widen
    if intermediate_size is not None and hidden_size is None:
        raise ConfigError("--intermediate-size goes with --hidden-size")
    if layers is None and hidden_size is None:
        raise ConfigError("say how to grow: --layers, --hidden-size, or both")
    checkpoint.check_new_directory(out)
    model = Phi3.from_pretrained(ckpt)
    if model.quantization is not None:
        raise ConfigError(f"{ckpt} holds 4-bit weights; grow its float checkpoint")
    config, params = model.config, model.params
    if layers is not None:
        config, params = deepen(config, params, layers)
    if hidden_size is not None:
        if intermediate_size is None:
            intermediate_size = round(config.intermediate_size * hidden_size / config.hidden_size)
        config, params = widen(config, params, hidden_size, intermediate_size, seed)
    tok = load_tokenizer(ckpt)
    with checkpoint.staged_directory(out) as tmp:
        Phi3(config, params).save_pretrained(tmp, dtype=dtype)
        tok.save_pretrained(tmp)
    old = model.config
    click.echo(f"wrote {out}: {config.num_hidden_layers} layers of width {config.hidden_size} "
               f"({config.num_attention_heads} heads, MLP {config.intermediate_size}) grown from "
               f"{old.num_hidden_layers} of width {old.hidden_size}, the same logits as {ckpt}")


@click.command()
@click.option("--ckpt", "ckpts", multiple=True, required=True,
              type=click.Path(file_okay=False),
              help="A fine-tuned checkpoint to merge; give it once per model.")
@click.option("--weight", "weights", multiple=True, type=float,
              help="The weight of each --ckpt, in their order (default: equal, 1/n).")
@click.option("--base", default=None, type=click.Path(file_okay=False),
              help="The models' common start: it takes the weight the others leave (1 - the sum "
                   "of the weights), which makes the merge task arithmetic. Without it the "
                   "weights must sum to 1.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory to write (new or empty).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              default="float32", show_default=True, help="Weights on disk.")
def merge(ckpts, weights, base, out, dtype):
    """Merge models fine-tuned from one start into one, in weight space:

    \b
      without --base   θ = Σ w_i θ_i                      (the weights sum to 1)
      with --base θ_0  θ = θ_0 + Σ w_i (θ_i − θ_0)        (task arithmetic)

    The models must share the geometry and the tokenizer (checked) and should share the start
    they were fine-tuned from (not checkable): models trained apart average to noise. A weight
    above 1 goes further than the fine-tuning went, a negative one takes it back
    (tinyphi3.train.merge).

    \b
    Examples:
      tinyphi3 merge --ckpt runs/dpo-a/final --ckpt runs/dpo-b/final --out runs/soup
      tinyphi3 merge --base runs/sft/final --ckpt runs/dpo-a/final --weight 1 \\
          --ckpt runs/dpo-b/final --weight 1 --out runs/both-fine-tunings
    """
    from tinyphi3.tokenizers import load_tokenizer
    from tinyphi3.train.images import carry_preprocessor_config
    from tinyphi3.train.merge import merge_params, merge_terms, merge_weights, same_tokenizer
    weights = merge_weights(list(ckpts), list(weights), base)
    checkpoint.check_new_directory(out)
    for path in [*ckpts] + ([base] if base is not None else []):
        checkpoint.load_config(path)                       # a missing or broken one fails first
    first = {}

    def loaded(path):              # the model's weights, loaded only when the merge reaches it
        model = Phi3.from_pretrained(path)
        if model.quantization is not None:
            raise ConfigError(f"{path} holds 4-bit weights; merge float checkpoints")
        if not first:
            first.update(path=path, config=model.config, cls=type(model))
        elif model.config != first["config"]:
            differ = [f"{f.name} {getattr(model.config, f.name)!r} against "
                      f"{getattr(first['config'], f.name)!r}"
                      for f in dataclasses.fields(model.config)
                      if getattr(model.config, f.name) != getattr(first["config"], f.name)]
            raise ConfigError(f"{path} is another model than {first['path']} "
                              f"({'; '.join(differ[:3])}): models merge only within one geometry")
        same_tokenizer(first["path"], path)
        return model.params

    terms = merge_terms(weights, list(ckpts), base)           # (weight, path) pairs
    params = merge_params((w, loaded(path)) for w, path in terms)
    with checkpoint.staged_directory(out) as tmp:
        first["cls"](first["config"], params).save_pretrained(tmp, dtype=dtype)
        load_tokenizer(first["path"]).save_pretrained(tmp)
        carry_preprocessor_config(first["path"], tmp)             # a vision model's crops
    click.echo(f"wrote {out}: " + " + ".join(f"{w:g} x {path}" for w, path in terms))
