"""`tinyphi3 longrope`: a plain-RoPE checkpoint made to read longer texts, without retraining.

    extend   one method's factors (pi, ntk, yarn, longrope's starting point) in a new config.json
    search   LongRoPE's evolutionary search of per-frequency factors on held-out long text

Both write a checkpoint directory: the source's weights and tokenizer files copied byte for byte,
and a config.json in Phi-3-mini-128K's layout (tinyphi3.nn.rope_scaling), which transformers'
Phi3 loads too.
"""

import json
import shutil
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from tinyphi3.cli.options import backend_option
from tinyphi3.data.documents import read_documents
from tinyphi3.errors import InvalidInputError
from tinyphi3.io import checkpoint
from tinyphi3.nn import rope_scaling

NOT_COPIED = ("config.json", "search.json")       # written anew
NOT_COPIED_SUFFIXES = (".md", ".png")             # the source's model card and its pictures


def write_extended_checkpoint(src, out, config, files=None) -> None:
    """Copy checkpoint `src` to `out` with `config` as its config.json, and `files`
    ({name: JSON-able object}) beside it. Keys of the source's config.json that the config does
    not write (torch_dtype, quantization_config, ...) are kept. `out` appears only when
    complete."""
    src, out = Path(src), checkpoint.check_new_directory(out)
    original = json.loads((src / "config.json").read_text(encoding="utf-8"))
    written = config.to_dict()
    for key, value in original.items():
        if key not in written and key != "rope_parameters":
            written[key] = value
    with checkpoint.staged_directory(out) as tmp:
        for f in sorted(src.iterdir()):
            if f.is_file() and f.name not in NOT_COPIED and f.suffix not in NOT_COPIED_SUFFIXES:
                shutil.copy2(f, tmp / f.name)
        (tmp / "config.json").write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
        for name, value in (files or {}).items():
            (tmp / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def long_documents(tokenizer, texts, length, limit, path="the text file") -> list:
    """The first `limit` texts of at least `length` tokens, cut to their first `length` ids."""
    docs, longest = [], 0
    for text in texts:
        ids = tokenizer.encode(text)
        longest = max(longest, len(ids))
        if len(ids) >= length:
            docs.append(np.asarray(ids[:length], dtype=np.int64))
            if len(docs) == limit:
                break
    if not docs:
        raise InvalidInputError(f"{path}: none of its {len(texts)} documents has {length} tokens "
                                f"(the longest has {longest}); give longer texts or a smaller "
                                f"--length")
    return docs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def longrope():
    """Extend a model's context without retraining: position interpolation, NTK-aware scaling,
    YaRN, or LongRoPE's searched per-frequency factors (the Phi-3 report §2).

    Every method is written as Phi-3-mini-128K's config.json: one rescale factor per RoPE
    frequency, inv_freq[i] = 1 / (factor[i] * theta^(2i/d)), a magnitude on cos and sin, and
    original_max_position_embeddings = the length the model was trained at.

    \b
    Example:
      tinyphi3 longrope extend --ckpt checkpoints/mini --method yarn --length 4096 --out mini-yarn
      tinyphi3 longrope search --ckpt checkpoints/mini --text long.jsonl --length 4096 \\
          --out mini-4k
    """


@longrope.command()
@click.option("--ckpt", required=True, type=click.Path(file_okay=False),
              help="Plain-RoPE checkpoint to extend.")
@click.option("--method", required=True, type=click.Choice(rope_scaling.METHODS),
              help="pi: every frequency slowed by s (positions interpolated); ntk: a larger base, "
                   "theta s^(d/(d-2)); yarn: fast frequencies kept, slow ones interpolated, a "
                   "ramp between, magnitude 0.1 ln s + 1; longrope: pi's factors with LongRoPE's "
                   "magnitude sqrt(1 + ln s / ln L0), the search's starting point.")
@click.option("--length", required=True, type=int,
              help="Target context in tokens; s = LENGTH / the trained context.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory to write; must not exist yet (or be empty).")
def extend(ckpt, method, length, out):
    """Write a copy of a checkpoint whose config.json runs it at --length tokens by one of the
    baseline methods. The weights are copied unchanged; sequences up to the trained length keep
    their angles (short_factor is all ones).

    \b
    Example:
      tinyphi3 longrope extend --ckpt checkpoints/mini --method ntk --length 4096 --out mini-ntk
    """
    config = rope_scaling.extend_config(checkpoint.load_config(ckpt), method, length)
    checkpoint.check_new_directory(out)
    write_extended_checkpoint(ckpt, out, config)
    s = length / config.original_max_position_embeddings
    click.echo(f"wrote {out}: {method}, {config.original_max_position_embeddings} -> {length} "
               f"tokens (s = {s:g}), magnitude {config.longrope_attention_factor:.4f}")


@longrope.command()
@backend_option
@click.option("--ckpt", required=True, type=click.Path(file_okay=False),
              help="Plain-RoPE checkpoint to extend.")
@click.option("--text", "text_file", required=True, type=click.Path(dir_okay=False),
              help='Held-out long texts: a .jsonl file, one {"text": "..."} per line (or a .txt '
                   "file, documents separated by <|endoftext|> lines).")
@click.option("--length", required=True, type=int, help="Target context in tokens.")
@click.option("--docs", "n_docs", type=click.IntRange(min=1), default=4, show_default=True,
              help="Documents scored per candidate: the first ones with at least LENGTH tokens.")
@click.option("--population", type=click.IntRange(min=4), default=16, show_default=True,
              help="Candidates alive at once; each generation replaces the worse half.")
@click.option("--generations", type=click.IntRange(min=0), default=8, show_default=True,
              help="Rounds of mutation and crossover.")
@click.option("--ceiling", type=click.FloatRange(min=1.0), default=1.25, show_default=True,
              help="Largest factor, in units of s.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Documents per forward pass.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same search.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory to write; must not exist yet (or be empty).")
def search(ckpt, text_file, length, n_docs, population, generations, ceiling, batch_size, seed,
           out):
    """Search LongRoPE's long factors for --length tokens by evolution, minimising the
    perplexity of held-out documents of that length, and write the checkpoint that uses them.

    First the baselines are scored (plain RoPE, pi, ntk, yarn and longrope's start); then the
    first population (pi's, ntk's and yarn's factors and mutations of them) and the generations.
    Every candidate keeps the paper's constraints: factors between 1 and CEILING x s, never
    decreasing from fast frequencies to slow ones. The progress bar ticks once per candidate
    scored, each a forward pass over every document.

    --out receives the weights unchanged with config.json in the 128K layout carrying the found
    long_factor, and search.json: the baselines' perplexities, the best per generation and the
    factors.

    \b
    Example:
      tinyphi3 longrope search --ckpt checkpoints/mini --text long.jsonl --length 4096 \\
          --population 16 --generations 8 --seed 0 --out mini-4k
    """
    from tinyphi3.cli.options import load_model_and_tokenizer
    from tinyphi3.train import longrope_search
    config = rope_scaling.extend_config(checkpoint.load_config(ckpt), "longrope", length)
    checkpoint.check_new_directory(out)
    texts = [doc["text"] for doc in read_documents(text_file)]
    model, tokenizer = load_model_and_tokenizer(ckpt)
    docs = long_documents(tokenizer, texts, length, n_docs, text_file)
    total = len(rope_scaling.METHODS) + 1 + longrope_search.evaluations(population, generations)
    with tqdm(total=total, unit="candidate", desc="baselines") as bar:
        def scored(method, ppl):
            bar.set_postfix_str(f"{method} ppl {ppl:.3f}")
            bar.update(1)

        def tick(best):
            bar.set_postfix_str(f"best ppl {best:.3f}")
            bar.update(1)

        baselines = longrope_search.baseline_perplexities(model, docs, length, batch_size, scored)
        bar.set_description("searching")
        result = longrope_search.search_long_factors(
            model, docs, length, population, generations, seed, ceiling, batch_size, tick)
    L0 = config.original_max_position_embeddings
    config = rope_scaling.extend_config(model.config, "longrope", length, result.long_factor)
    report = {"checkpoint": str(ckpt), "text": str(text_file), "documents": len(docs),
              "length": length, "original_length": L0, "scale": length / L0,
              "population": population, "generations": generations, "seed": seed,
              "ceiling": ceiling, "baselines": baselines, "seeds": result.seeds,
              "best_per_generation": result.history, "perplexity": result.perplexity,
              "long_factor": result.long_factor,
              "attention_factor": config.longrope_attention_factor}
    write_extended_checkpoint(ckpt, out, config, {"search.json": report})
    names = {"none": "plain RoPE", "longrope": "longrope (start)"}
    for name, ppl in baselines.items():
        click.echo(f"{names.get(name, name):>16}  perplexity {ppl:10.3f}")
    click.echo(f"{'longrope (found)':>16}  perplexity {result.perplexity:10.3f}")
    click.echo(f"wrote {out}: long_factor {', '.join(f'{f:g}' for f in result.long_factor)} "
               f"(magnitude {config.longrope_attention_factor:.4f}); search.json beside it")
