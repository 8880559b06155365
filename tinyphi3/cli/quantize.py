"""`tinyphi3 quantize`: a float checkpoint to 4-bit weights, tensor by tensor."""

from pathlib import Path

import click

from tinyphi3.errors import TinyPhi3Error


@click.command()
@click.option("--ckpt", required=True, type=click.Path(file_okay=False),
              help="Float checkpoint to quantize (fp32, bf16 or fp16; single file or shards).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory to write; must not exist yet (or be empty).")
@click.option("--bits", type=int, default=4, show_default=True, help="Bits per weight (4).")
@click.option("--block", type=int, default=32, show_default=True,
              help="Weights per scale: 32, 64 or 128. Smaller blocks are more accurate and "
                   "larger (4.5, 4.25, 4.125 bits/weight).")
@click.option("--scheme", type=click.Choice(["symmetric", "minmax"]), default="symmetric",
              show_default=True,
              help="symmetric: w = d * (q - 8); minmax: w = d * q + min (one more fp16 per block).")
def quantize(ckpt, out, bits, block, scheme):
    """Quantize a checkpoint's weights to 4 bits in blocks, for `chat`, `generate`, `info` and
    `eval` to run directly.

    Every 2-D weight (linear layers, embedding, lm_head) is stored as 4-bit levels with one
    float16 scale (and minimum) per block; norms and biases stay float32. A Phi-3-vision
    checkpoint (phi3_v) has its decoder quantized so, and keeps its image side (the CLIP tower,
    separators and projector) as stored; its preprocessor_config.json is carried over with the
    tokenizer. Tensors are read, quantized and written one at a time, so a 7.6 GB snapshot needs
    memory for one tensor. The output appears only when complete.

    \b
    Example:
      tinyphi3 quantize --ckpt checkpoints/mini --out mini-q4 --bits 4 --block 32
      tinyphi3 chat --ckpt mini-q4 --stats
    """
    from tinyphi3.cli.info import human_bytes
    from tinyphi3.quant.q4 import bits_per_weight, check_options
    from tinyphi3.models.quantize import quantize_checkpoint
    check_options(bits, block, scheme)
    if not Path(ckpt).is_dir():
        raise TinyPhi3Error(f"checkpoint directory {ckpt} not found")
    quantize_checkpoint(ckpt, out, block, scheme)
    size = (Path(out) / "model.safetensors").stat().st_size
    click.echo(f"wrote {out}: {human_bytes(size)}, {bits_per_weight(block, scheme):g} bits per "
               f"quantized weight ({scheme}, blocks of {block})")
