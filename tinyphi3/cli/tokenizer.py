"""`tinyphi3 tokenizer train`: a tokenizer of your own from text files."""

import click


@click.group()
def tokenizer():
    """Tokenizer tools."""


@tokenizer.command("train")
@click.option("--input", "inputs", required=True, multiple=True, type=click.Path(),
              help="A UTF-8 text file, or a .jsonl file of documents, to learn from (repeat for "
                   "several).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory to write the tokenizer files to.")
@click.option("--vocab-size", required=True, type=click.IntRange(min=1),
              help="Size of the base vocabulary (Phi-3's special tokens come after it).")
@click.option("--kind", type=click.Choice(["sentencepiece", "tiktoken"]), default="sentencepiece",
              show_default=True,
              help="sentencepiece: Phi-3-mini's kind (tokenizer.model); tiktoken: phi-3-small's "
                   "byte-level BPE (tokenizer.tiktoken).")
def tokenizer_train(inputs, out, vocab_size, kind):
    """Train a BPE tokenizer with Phi-3's special tokens: Llama-2-style SentencePiece with byte
    fallback (Phi-3-mini), or tiktoken-style byte-level BPE (phi-3-small).

    \b
    Example:
      tinyphi3 tokenizer train --input corpus.txt --out tok --vocab-size 1000
      tinyphi3 tokenizer train --kind tiktoken --input corpus.txt --out tok --vocab-size 1000
    """
    if kind == "tiktoken":
        from tinyphi3.tokenizers.tiktoken_bpe import train_tiktoken_tokenizer
        tok = train_tiktoken_tokenizer(list(inputs), out, vocab_size)
        click.echo(f"wrote a tokenizer of {tok.vocab_size} ids ({tok.base_vocab_size} BPE ranks, "
                   f"then phi-3-small's special and padding ids) to {out}")
        return
    from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer
    tok = train_tokenizer(list(inputs), out, vocab_size)
    click.echo(f"wrote a tokenizer of {tok.vocab_size} tokens (base vocabulary, then Phi-3's "
               f"{tok.vocab_size - tok.base_vocab_size} special tokens) to {out}")
