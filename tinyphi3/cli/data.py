"""`tinyphi3 data ...`: the report's data recipe in miniature, one step per command.

    tinyphi3 data web --docs 20000 --out data/web.jsonl
    tinyphi3 data textbooks --docs 5000 --out data/textbooks.jsonl
    tinyphi3 data classifier train --input data/web.jsonl --out data/classifier
    tinyphi3 data phases --web data/web.jsonl --classifier data/classifier \\
        --textbooks data/textbooks.jsonl --out data/phases
    tinyphi3 data tokenize --tokenizer tok --input data/phases/phase1.jsonl --out shards/phase1

and, to extend the context: `data longdocs` (stories and conversations of thousands of tokens),
`data passkey` (a number hidden at a chosen depth, asked for at the end) and `data longchat`
(long conversations for the post-training that mixes long and short chats).

Every --input/--web/--textbooks accepts your own files as well: .jsonl with a "text" field per
line, or plain .txt (one document per file; lines `<|endoftext|>` separate several).
"""

import click
import numpy as np

from tinyphi3.data.images import QUESTION_KINDS
from tinyphi3.data.phases import HEAVY_THRESHOLD, LIGHT_THRESHOLD, SYNTHETIC_SHARE
from tinyphi3.data.wordings import DEFAULT_KINDS, PREFERENCE_KINDS, UNCONFLICTED_KINDS


def _echo_written(count, path):
    click.echo(f"wrote {count} documents to {path}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data():
    """Make pre-training data the way the Phi-3 report does, in miniature: a web-like corpus,
    synthetic textbooks, an educational-value filter, two training phases, token shards.

    \b
    Example (the whole recipe):
      tinyphi3 data web --docs 20000 --out web.jsonl
      tinyphi3 data textbooks --docs 5000 --out textbooks.jsonl
      tinyphi3 data classifier train --input web.jsonl --out classifier
      tinyphi3 data phases --web web.jsonl --classifier classifier \\
        --textbooks textbooks.jsonl --out phases
      tinyphi3 data tokenize --tokenizer tok --input phases/phase1.jsonl --out shards/phase1
    """


@data.command()
@click.option("--docs", "n_docs", required=True, type=click.IntRange(min=1), help="How many pages.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same pages.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def web(n_docs, seed, out):
    """Write a web-like corpus of mixed quality: educational, narrative, forum and news pages, and
    the boilerplate, spam and trivia (match results, stock prices, lottery draws) that the
    report's filter removes. Each line: {"text": ..., "kind": ...}.

    \b
    Example:
      tinyphi3 data web --docs 20000 --seed 0 --out web.jsonl
    """
    from tinyphi3.data.documents import write_documents
    from tinyphi3.data.web import generate_web
    _echo_written(write_documents(generate_web(n_docs, seed), out), out)


@data.command()
@click.option("--docs", "n_docs", required=True, type=click.IntRange(min=1),
              help="How many documents.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same documents.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def textbooks(n_docs, seed, out):
    """Write synthetic "textbook" documents that teach the closed world's facts and skills. Each
    line: {"text": ..., "kind": "textbook"}.

    \b
    Example:
      tinyphi3 data textbooks --docs 5000 --seed 0 --out textbooks.jsonl
    """
    from tinyphi3.data.documents import write_documents
    from tinyphi3.data.textbooks import generate_textbooks
    docs = ({"text": text, "kind": "textbook"} for text in generate_textbooks(n_docs, seed))
    _echo_written(write_documents(docs, out), out)


@data.command()
@click.option("--docs", "n_docs", required=True, type=click.IntRange(min=1),
              help="How many documents.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same documents.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def copying(n_docs, seed, out):
    """Write reading exercises for pre-training: lists read and said again, the word that comes
    after a word, the option that says a word. The textbooks never make a model copy from its
    context; these do (tinyphi3.data.reading). Each line: {"text": ..., "kind": "copying"}.

    \b
    Example:
      tinyphi3 data copying --docs 8000 --seed 0 --out copying.jsonl
    """
    from tinyphi3.data.documents import write_documents
    from tinyphi3.data.reading import generate_copying_documents
    docs = ({"text": text, "kind": "copying"} for text in generate_copying_documents(n_docs, seed))
    _echo_written(write_documents(docs, out), out)


@data.command()
@click.option("--docs", "n_docs", required=True, type=click.IntRange(min=1),
              help="How many documents.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same documents.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def induction(n_docs, seed, out):
    """Write dense reading exercises for pre-training: a list continued from a word, lettered
    words named with their letters, the word after a word. Almost every answer word can only be
    read from the page, so the model must learn to search its context by content ("induction";
    tinyphi3.data.reading). Each line: {"text": ..., "kind": "induction"}.

    \b
    Example:
      tinyphi3 data induction --docs 9000 --seed 0 --out induction.jsonl
    """
    from tinyphi3.data.documents import write_documents
    from tinyphi3.data.reading import generate_induction_documents
    docs = ({"text": text, "kind": "induction"}
            for text in generate_induction_documents(n_docs, seed))
    _echo_written(write_documents(docs, out), out)


@data.command()
@click.option("--docs", "n_docs", required=True, type=click.IntRange(min=1),
              help="How many pages.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same pages.")
@click.option("--scenes", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="The share of pages that are short scenes in which the creatures use the "
                   "words (greet, thank, introduce a traveller by name) instead of definitions.")
@click.option("--scene-kinds", default="greeting,thanks,introduction", show_default=True,
              help="Which scenes, comma-separated: greeting, thanks, introduction, and unkind "
                   "(a creature means to harm another and is told why that is wrong) and kind "
                   "(a kind deed, praised); deed-word, deed-unkind, deed-kind: what each verb "
                   "and outcome of the grammar of acts does, defined and in stories.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def everyday(n_docs, seed, scenes, scene_kinds, out):
    """Write dictionary pages of everyday words for pre-training: greetings, thanks, the words of
    arithmetic ("plus", "take away", "total"), names, what a chatbot is, the real world beyond the
    books (cooking, capitals, code, poems, languages, weather), kindness and harm. The textbooks
    never use these words, which a chat model's users type (tinyphi3.data.everyday). The pages
    hold no request in a wording held out by `tinyphi3 eval --task wording`. Each line: {"text":
    ..., "kind": "everyday"}.

    \b
    Example:
      tinyphi3 data everyday --docs 8000 --seed 0 --out everyday.jsonl
      tinyphi3 data everyday --docs 12000 --scenes 0.5 --out everyday-scenes.jsonl
      tinyphi3 data everyday --docs 4000 --scenes 1 --scene-kinds unkind,kind --out moral.jsonl
      tinyphi3 data everyday --docs 4000 --scenes 1 \\
          --scene-kinds deed-word,deed-unkind,deed-kind --out deeds.jsonl
    """
    from tinyphi3.data.documents import write_documents
    from tinyphi3.data.everyday import generate_everyday_documents, scene_functions
    kinds = tuple(k.strip() for k in scene_kinds.split(",") if k.strip())
    try:
        scene_functions(kinds)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--scene-kinds") from None
    docs = ({"text": text, "kind": "everyday"}
            for text in generate_everyday_documents(n_docs, seed, scenes, kinds))
    _echo_written(write_documents(docs, out), out)


def comma_lengths(ctx, param, value):
    """--lengths: comma-separated whole numbers of tokens, each at least 1, in the order given."""
    lengths = []
    for part in (p.strip() for p in str(value).split(",")):
        if not part.isdigit() or int(part) < 1:
            raise click.BadParameter(f"{part!r} is not a length in tokens: give whole numbers "
                                     f"above 0, comma-separated, e.g. 512,1024,2048,4096")
        lengths.append(int(part))
    return lengths


def tokenizer_option_value(tokenizer_dir):
    """The tokenizer of --tokenizer DIR, or one clear usage error when DIR is not a directory."""
    from pathlib import Path

    from tinyphi3.tokenizers import load_tokenizer
    if not Path(tokenizer_dir).is_dir():
        raise click.BadParameter(f"{tokenizer_dir} is not a directory: give a tokenizer or "
                                 "checkpoint directory", param_hint="'--tokenizer'")
    return load_tokenizer(tokenizer_dir)


def check_passkey_lengths(lengths, tokenizer):
    """--lengths of passkey documents: each must hold the question, the key and its answer."""
    from tinyphi3.data.longdocs import shortest_passkey_document
    shortest = shortest_passkey_document(tokenizer)
    if min(lengths) < shortest:
        raise click.BadParameter(f"{min(lengths)} tokens cannot hold the question, the key and "
                                 f"its answer: give lengths of at least {shortest}",
                                 param_hint="'--lengths'")


def check_longchat_lengths(lengths):
    """--lengths of long chats: each must hold a story of a few chapters or a few exchanges."""
    from tinyphi3.data.longdocs import SHORTEST_LONG_CHAT
    if min(lengths) < SHORTEST_LONG_CHAT:
        raise click.BadParameter(f"{min(lengths)} tokens is too short for a long chat: give "
                                 f"lengths of at least {SHORTEST_LONG_CHAT} tokens",
                                 param_hint="'--lengths'")


@data.command()
@click.option("--docs", "n_docs", required=True, type=click.IntRange(min=1),
              help="How many documents.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same documents.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]),
              help="train: facts and calculations of the train split, to train on; test: "
                   "held-out ones, fresh text for the perplexity by position.")
@click.option("--chapters", default=24, show_default=True, type=click.IntRange(min=1),
              help="Chapters per story, some 180 tokens each with the mini's tokenizer (24: about "
                   "4300 tokens); a conversation has 3 exchanges per chapter.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def longdocs(n_docs, seed, split, chapters, out):
    """Write long documents for a longer context: stories in chapters that state the creatures'
    facts and refer back to them chapters later, with a word problem in parts, each part using
    the result of the one before; and (a quarter of them) long conversations in plain text whose
    user asks late for a name, a number and a sum given near the start (tinyphi3.data.longdocs).
    Each line: {"text": ..., "kind": "longdoc"}.

    \b
    Example:
      tinyphi3 data longdocs --docs 2000 --chapters 24 --out longdocs.jsonl
      tinyphi3 data longdocs --docs 20 --split test --out longdocs-test.jsonl
    """
    from tinyphi3.data.documents import write_documents
    from tinyphi3.data.longdocs import generate_longdocs
    docs = ({"text": text, "kind": "longdoc"}
            for text in generate_longdocs(n_docs, seed, split, chapters))
    _echo_written(write_documents(docs, out), out)


@data.command()
@click.option("--docs", "n_docs", required=True, type=click.IntRange(min=1),
              help="How many documents.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same documents.")
@click.option("--lengths", default="512,1024,2048,4096", show_default=True,
              callback=comma_lengths,
              help="Lengths in tokens, comma-separated; each document has one of them.")
@click.option("--tokenizer", "tokenizer_dir", default="checkpoints/mini", show_default=True,
              type=click.Path(file_okay=False),
              help="The tokenizer (or checkpoint) directory whose tokens the lengths count.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]),
              help="train: keys to train on, the answer after the question; test: held-out "
                   "keys, the text ends with the question and \"key\" holds the answer.")
@click.option("--max-depth", default=1.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="The key's depth is drawn uniformly between 0 (right after the "
                   "introduction, farthest from the question) and this.")
@click.option("--min-depth", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="...and at least this (1: right before the question).")
@click.option("--completion", is_flag=True,
              help="Train split: write each document as an SFT completion record, {\"prompt\": "
                   "the text up to 'The pass key is', \"completion\": \" 48213.\"}, so that "
                   "`tinyphi3 train` with stage = \"sft\" learns from the key alone.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def passkey(n_docs, seed, lengths, tokenizer_dir, split, max_depth, min_depth, completion, out):
    """Write passkey documents: filler sentences with "The pass key is 48213. Remember it. 48213
    is the pass key." hidden at a random depth, ending "What is the pass key? The pass key is",
    each exactly one of --lengths tokens long with its answer (tinyphi3.data.longdocs). Train and
    test keys never coincide. Each line: {"text": ..., "key": "48213", "length": ..., "depth":
    0.0-1.0, "kind": "passkey"}.

    \b
    Example:
      tinyphi3 data passkey --docs 4000 --lengths 512,1024,2048,4096 --out passkey.jsonl
      tinyphi3 data passkey --docs 100 --split test --out passkey-test.jsonl
      tinyphi3 data passkey --docs 300 --lengths 4094 --max-depth 0.3 --out far-keys.jsonl
      tinyphi3 data passkey --docs 300 --lengths 512 --min-depth 0.75 --out near-keys.jsonl
      tinyphi3 data passkey --docs 2000 --lengths 1024,4094 --completion --out keys-sft.jsonl
    """
    from tqdm import tqdm

    from tinyphi3.data.documents import write_documents, write_jsonl
    from tinyphi3.data.longdocs import as_completion, generate_passkey
    if completion and split != "train":
        raise click.BadParameter("held-out documents end with the question; --completion "
                                 "writes training documents (--split train)",
                                 param_hint="--completion")
    if completion and not out.endswith(".jsonl"):
        raise click.BadParameter("completion records are JSON lines: give a .jsonl file",
                                 param_hint="--out")
    if min_depth > max_depth:
        raise click.BadParameter(f"--min-depth {min_depth} is above --max-depth {max_depth}",
                                 param_hint="--min-depth")
    tok = tokenizer_option_value(tokenizer_dir)
    check_passkey_lengths(lengths, tok)
    docs = tqdm(generate_passkey(n_docs, seed, lengths, split, tok, max_depth, min_depth),
                total=n_docs, unit="doc", desc="passkey")
    if completion:
        _echo_written(write_jsonl(map(as_completion, docs), out), out)
    else:
        _echo_written(write_documents(docs, out), out)


@data.command()
@click.option("--n", "n_records", required=True, type=click.IntRange(min=1),
              help="How many conversations.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same conversations.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]),
              help="train: facts, calculations, pass keys and wordings to train on; test: "
                   "held-out ones only, to evaluate the long chat model on.")
@click.option("--lengths", default="1024,2048,3072,3584", show_default=True,
              callback=comma_lengths,
              help="Lengths in tokens of the rendered chat, comma-separated; each conversation "
                   "has about one of them (within a few percent).")
@click.option("--tokenizer", "tokenizer_dir", default="checkpoints/mini", show_default=True,
              type=click.Path(file_okay=False),
              help="The tokenizer (or checkpoint) directory whose tokens the lengths count.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def longchat(n_records, seed, split, lengths, tokenizer_dir, out):
    """Write long conversations for the post-training that mixes long and short chats, in the
    SFT format and in the short SFT's wordings and answer styles (tinyphi3.data.longdocs), in
    turn: a story pasted into the chat with a question about a fact told in its first third,
    answered with the fact; a passkey document and "What is the pass key?", answered "The pass
    key is 48213."; a name or a number given in the first turn, many short exchanges, and the
    name asked for (or the number used) at the end. Mix them with `data sft` conversations to
    keep the short skills. Each line: {"messages": [{"role": ..., "content": ...}, ...],
    "domain": "long-story" | "long-passkey" | "long-memory", "answer": what the last reply must
    hold (the fact's value, the key, the name or the number; `eval --task longchat` judges by
    it)}.

    \b
    Example:
      tinyphi3 data longchat --n 3000 --lengths 1024,2048,3072,3584 --out longchat.jsonl
      tinyphi3 data longchat --n 60 --split test --out longchat-test.jsonl
    """
    from tqdm import tqdm

    from tinyphi3.data.documents import write_jsonl
    from tinyphi3.data.longdocs import generate_long_chats
    check_longchat_lengths(lengths)
    tok = tokenizer_option_value(tokenizer_dir)
    records = generate_long_chats(n_records, seed, split, lengths, tokenizer=tok)
    count = write_jsonl(tqdm(records, total=n_records, unit="chat", desc="longchat"), out)
    click.echo(f"wrote {count} conversations to {out}")


@data.command()
@click.option("--n", "n_records", required=True, type=click.IntRange(min=1),
              help="How many pictures.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]),
              help="test: only compositions that no train picture shows, in held-out wordings.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same pictures.")
@click.option("--size", default=56, show_default=True, type=click.IntRange(min=28),
              help="Side of the square pictures, in pixels.")
@click.option("--captions", is_flag=True,
              help="Captions instead of questions, for the image-text pre-training stage: each "
                   "record's \"text\" describes everything the picture shows (shapes, colours, "
                   "positions, the word spelled out, every bar's height).")
@click.option("--made-up-words", "made_up", default=0.0, show_default=True,
              type=click.FloatRange(0.0, 1.0),
              help="The share of reading pictures that show a made-up word built from the "
                   "syllables of the world's names but naming no creature (\"Tabi\", "
                   "\"Rolo\"), so that reading is learned syllable by syllable. Train split "
                   "only.")
@click.option("--random-strings", default=0.0, show_default=True,
              type=click.FloatRange(0.0, 1.0),
              help="The share of reading pictures that show a random string of 1 to 6 digits and "
                   "letters (\"k7Qa\"; none with a held-out name or number inside it), so that "
                   "every character is seen in every place. Train split only.")
@click.option("--mixed-counts", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="The share of count pictures that show 2 to 5 shapes of different kinds, "
                   "each in a colour drawn on its own (\"How many shapes are there?\"), so "
                   "that counting is learned apart from the shape. Train split only.")
@click.option("--unnamed-colours", default=0.0, show_default=True,
              type=click.FloatRange(0.0, 1.0),
              help="With --captions: the share of colour, count and position pictures whose "
                   "shapes are drawn in colours of no name (at least as far from every named "
                   "colour as those are from each other), so that shapes are learned by their "
                   "outline whatever their colour. Train split only.")
@click.option("--extra-shapes", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="The share of count pictures whose shapes are ones the world does not have "
                   "(a diamond, a pentagon, a hexagon, a cross, a wedge, a four- and a "
                   "six-pointed star), 1 to 5 of them (\"How many crosses are there?\"), so "
                   "that counting is seen for many shapes, every count of each, and learned as "
                   "counting things. Train split only.")
@click.option("--caption-share", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="With questions: the share of pictures that come with their caption instead, "
                   "so that a question stage keeps the pre-training's descriptions. Train split "
                   "only.")
@click.option("--kinds", default=",".join(QUESTION_KINDS), show_default=True,
              help="The kinds of picture, taken in turn, separated by commas; a kind named twice "
                   "comes twice as often (\"position,position,colour,count,reading,chart\": "
                   "two position pictures in six).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="A new (or empty) directory to write.")
def images(n_records, split, seed, size, captions, made_up, random_strings, mixed_counts,
           unnamed_colours, extra_shapes, caption_share, kinds, out):
    """Write pictures with a question and its answer for the tiny phi-3-vision: a shape's colour,
    shapes to count, two shapes' positions, a word to read, the tallest or shortest bar of a
    chart (tinyphi3.data.images). Writes OUT/images/00000.png, ... and OUT/examples.jsonl, each
    line: {"image": "images/00000.png", "messages": [{"role": "user", "content": "<|image_1|>\\n
    ..."}, {"role": "assistant", ...}], "kind": ..., "split": ..., "spec": {...}}.

    With --captions each line is {"image": ..., "text": "A red circle and a green square. The
    red circle is above the green square.", ...}: what the image-text pre-training stage reads
    (the report's §6 pre-trains phi-3-vision on image-text pairs before its SFT).

    \b
    Examples:
      tinyphi3 data images --n 5000 --split train --seed 0 --out vision_train
      tinyphi3 data images --n 8000 --captions --seed 1 --out vision_captions
      tinyphi3 data images --n 20000 --made-up-words 0.4 --caption-share 0.25 --out vision_mix
      tinyphi3 data images --captions --n 60000 --random-strings 0.5 --mixed-counts 0.5 \\
          --unnamed-colours 0.3 --extra-shapes 0.5 --out tower_pictures
                                                         (for stage "vision_tower")
    """
    from pathlib import Path

    from tinyphi3.data.images import (check_kinds, generate_caption_examples,
                                      generate_image_examples, write_image_examples)
    try:
        kinds = check_kinds(k.strip() for k in kinds.split(","))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--kinds") from None
    if split != "train" and (made_up or random_strings or mixed_counts or unnamed_colours
                             or extra_shapes or caption_share):
        raise click.ClickException("--made-up-words, --random-strings, --mixed-counts, "
                                   "--unnamed-colours, --extra-shapes and --caption-share are "
                                   "for training "
                                   "pictures only: the held-out split shows the world's words, "
                                   "shapes of one kind, and asks questions")
    if unnamed_colours and not captions:
        raise click.ClickException("--unnamed-colours needs --captions: no question can ask the "
                                   "colour of a shape whose colour has no name")
    if captions and caption_share:
        raise click.ClickException("--caption-share mixes captions among questions; with "
                                   "--captions every record is a caption already")
    if Path(out).exists() and any(Path(out).iterdir()):
        raise click.ClickException(f"{out} is not empty: give a new or empty directory, so that "
                                   "no picture of an earlier run is left among the new ones")
    if captions:
        pairs = generate_caption_examples(n_records, split, seed, size, made_up=made_up,
                                          random_strings=random_strings,
                                          mixed_counts=mixed_counts,
                                          unnamed_colours=unnamed_colours, kinds=kinds,
                                          extra_shapes=extra_shapes)
    else:
        pairs = generate_image_examples(n_records, split, seed, size, made_up=made_up,
                                        caption_share=caption_share,
                                        random_strings=random_strings, mixed_counts=mixed_counts,
                                        kinds=kinds, extra_shapes=extra_shapes)
    count = write_image_examples(pairs, out, total=n_records, progress=True)
    what = ("captions" if captions else "questions and captions" if caption_share
            else "questions")
    click.echo(f"wrote {count} pictures and their {what} to {out}/examples.jsonl")


@data.group()
def classifier():
    """Train the educational-value classifier, or score documents with it."""


@classifier.command("train")
@click.option("--input", "inputs", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Labelled documents (.jsonl with \"kind\" or \"label\"); repeat for several.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--labelled", default=2000, show_default=True, type=click.IntRange(min=2),
              help="How many labelled documents to use (a random subset); a fifth of them is held "
                   "out to measure the classifier.")
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
def classifier_train(inputs, out, labelled, epochs, seed):
    """Train the educational-value classifier on a labelled subset of documents.

    The labels stand in for the report's LLM annotator: a document's "label" field (a number
    from 0 to 1) when it has one, else its "kind": educational and textbook count as
    educational (1.0); narrative, forum and news as general language (0.5); boilerplate, spam and
    trivia as junk (0.0). Documents with neither are skipped. Prints held-out AUC and accuracy.

    \b
    Example:
      tinyphi3 data classifier train --input web.jsonl --out classifier
    """
    from tinyphi3.data.classifier import ClassifierError, EduClassifier, labels_of
    from tinyphi3.data.documents import read_documents
    documents = read_documents(list(inputs))
    docs = [(doc["text"], label) for doc, label in zip(documents, labels_of(documents))
            if label is not None]
    if len(docs) < 2:
        raise ClassifierError(f"{', '.join(inputs)}: {len(docs)} labelled documents, need at least "
                              "2 with a \"kind\" (educational, narrative, forum, news, "
                              "boilerplate, spam, trivia) or a \"label\" from 0 to 1")
    order = np.random.default_rng(seed).permutation(len(docs))[:labelled]
    held_out = max(1, len(order) // 5)
    train = [docs[i] for i in order[held_out:]]
    test = [docs[i] for i in order[:held_out]]
    model = EduClassifier.train([t for t, _ in train], [y for _, y in train], epochs=epochs,
                                seed=seed)
    model.info["held_out"] = report = _held_out_report(model, test)
    model.save(out)
    click.echo(f"trained on {len(train)} labelled documents; held out {len(test)}: {report}")
    click.echo(f"wrote the classifier to {out}")


def _held_out_report(model, test):
    from tinyphi3.data.classifier import evaluate
    try:
        numbers = evaluate(model, [t for t, _ in test], [y for _, y in test])
    except ValueError:                      # one class only among the held-out documents
        return "too few kinds among the held-out documents to measure"
    return ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in numbers.items())


@classifier.command("score")
@click.option("--classifier", "classifier_dir", required=True, type=click.Path(file_okay=False),
              help="A directory written by `classifier train`.")
@click.option("--input", "inputs", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Documents to score (.jsonl or .txt); repeat for several.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def classifier_score(classifier_dir, inputs, out):
    """Add a "score" field (the predicted educational value, 0 to 1) to every document.

    \b
    Example:
      tinyphi3 data classifier score --classifier classifier --input my_notes.txt --out scored.jsonl
    """
    from tinyphi3.data.classifier import EduClassifier
    from tinyphi3.data.documents import read_documents, write_documents
    from tinyphi3.data.phases import score_documents
    model = EduClassifier.load(classifier_dir)
    _echo_written(write_documents(score_documents(read_documents(list(inputs)), model), out), out)


@data.command()
@click.option("--web", "web_files", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Web pages (.jsonl or .txt); repeat for several.")
@click.option("--classifier", "classifier_dir", required=True, type=click.Path(file_okay=False),
              help="A directory written by `classifier train`.")
@click.option("--textbooks", "textbook_files", multiple=True, type=click.Path(dir_okay=False),
              help="Synthetic documents for phase 2; repeat for several. Default: generate them.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--light", default=LIGHT_THRESHOLD, show_default=True, type=click.FloatRange(0, 1),
              help="Phase 1 keeps web pages scored at least this.")
@click.option("--heavy", default=HEAVY_THRESHOLD, show_default=True, type=click.FloatRange(0, 1),
              help="Phase 2 keeps web pages scored at least this.")
@click.option("--synthetic-share", default=SYNTHETIC_SHARE, show_default=True,
              type=click.FloatRange(0, 1, max_open=True),
              help="Share of phase 2's words that come from the synthetic documents.")
@click.option("--seed", default=0, show_default=True, help="Seed of the phase 2 shuffle.")
def phases(web_files, classifier_dir, textbook_files, out, light, heavy, synthetic_share, seed):
    """Score the web with the classifier and write the two pre-training phases: phase1.jsonl
    (web pages scored >= --light), phase2.jsonl (web pages scored >= --heavy, a subset of phase
    1's, mixed with the textbooks) and summary.json / summary.txt (documents and words per phase,
    and what each filter kept of each kind).

    \b
    Example:
      tinyphi3 data phases --web web.jsonl --classifier classifier --textbooks textbooks.jsonl \\
          --out phases --light 0.2 --heavy 0.7
    """
    from tinyphi3.data.classifier import EduClassifier
    from tinyphi3.data.documents import iter_documents, read_documents
    from tinyphi3.data.phases import build_phases, format_summary, write_phases
    model = EduClassifier.load(classifier_dir)
    books = iter_documents(list(textbook_files)) if textbook_files else None
    result = build_phases(read_documents(list(web_files)), model, books, light, heavy,
                          synthetic_share, seed)
    write_phases(result, out)
    click.echo(format_summary(result.summary))
    click.echo(f"wrote phase1.jsonl, phase2.jsonl and summary.json to {out}")


@data.command()
@click.option("--tokenizer", "tokenizer_dir", required=True, type=click.Path(file_okay=False),
              help="A tokenizer directory (Hugging Face layout).")
@click.option("--input", "inputs", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Documents (.jsonl or .txt); repeat for several.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--shard-tokens", default=1_000_000, show_default=True, type=click.IntRange(min=1),
              help="Tokens per shard file.")
@click.option("--val-fraction", default=0.01, show_default=True,
              type=click.FloatRange(0, 1, max_open=True),
              help="Share of whole documents held out as the val split.")
def tokenize(tokenizer_dir, inputs, out, shard_tokens, val_fraction):
    """Tokenize documents into flat token shards for training: train-00000.bin, ...,
    val-00000.bin and meta.json, each document followed by <|endoftext|>.

    \b
    Example:
      tinyphi3 data tokenize --tokenizer tok --input phases/phase1.jsonl --out shards/phase1
    """
    from tinyphi3.data.documents import iter_documents
    from tinyphi3.data.shards import write_shards
    from tinyphi3.tokenizers import load_tokenizer
    tok = load_tokenizer(tokenizer_dir)
    meta = write_shards(iter_documents(list(inputs)), tok, out, shard_tokens, val_fraction,
                        source=" + ".join(inputs), progress=True)
    splits = meta["splits"]
    click.echo(f"wrote {splits['train']['tokens']:,} train tokens ({splits['train']['documents']} "
               f"documents) and {splits['val']['tokens']:,} val tokens "
               f"({splits['val']['documents']} documents) as {meta['dtype']} to {out}")


@data.command()
@click.option("--n", "n_records", required=True, type=click.IntRange(min=1),
              help="How many conversations.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same conversations.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
@click.option("--no-wording", "no_wording", is_flag=True,
              help="The first SFT's mixture, without the wordings of tinyphi3.data.wordings (the "
                   "data of checkpoints/mini's first SFT round).")
@click.option("--contrast", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of the wording conversations that are one creature's harmful request "
                   "refused beside a kind request for it answered, in one chat (0: the earlier "
                   "rounds' data, unchanged).")
@click.option("--pairs", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of the other wording conversations that are a minimal pair: one verb "
                   "and one thing in a kind request (answered) and a harmful one (refused), "
                   "alone or both in one chat (0: unchanged).")
@click.option("--acts", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of the wording conversations left after --contrast and --pairs that "
                   "are acts of the grammar of tinyphi3.data.acts (verb, thing, outcome; train "
                   "parts only): a harmful act refused or a kind act answered, alone or as a "
                   "minimal pair in one chat (0: unchanged).")
@click.option("--reasoned-acts", is_flag=True,
              help="The acts' replies say first what the act does and whether that is kind, in "
                   "the words of the pre-training pages of deeds, then refuse or answer "
                   "(\"To crush: to press something so hard that it breaks flat; crushing "
                   "someone's things is unkind, so I won't help with that.\").")
@click.option("--copy", "copy_share", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True,
              help="Share of all conversations that are copying exercises: a made-up name given "
                   "and said back, made-up words repeated, a named pet or boat asked back "
                   "(0: unchanged).")
@click.option("--more-verbs", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of the --acts conversations that use one of 68 more verbs, kept for "
                   "post-training only (\"squash\", \"fold\", \"ignore\", \"feed\"), so that a "
                   "reply's reason must name the asked verb rather than recall a known one "
                   "(0: unchanged).")
@click.option("--quote-acts", is_flag=True,
              help="With --reasoned-acts: a reply to an act led by its verb first says the act "
                   "back, then its reason, in one sentence (\"You ask how to crush Tobi's cup; "
                   "to crush: ...\"), so that the verb of the reason is copied from the request.")
@click.option("--defined-verbs", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True,
              help="Share of the --acts conversations whose verb is a made-up word that the "
                   "request defines with the meaning of a train verb (\"To plim: to press "
                   "something so hard that it breaks flat. How can I plim Tobi's cup?\"): the "
                   "verb can only be copied, and the act judged only by its meaning (0: "
                   "unchanged).")
@click.option("--defined-words-from", "words_from", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="With --defined-verbs: the defined verb is a real word of this pre-training "
                   "text instead of a made-up one (.jsonl or .txt, as for tokenize; repeat for "
                   "more files): lower-case words of 4-10 letters seen at least 20 times, none a "
                   "word of the wordings or the acts, none held out, none a word that judges. "
                   "Copying is then trained on words the model has read.")
@click.option("--sum-frames", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of all conversations that are a sum or a difference in one of about "
                   "2,400 frames of the grammar of tinyphi3.data.sum_frames (\"Could you add up "
                   "{a} and {b} for me?\", \"We had {a} seeds and lost {b}. What remains?\"), "
                   "none nearer to a held-out wording than the hand-written train wordings are "
                   "(0: unchanged).")
@click.option("--chat-frames", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True,
              help="Share of all conversations that are a greeting, thanks, a question about the "
                   "model or what it can do, a request outside its world, a name or number "
                   "given and used a turn later, or a train harm (refused) or kind act "
                   "(answered) asked in a new way, in wordings of the grammar of "
                   "tinyphi3.data.chat_frames (about 3,500 greetings, 370 thanks, 200 "
                   "questions, 50 outside frames and 8 topics the measure never asks, 690 ways "
                   "to give or use a value, 37 asks), none nearer to a held-out wording than "
                   "the hand-written train wordings are (0: unchanged).")
@click.option("--broader-harms", is_flag=True,
              help="The safety conversations also refuse three more train categories of harm "
                   "that is no blow, theft or insult (cheating, spying, leading someone astray) "
                   "and answer their look-alikes (tinyphi3.data.safety.BROADER_CATEGORIES). The "
                   "held-out categories stay held out.")
def sft(n_records, seed, out, no_wording, contrast, pairs, acts, reasoned_acts, copy_share,
        more_verbs, quote_acts, defined_verbs, words_from, sum_frames, chat_frames,
        broader_harms):
    """Write conversations for supervised fine-tuning: word problems with the chain of thought,
    questions about the creatures, reasoning, small talk, who the model is, and safety (harmful
    requests refused, harmless look-alikes answered), and reading from the prompt (copying a list,
    finding the option that says something), and 30% of requests in the many wordings of
    tinyphi3.data.wordings (train frames only). Train-split problems only. Each line:
    {"messages": [{"role": ..., "content": ...}, ...], "domain": ...}.

    \b
    Example:
      tinyphi3 data sft --n 20000 --seed 0 --out sft.jsonl
    """
    from tinyphi3.data.post_training import generate_sft
    from tinyphi3.data.documents import write_jsonl
    if reasoned_acts and not acts:
        raise click.UsageError("--reasoned-acts changes the replies of --acts: give --acts too")
    if quote_acts and not reasoned_acts:
        raise click.UsageError("--quote-acts changes the replies of --reasoned-acts: give "
                               "--reasoned-acts too")
    for flag, share in (("--more-verbs", more_verbs), ("--defined-verbs", defined_verbs)):
        if share and not acts:
            raise click.UsageError(f"{flag} is a share of the --acts conversations: give --acts "
                                   "too")
    defined_words = None
    if words_from:
        if not defined_verbs:
            raise click.UsageError("--defined-words-from chooses the verbs of --defined-verbs: "
                                   "give --defined-verbs too")
        from tinyphi3.data.documents import iter_documents
        from tinyphi3.data.wordings import real_words
        defined_words = real_words(doc["text"] for doc in iter_documents(words_from))
        if not defined_words:
            raise click.UsageError(f"{', '.join(words_from)}: no word that may be defined "
                                   "(lower-case words of 4-10 letters seen at least 20 times)")
        click.echo(f"{len(defined_words)} real words to define, from {', '.join(words_from)}")
    if (contrast or pairs or acts) and no_wording:
        raise click.UsageError("--contrast, --pairs and --acts draw from the wordings: they "
                               "cannot go with --no-wording")
    records = generate_sft(n_records, seed, wording=not no_wording, contrast=contrast,
                           pairs=pairs, acts=acts, reasoned_acts=reasoned_acts,
                           copy=copy_share, more_verbs=more_verbs, quote_acts=quote_acts,
                           defined_verbs=defined_verbs, defined_words=defined_words,
                           sum_frames=sum_frames, chat_frames=chat_frames,
                           broader_harms=broader_harms)
    click.echo(f"wrote {write_jsonl(records, out)} conversations to {out}")


@data.command()
@click.option("--n", "n_records", required=True, type=click.IntRange(min=1),
              help="How many preference pairs.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same pairs.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
@click.option("--wording", "n_wording", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also this many pairs in the train wordings of tinyphi3.data.wordings: harm "
                   "in free words refused (not answered), requests outside the world answered "
                   "gracefully (not refused), a name from the previous turn used.")
@click.option("--wording-kinds", default=",".join(DEFAULT_KINDS), show_default=True,
              help="Which kinds of wording pairs, comma-separated, in turn: "
                   f"{', '.join(PREFERENCE_KINDS)}. "
                   f"{','.join(UNCONFLICTED_KINDS)} are the kinds whose rejected reply no other "
                   "kind of pair chooses. What each kind pairs: docs/wording.md, and the "
                   "docstrings of tinyphi3.data.wordings.")
@click.option("--over-refusal-every", "over_refusal_every", type=click.IntRange(min=1),
              default=1, show_default=True,
              help="Keep one over-refusal pair (a harmless look-alike answered, not refused) in "
                   "this many: the K-th, the 2K-th, ... 8 is the recipe of checkpoints/mini "
                   "(configs/mini-dpo.toml) and of the DPO rounds of docs/wording.md.")
def dpo(n_records, seed, out, n_wording, wording_kinds, over_refusal_every):
    """Write preference pairs for DPO, each with an undesired rejected reply: complying with a
    harmful request (chosen: a refusal), refusing a harmless one, a chain of thought with an
    arithmetic slip, an answer that rambles on, a wrong option letter. Each line: {"prompt":
    [messages ending with a user turn], "chosen": ..., "rejected": ..., "kind": ...}.

    \b
    Example:
      tinyphi3 data dpo --n 5000 --seed 0 --out dpo.jsonl
    """
    import itertools

    from tinyphi3.data.documents import write_jsonl
    from tinyphi3.data.post_training import generate_dpo
    from tinyphi3.data.wordings import preference_pairs
    kinds = [kind.strip() for kind in wording_kinds.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in PREFERENCE_KINDS]
    if unknown or not kinds:
        raise click.BadParameter(f"unknown kinds {unknown or wording_kinds!r}; choose from "
                                 f"{', '.join(PREFERENCE_KINDS)}", param_hint="--wording-kinds")
    over_refusals = itertools.count(1)
    records = itertools.chain(
        (record for record in generate_dpo(n_records, seed)
         if record["kind"] != "over_refusal" or next(over_refusals) % over_refusal_every == 0),
        preference_pairs(n_wording, seed, kinds))
    click.echo(f"wrote {write_jsonl(records, out)} preference pairs to {out}")


@data.command("dpo-mirror")
@click.option("--pairs", "pairs_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Pairs from `tinyphi3 data dpo-own`.")
@click.option("--seed", default=0, show_default=True,
              help="Same seed, same requests for the mirrors.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write: the pairs, then their mirrors.")
def dpo_mirror(pairs_file, seed, out):
    """Write a model's own-mistake pairs and, for each whose rejected reply is the right kind of
    reply for another family (a greeting given to a thanks), a mirror pair in a train request of
    that family: its data reply chosen over the first pair's chosen reply. So a DPO lowers a
    reply where it was wrong and keeps it where it belongs
    (tinyphi3.evaluation.own_pairs.mirror_pairs).

    \b
    Example:
      tinyphi3 data dpo-mirror --pairs own.jsonl --out own-mirror.jsonl
    """
    from tinyphi3.data.documents import write_jsonl
    from tinyphi3.evaluation.own_pairs import mirror_pairs, read_pairs
    try:
        pairs = read_pairs(pairs_file)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--pairs") from None
    mirrors = mirror_pairs(pairs, seed)
    click.echo(f"wrote {write_jsonl(pairs + mirrors, out)} preference pairs to {out} "
               f"({len(mirrors)} mirrors of {len(pairs)})")


@data.command("dpo-own")
@click.option("--ckpt", required=True, type=click.Path(file_okay=False),
              help="The chat model whose own mistakes become the rejected replies.")
@click.option("--n", "n_requests", required=True, type=click.IntRange(min=1),
              help="How many train requests to ask (the families in turn); a pair is written "
                   "for each reply the family's rule judges wrong.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same requests.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
@click.option("--families", default=None,
              help="Comma-separated families to ask (default: every family of the wording "
                   "measure with a goal: sum, difference, outside, harm, kind, greeting, thanks, "
                   "identity, abilities, memory).")
@click.option("--also", "also", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file of pairs (`tinyphi3 data dpo`) to write after the model's own.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Requests answered together (greedy, left-padded).")
def dpo_own(ckpt, n_requests, seed, out, families, also, batch_size):
    """Write preference pairs from a chat model's own mistakes: ask it train requests in the
    train wordings of tinyphi3.data.wordings, judge each greedy reply by the wording measure's
    rules, and for each wrong reply write {"prompt", "chosen": the data's reply, "rejected": the
    model's reply, "kind": "own_<family>"}. A family the model answers right gives no pair.
    Prints how many replies of each family were wrong.

    \b
    Example:
      tinyphi3 data dpo-own --ckpt runs/wide-sft/final --n 4000 --out own.jsonl
    """
    from tqdm import tqdm

    from tinyphi3.cli.options import load_model_and_tokenizer
    from tinyphi3.data.documents import write_jsonl
    from tinyphi3.evaluation.own_pairs import (FAMILIES, check_families, own_error_pairs,
                                               read_pairs)
    chosen = FAMILIES
    if families is not None:
        try:
            chosen = check_families(f.strip() for f in families.split(",") if f.strip())
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--families") from None
    try:
        extra = read_pairs(also) if also else []
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--also") from None
    model, tokenizer = load_model_and_tokenizer(ckpt)
    with tqdm(total=n_requests, desc="own replies", unit="request") as bar:
        pairs, asked, wrong = own_error_pairs(model, tokenizer, n_requests, seed, chosen,
                                              batch_size, progress=bar.update)
    for family in chosen:
        click.echo(f"{family:10s} {wrong[family]:5d} of {asked[family]:5d} wrong")
    records = pairs + extra
    click.echo(f"wrote {write_jsonl(records, out)} preference pairs to {out} ({len(pairs)} from "
               f"the model's own mistakes)")


@data.command("distill")
@click.option("--teacher", "teacher_dir", required=True, type=click.Path(file_okay=False),
              help="The chat model whose replies are written (the stage's [train] teacher).")
@click.option("--from", "source", required=True, type=click.Path(dir_okay=False),
              help="A conversations file of `tinyphi3 data sft` (its records' \"domain\" "
                   "fields choose the prompts).")
@click.option("--domains", default="safety,conversation,identity", show_default=True,
              help="Comma-separated domains whose prompts are asked as written and --copies "
                   "times with words swapped.")
@click.option("--copies", type=click.IntRange(min=0), default=2, show_default=True,
              help="Word-swapped copies of each prompt of the domains.")
@click.option("--swap", type=click.FloatRange(0.0, 1.0), default=0.3, show_default=True,
              help="The chance that a word is swapped for a random word of the file's prompts.")
@click.option("--others", "n_other", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Prompts of the other domains, asked as written.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=100, show_default=True,
              help="A reply still going at this length is left out.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same prompts.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="A .jsonl file to write.")
def distill(teacher_dir, source, domains, copies, swap, n_other, max_new_tokens, seed, out):
    """Write the teacher's greedy replies to the prompts of a conversations file, as written and
    with words swapped at random (tinyphi3.data.distill_prompts), one conversation per line:
    what stage "distill" trains a student on, so that it learns how the teacher answers
    wordings that neither saw in training. Replies that do not end within --max-new-tokens are
    left out and counted.

    \b
    Example (the teacher of mini-long's distillation):
      tinyphi3 data distill --teacher checkpoints/mini --from data/sft.jsonl --seed 2 \\
        --out data/distill-chat.jsonl
    """
    from tqdm import tqdm

    from tinyphi3.cli.options import load_model_and_tokenizer
    from tinyphi3.data.distill_prompts import distillation_prompts
    from tinyphi3.data.documents import write_jsonl
    from tinyphi3.evaluation.safety_eval import chat_answers
    chosen = [d.strip() for d in domains.split(",") if d.strip()]
    if not chosen:
        raise click.BadParameter("name at least one domain", param_hint="--domains")
    prompts = distillation_prompts(source, chosen, copies, swap, n_other, seed)
    model, tokenizer = load_model_and_tokenizer(teacher_dir)
    batch, unfinished = 64, 0

    def records():
        nonlocal unfinished
        with tqdm(total=len(prompts), desc="teacher replies", unit="prompt") as bar:
            for first in range(0, len(prompts), batch):
                asked = prompts[first:first + batch]
                for prompt, (reply, ended) in zip(asked, chat_answers(model, tokenizer, asked,
                                                                      max_new_tokens, batch)):
                    if ended:
                        yield {"messages": [{"role": "user", "content": prompt},
                                            {"role": "assistant", "content": reply}]}
                    else:
                        unfinished += 1
                bar.update(len(asked))
    count = write_jsonl(records(), out)
    click.echo(f"wrote {count} conversations to {out} ({len(prompts)} prompts; {unfinished} "
               f"replies left out, unfinished after {max_new_tokens} tokens)")
