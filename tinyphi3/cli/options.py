"""What several `tinyphi3` commands share: the default checkpoint, loading a model and its
tokenizer, the --backend option and the sampling options."""

from pathlib import Path

import click

from tinyphi3 import backends
from tinyphi3.errors import TinyPhi3Error

DEFAULT_CKPT = "checkpoints/mini"


def _set_backend(ctx, param, value):
    if value is not None:
        backends.set_backend(value)
    return value


backend_option = click.option(
    "--backend", type=click.Choice(backends.backend_names()), default=None, callback=_set_backend,
    expose_value=False, is_eager=True,
    help="numba: the fast CPU kernels (the default where Numba is installed); numpy: the "
         "readable reference, slower; cupy (with the gpu extra: pip install -e \".[gpu]\"): "
         "the model on an NVIDIA GPU, its weights uploaded once.")

dtype_option = click.option(
    "--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
    help="How the weight matrices are held in memory: bfloat16 halves their memory and the bytes "
         "read per token (the maths stays float32). A 4-bit checkpoint stays 4-bit.")


def model_backend():
    """The selected backend when it keeps the weights in its own memory (cupy: the GPU's),
    else None: the model loads on the host."""
    name = backends.get_backend()
    return name if backends.registered(name).upload is not None else None


def load_model_and_tokenizer(ckpt, dtype="float32"):
    """The model and tokenizer of a checkpoint directory, for generating text, on the selected
    backend (the GPU's memory for cupy)."""
    from tinyphi3.models.model import Phi3
    from tinyphi3.tokenizers import load_tokenizer
    path = Path(ckpt)
    if not path.is_dir():
        hint = (" (no model ships there yet: make one with `tinyphi3 init --out DIR`)"
                if ckpt == DEFAULT_CKPT else "")
        raise TinyPhi3Error(f"checkpoint directory {ckpt} not found{hint}")
    tokenizer = load_tokenizer(path)
    model = Phi3.from_pretrained(path, backend=model_backend(), dtype=dtype)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise TinyPhi3Error(f"{ckpt}: tokenizer has {tokenizer.vocab_size} tokens but the model "
                            f"only {model.config.vocab_size}")
    return model, tokenizer


def sampling_options(f):
    """The options shared by `chat` and `generate`."""
    options = [
        backend_option,
        dtype_option,
        click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0,
                     show_default=True,
                     help="0 is greedy decoding; higher values sample more freely."),
        click.option("--top-k", type=click.IntRange(min=1), default=None,
                     help="Sample only among the k most likely tokens."),
        click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
                     help="Sample only among the most likely tokens whose probability sums to p."),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=256,
                     show_default=True, help="Stop after this many generated tokens."),
        click.option("--seed", type=int, default=None, help="Seed for sampling (reproducible)."),
        click.option("--stats", is_flag=True,
                     help="Print prefill and decode speed (tokens/s), the weights' memory and the "
                          "process's peak memory after each answer."),
    ]
    for option in reversed(options):
        f = option(f)
    return f
