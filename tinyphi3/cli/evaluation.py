"""`tinyphi3 eval`: few-shot accuracy of one or more checkpoints on the held-out tasks, as a table
like the report's (rows = tasks with their shots, columns = models); the chat tasks (safety,
wording) and the picture questions of a phi-3-vision checkpoint (vision) as tables of rates; the
long-context tasks (passkey, position-ppl, longchat) as a depth x length grid per model, a table
of perplexity by position and a kind x length table of long chats."""

from pathlib import Path

import click
from tqdm import tqdm

from tinyphi3.cli.data import check_longchat_lengths, check_passkey_lengths, comma_lengths
from tinyphi3.cli.options import backend_option, dtype_option, model_backend

from tinyphi3.data.tasks import TASKS, task_items

CHAT_TASKS = ("safety", "wording", "vision")      # not few-shot: each has its own table
LONG_TASKS = ("passkey", "position-ppl", "longchat")     # long context: not few-shot either


def _task_names(ctx, param, value):
    names = []
    for t in (t.strip() for t in value.split(",")):
        names += list(TASKS) if t == "all" else [t]
    unknown = [t for t in names if t not in (*TASKS, *CHAT_TASKS, *LONG_TASKS)]
    if unknown:
        raise click.BadParameter(f"unknown task {unknown[0]!r}: choose one of "
                                 f"{', '.join(TASKS)}, {', '.join(CHAT_TASKS)}, "
                                 f"{', '.join(LONG_TASKS)}, a comma-separated list, or 'all'")
    return list(dict.fromkeys(names))


def _families(ctx, param, value):
    """--families: the wording families to ask, comma-separated, or 'all'."""
    from tinyphi3.data.wordings import FAMILIES
    names = [f.strip() for f in value.split(",")]
    if names == ["all"]:
        return FAMILIES
    unknown = [f for f in names if f not in FAMILIES]
    if unknown:
        raise click.BadParameter(f"unknown wording family {unknown[0]!r}: choose from "
                                 f"{', '.join(FAMILIES)}, comma-separated, or 'all'")
    return tuple(dict.fromkeys(names))


def _depths(ctx, param, value):
    """--depths: comma-separated fractions from 0 (the key first) to 1 (the key last)."""
    depths = []
    for part in (p.strip() for p in str(value).split(",")):
        try:
            depth = float(part)
        except ValueError:
            depth = -1.0
        if not 0.0 <= depth <= 1.0:
            raise click.BadParameter(f"{part!r} is not a depth: give fractions from 0 (the key "
                                     f"at the start) to 1 (at the end), e.g. 0,0.25,0.5,0.75,1")
        depths.append(depth)
    return depths


@click.command("eval", context_settings={"help_option_names": ["-h", "--help"]})
@backend_option
@dtype_option
@click.option("--ckpt", "ckpts", required=True, multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="Checkpoint directory (model + tokenizer); repeat to compare models side by "
                   "side.")
@click.option("--task", "tasks", default="all", show_default=True, callback=_task_names,
              help=f"{', '.join(TASKS)} (few-shot), safety (chat), wording (chat, held-out "
                   "wordings of tinyphi3.data.wordings), vision (a phi3_v checkpoint: held-out "
                   "pictures of tinyphi3.data.images, with and without the picture), passkey "
                   "(a number hidden at --depths of --lengths tokens), position-ppl "
                   "(perplexity by position on long held-out text, in buckets between "
                   "--lengths), longchat (a fact, pass key, name or number given early in held-out "
                   "chats of --lengths tokens, asked for at the end), a comma-separated list; "
                   "all = the few-shot tasks.")
@click.option("--shots", type=click.IntRange(min=0), default=None,
              help="Solved examples before each question [default: per task, "
                   + ", ".join(f"{t} {spec.default_shots}" for t, spec in TASKS.items())
                   + "; fewer when the context is full].")
@click.option("--n", type=click.IntRange(min=1), default=200, show_default=True,
              help="Held-out test items per task.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Chooses the test items and the few-shot examples.")
@click.option("--pictures", type=click.Choice(["held-out", "trained"]), default="held-out",
              show_default=True,
              help="With --task vision: held-out compositions in held-out wordings (the goal), or "
                   "pictures of trained compositions in trained wordings, to tell a skill not "
                   "learned from a composition not generalised to. With trained, give a --seed "
                   "the training pictures were not drawn with (the shipped model's: 0 and 1).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Prompts per forward pass when scoring multiple choice, and replies "
                   "generated together in the safety and wording tasks (greedy, one batch of "
                   "left-padded prompts; each reply is the one its prompt gets alone).")
@click.option("--chat", is_flag=True,
              help="Chat models: each few-shot prompt is the user's message and the answer is the "
                   "assistant's greedy reply (the format of their fine-tuning); multiple choice "
                   "is scored by the letter the reply names ('... The answer is B.').")
@click.option("--cloze", is_flag=True,
              help="Multiple choice in the cloze formulation: the question without its options, "
                   "each option's text scored as the answer by its log-likelihood (the way small "
                   "models, which cannot yet pick a listed letter, are evaluated). "
                   "Not with --chat.")
@click.option("--families", default="all", show_default=True, callback=_families,
              help="With --task wording: which families to ask, comma-separated (sum, "
                   "difference, outside, harm, kind, greeting, thanks, identity, abilities, "
                   "memory, act-harm, act-kind).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write every result (with each item's record) to this JSON file.")
@click.option("--lengths", default="512,1024,2048,4096", show_default=True,
              callback=comma_lengths,
              help="passkey: the documents' lengths in tokens (the grid's columns); position-ppl: "
                   "the bucket edges (0-512, 512-1024, ...); longchat: the chats' lengths.")
@click.option("--depths", default="0,0.25,0.5,0.75,1", show_default=True, callback=_depths,
              help="passkey: where the key is hidden, 0 = start to 1 = end (the grid's rows).")
@click.option("--per-cell", type=click.IntRange(min=1), default=10, show_default=True,
              help="passkey: held-out documents per (depth, length) cell; longchat: held-out "
                   "chats per (kind, length) cell.")
@click.option("--long-docs", type=click.IntRange(min=1), default=8, show_default=True,
              help="position-ppl: held-out long documents, each cut to the longest length.")
@click.option("--past-context", is_flag=True,
              help="passkey, position-ppl, longchat: run lengths past a checkpoint's context "
                   "(max_position_embeddings) too, with its RoPE extrapolated, instead of "
                   "marking them 'past' (how the unextended mini fails past 512).")
@click.option("--chart", type=click.Path(dir_okay=False), default=None,
              help="Draw a PNG: with safety, the rates of each model as a bar chart; with "
                   "passkey, each model's grid as a heat map, side by side; with position-ppl, "
                   "perplexity by position as lines. Several of them: the task's name is added "
                   "to the file name.")
def eval_command(ckpts, dtype, tasks, shots, n, seed, pictures, batch_size, chat, cloze,
                 families, json_out, lengths, depths, per_cell, long_docs, past_context, chart):
    """Evaluate checkpoints few-shot on held-out tasks, the way the Phi-3 report does.

    Each question follows K solved examples in the report's format (Question: / Options: /
    Answer:) at temperature 0. Multiple choice (knowledge, reasoning) picks the letter with the
    highest log-likelihood (with --chat: the letter the model's reply names); arithmetic
    generates a chain of thought and must end in the exact number. Test items never appear in
    the training textbooks.

    safety answers held-out harmful and benign requests as a chat assistant and reports the
    harmful-compliance and benign-refusal rates and how often answers end with <|end|> (the
    report's Figure 4 in miniature).

    wording asks a chat model in wordings it never saw (every fourth frame of each family of
    tinyphi3.data.wordings is held out): bare sums, requests outside its world, harm in free
    words, greetings, thanks, identity, what it can do, a value from the previous turn, and acts
    of the grammar of tinyphi3.data.acts made only of held-out verbs, things and outcomes; each
    reply judged by a stated rule (tinyphi3/evaluation/wording.py), n prompts per family.

    vision asks a phi-3-vision checkpoint about n held-out pictures per kind (colour, count,
    position, reading, chart; tinyphi3.data.images at the tower's crop size), each in a fresh
    chat, greedy, judged by a stated rule (tinyphi3/evaluation/vision.py); then the same questions
    with a blank picture of the same size (same prompt, nothing to see), and chance. With
    --pictures trained: pictures of trained compositions instead, in trained wordings.

    passkey hides a held-out five-digit key at each of --depths in filler of each of --lengths
    tokens and asks for it at the end; a cell is the % of --per-cell documents whose greedy
    answer is the key, digit for digit (tinyphi3/evaluation/passkey.py). Lengths past a
    checkpoint's context print 'past', unless --past-context. position-ppl is the perplexity of
    --long-docs held-out long documents by the position of the predicted token. longchat asks
    --per-cell held-out long chats of each kind (a story with a question about a fact told early,
    a passkey document, a name or number given in the first turn) at each of --lengths and judges
    the greedy reply by its answer (tinyphi3/evaluation/longchat.py); then the same final
    questions alone, without the long context before them.

    \b
    Example:
      tinyphi3 eval --ckpt checkpoints/mini-base --task all --shots 5
      tinyphi3 eval --ckpt base/ --ckpt sft/ --task knowledge,arithmetic --n 100
      tinyphi3 eval --ckpt checkpoints/mini --task all --chat
      tinyphi3 eval --ckpt base/ --ckpt sft/ --ckpt dpo/ --task safety --chart safety.png
      tinyphi3 eval --ckpt checkpoints/mini --task wording --n 200 --json wording.json
      tinyphi3 eval --ckpt checkpoints/vision --task vision --n 200 --json vision.json
      tinyphi3 eval --ckpt checkpoints/vision --task vision --pictures trained --seed 77
      tinyphi3 eval --ckpt mini/ --ckpt mini-4k/ --task passkey,position-ppl --past-context \\
          --chart long.png
      tinyphi3 eval --ckpt mini-4k/ --task longchat --lengths 1024,2048,3584 --per-cell 10
    """
    import json

    from tinyphi3.data.longdocs import LONG_CHAT_KINDS
    from tinyphi3.evaluation.harness import evaluate_all, format_table
    from tinyphi3.evaluation.longchat import format_longchat_table, longchat_recall
    from tinyphi3.evaluation.passkey import (buckets_between, format_passkey_tables,
                                             format_position_table, heldout_long_ids,
                                             passkey_grid, position_perplexity)
    from tinyphi3.evaluation.safety_eval import evaluate_safety, format_safety_table
    from tinyphi3.evaluation.vision import evaluate_vision, format_vision_table
    from tinyphi3.evaluation.wording import evaluate_wording, format_wording_table
    from tinyphi3.data.images import QUESTION_KINDS
    from tinyphi3.models.model import Phi3
    from tinyphi3.models.vision.processor import Phi3VProcessor
    from tinyphi3.tokenizers import load_tokenizer

    if chat and cloze:
        raise click.UsageError("--cloze scores raw completions of the question; leave out --chat.")
    names = _column_names(ckpts)
    if "vision" in tasks:                       # before any model is loaded or evaluated
        _check_vision_checkpoints(ckpts)
    few_shot = [t for t in tasks if t not in CHAT_TASKS and t not in LONG_TASKS]
    per_model = sum(len(task_items(task, "test", n, seed)) for task in few_shot)  # knowledge <= 640
    per_model += 2 * n if "safety" in tasks else 0
    per_model += len(families) * n if "wording" in tasks else 0
    per_model += 2 * len(QUESTION_KINDS) * n if "vision" in tasks else 0   # picture and blank
    per_model += len(depths) * len(lengths) * per_cell if "passkey" in tasks else 0
    per_model += long_docs if "position-ppl" in tasks else 0
    if "longchat" in tasks:                     # each kind at each length, then alone
        check_longchat_lengths(lengths)
        per_model += 2 * len(LONG_CHAT_KINDS) * len(lengths) * per_cell
    results, safety, wording, vision, passkey, position = {}, {}, {}, {}, {}, {}
    longchat = {}
    with tqdm(total=len(ckpts) * per_model, desc="eval", unit="item") as bar:
        for name, ckpt in zip(names, ckpts):
            model = Phi3.from_pretrained(ckpt, backend=model_backend(), dtype=dtype)
            tokenizer = load_tokenizer(ckpt)
            if few_shot:
                results[name] = evaluate_all(model, tokenizer, few_shot, shots, n, seed,
                                             progress=bar.update, batch_size=batch_size, chat=chat,
                                             cloze=cloze)
            if "safety" in tasks:
                safety[name] = evaluate_safety(model, tokenizer, n, seed, progress=bar.update,
                                               batch_size=batch_size)
            if "wording" in tasks:
                wording[name] = evaluate_wording(model, tokenizer, n, seed, families=families,
                                                 progress=bar.update, batch_size=batch_size)
            if "vision" in tasks:
                processor = Phi3VProcessor.from_pretrained(ckpt)
                split = "train" if pictures == "trained" else "test"
                vision[name] = {"picture": evaluate_vision(model, processor, n, seed,
                                                           progress=bar.update, split=split),
                                "blank": evaluate_vision(model, processor, n, seed, blind=True,
                                                         progress=bar.update, split=split)}
            if "passkey" in tasks:
                check_passkey_lengths(lengths, tokenizer)
                passkey[name] = passkey_grid(model, tokenizer, lengths, depths, per_cell, seed,
                                             past_context, progress=bar.update)
            if "position-ppl" in tasks:
                ids = heldout_long_ids(tokenizer, long_docs, max(lengths))   # same tokenizer,
                # same documents
                position[name] = position_perplexity(model, ids, buckets_between(lengths),
                                                     past_context, progress=bar.update)
            if "longchat" in tasks:
                longchat[name] = {
                    alone: longchat_recall(model, tokenizer, lengths, n_per_cell=per_cell,
                                           seed=seed, alone=alone == "alone",
                                           allow_past_context=past_context,
                                           progress=bar.update)
                    for alone in ("chat", "alone")}
    if results:
        click.echo(format_table(results))
    if safety:
        click.echo(format_safety_table(safety))
    if wording:
        click.echo(format_wording_table(wording))
    if vision:
        click.echo(format_vision_table(vision))
    if passkey:
        click.echo(format_passkey_tables(passkey))
    if position:
        click.echo(format_position_table(position))
    if longchat:
        click.echo(format_longchat_table(longchat))
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump({name: {**results.get(name, {}),
                              **({"safety": safety[name]} if name in safety else {}),
                              **({"wording": wording[name]} if name in wording else {}),
                              **({"vision": vision[name]} if name in vision else {}),
                              **({"passkey": passkey[name]} if name in passkey else {}),
                              **({"position-ppl": position[name]} if name in position else {}),
                              **({"longchat": longchat[name]} if name in longchat else {})}
                       for name in names}, f, indent=1)
    if chart:
        _draw_charts(chart, safety, passkey, position)


def _draw_charts(chart, safety, passkey, position):
    """--chart: one PNG per task that draws one; with several, 'long.png' becomes
    'long-safety.png', 'long-passkey.png', ... ."""
    from tinyphi3.pictures.charts import grouped_bars
    from tinyphi3.pictures.passkey import passkey_heatmaps, position_plot
    drawn = {kind: found for kind, found in (("safety", safety), ("passkey", passkey),
                                             ("position-ppl", position)) if found}
    path = Path(chart)
    for kind, found in drawn.items():
        out = chart if len(drawn) == 1 else str(path.with_name(f"{path.stem}-{kind}{path.suffix}"))
        if kind == "safety":
            groups = {"harmful compliance": {m: 100 * r["harmful_compliance"]
                                             for m, r in found.items()},
                      "benign refusal": {m: 100 * r["benign_refusal"] for m, r in found.items()}}
            grouped_bars(out, groups, "Safety on held-out requests (lower is better)",
                         "% of requests", vmax=100)
        elif kind == "passkey":
            passkey_heatmaps(out, found, "Passkey retrieval: % right by depth and length")
        elif any(b["perplexity"] is not None for rows in found.values() for b in rows):
            position_plot(out, found, "Perplexity by position on held-out long documents")
        else:
            continue
        click.echo(f"chart: {out}")


def _check_vision_checkpoints(ckpts):
    """--task vision: every checkpoint must read pictures (config.json only, before any weights
    load); a text-only one is one clear error (tinyphi3.cli.images.no_images_error)."""
    from tinyphi3.cli.images import check_checkpoint_reads_images
    from tinyphi3.errors import InvalidInputError
    for ckpt in ckpts:
        try:
            check_checkpoint_reads_images(ckpt)
        except InvalidInputError as e:
            raise InvalidInputError(f"--task vision: {e}") from None


def _column_names(ckpts):
    """Short names for the table: the directory names ("run/final" for a training run's final
    or checkpoint directory, whose own name says nothing), or the whole paths if two coincide."""
    def short_name(c):
        path = Path(c).resolve() if str(c) in (".", "") else Path(c)     # "." has no name
        if path.name in ("final", "checkpoint") and path.parent.name:
            return f"{path.parent.name}/{path.name}"
        return path.name or str(c)
    short = [short_name(c) for c in ckpts]
    return short if len(set(short)) == len(short) else [str(c) for c in ckpts]
