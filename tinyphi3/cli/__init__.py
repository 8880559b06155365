"""The `tinyphi3` command line: chat, generate, info, init, tokenizer train."""

import re
import sys
from pathlib import Path

import click

from tinyphi3.cli.options import backend_option
from tinyphi3.errors import ContextLengthError, TinyPhi3Error

DEFAULT_CKPT = "checkpoints/mini"


class Group(click.Group):
    """Turns every tinyphi3 error into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TinyPhi3Error as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """tinyphi3: the Phi-3 models of the technical report, in readable NumPy.

    \b
    Examples:
      tinyphi3 chat --ckpt checkpoints/mini
      tinyphi3 generate --ckpt checkpoints/mini --prompt "Once upon a time"
      tinyphi3 info --ckpt checkpoints/mini
    """


def load_model_and_tokenizer(ckpt):
    """The model and tokenizer of a checkpoint directory, for generating text."""
    from tinyphi3.models.model import Phi3
    from tinyphi3.tokenizers import load_tokenizer
    path = Path(ckpt)
    if not path.is_dir():
        hint = (" (no model ships there yet: make one with `tinyphi3 init --out DIR`)"
                if ckpt == DEFAULT_CKPT else "")
        raise TinyPhi3Error(f"checkpoint directory {ckpt} not found{hint}")
    tokenizer = load_tokenizer(path)
    model = Phi3.from_pretrained(path)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise TinyPhi3Error(f"{ckpt}: tokenizer has {tokenizer.vocab_size} tokens but the model "
                            f"only {model.config.vocab_size}")
    return model, tokenizer


def sampling_options(f):
    """The options shared by `chat` and `generate`."""
    options = [
        backend_option,
        click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
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


def print_stats(stats, model):
    import resource

    from tinyphi3.cli.info import human_bytes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024     # KiB on Linux
    kind = "4-bit" if model.quantization else "float"
    click.echo(f"[prefill {stats.prompt_tokens} tokens at {stats.prefill_tokens_per_second:.1f} "
               f"tokens/s · decode {stats.generated_tokens} tokens at "
               f"{stats.decode_tokens_per_second:.1f} tokens/s · weights {kind} "
               f"{human_bytes(model.weight_bytes())} · peak memory {human_bytes(peak)}]", err=True)


def stream_answer(model, tokenizer, prompt_ids, options, out):
    """Generate and print text as it comes; return the full answer text."""
    from tinyphi3.inference.generate import GenerationStats, TextStreamer, generate
    stats = GenerationStats()
    streamer = TextStreamer(tokenizer)
    pieces = []
    for token in generate(model, prompt_ids, options["max_new_tokens"], options["temperature"],
                          options["top_k"], options["top_p"], options["seed"],
                          stats=stats, tokenizer=tokenizer):
        piece = streamer.push(token)
        pieces.append(piece)
        out.write(piece)
        out.flush()
    pieces.append(streamer.flush())
    out.write(pieces[-1] + "\n")
    out.flush()
    if options["stats"]:
        print_stats(stats, model)
    return "".join(pieces)


# ---- chat -----------------------------------------------------------------------------------
@main.command()
@click.option("--ckpt", default=DEFAULT_CKPT, show_default=True,
              help="Checkpoint directory (Hugging Face layout, with tokenizer files).")
@click.option("--system", default=None, help="A system message that opens the conversation.")
@sampling_options
def chat(ckpt, system, **options):
    """Talk to a model. Type a message and press Enter.

    \b
    Commands: /reset clears the conversation, /exit (or Ctrl-D) quits.
    Ctrl-C stops an answer that is being written.
    The oldest exchanges are dropped (and you are told) when the
    conversation outgrows the model's context.

    \b
    Examples:
      tinyphi3 chat --ckpt checkpoints/mini --system "Answer briefly."
      tinyphi3 chat --ckpt checkpoints/mini --temperature 0.7 --top-p 0.9 --stats
    With stdin piped, every line is one message and the answers go to stdout:
      printf 'Hi\\nWhat is 2+3?\\n' | tinyphi3 chat --ckpt checkpoints/mini
    """
    model, tokenizer = load_model_and_tokenizer(ckpt)
    session = ChatSession(model, tokenizer, system, options)
    if sys.stdin.isatty():
        click.echo(f"tinyphi3 chat · {ckpt} · /reset to start over, /exit or Ctrl-D to quit",
                   err=True)
        run_interactive(session)
    else:
        run_piped(session)


class ChatSession:
    """The conversation so far, kept within the model's context window."""

    def __init__(self, model, tokenizer, system, options):
        self.model, self.tokenizer, self.options = model, tokenizer, options
        self.system = [{"role": "system", "content": system}] if system else []
        self.turns = []

    def reset(self):
        self.turns = []

    def prompt_for(self, message):
        """Token ids of the chat with `message` appended; the oldest turns are dropped (and the
        user told) when the whole history would leave no room for an answer."""
        context = self.model.config.max_position_embeddings
        budget = context - self.options["max_new_tokens"]
        turns, dropped = list(self.turns), 0
        while True:
            messages = self.system + turns + [{"role": "user", "content": message}]
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                     tokenize=True)
            if len(ids) <= budget or not turns:
                break
            turns, dropped = turns[2:], dropped + 1
        if len(ids) >= context:
            raise ContextLengthError(f"this message needs {len(ids)} tokens with the chat format, "
                                     f"but the context holds {context}; send a shorter one")
        if dropped:
            click.echo(f"[dropped the {dropped} oldest exchange(s) to stay within the "
                       f"{context}-token context]", err=True)
        self.turns = turns
        return ids

    def answer(self, message, out):
        ids = self.prompt_for(message)
        reply = stream_answer(self.model, self.tokenizer, ids, self.options, out)
        self.turns += [{"role": "user", "content": message},
                       {"role": "assistant", "content": reply}]

    def handle(self, line, out):
        """Process one input line; return False when the session should end."""
        message = line.strip()
        if not message:
            return True
        if message == "/exit":
            return False
        if message == "/reset":
            self.reset()
            click.echo("[conversation cleared]", err=True)
            return True
        if re.fullmatch(r"/\w+", message):        # a mistyped command is not sent to the model
            click.echo(f"unknown command {message}: /reset clears the conversation, /exit quits",
                       err=True)
            return True
        try:
            self.answer(message, out)
        except ContextLengthError as e:
            click.echo(f"error: {e}", err=True)
        return True


def run_interactive(session):
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    while True:
        try:
            line = input(">>> ")
        except EOFError:                          # Ctrl-D
            click.echo("", err=True)
            return
        except KeyboardInterrupt:                 # Ctrl-C at the prompt: a fresh prompt
            click.echo("\n(use /exit or Ctrl-D to quit)", err=True)
            continue
        try:
            if not session.handle(line, sys.stdout):
                return
        except KeyboardInterrupt:                 # Ctrl-C while answering: stop this answer
            click.echo("\n[answer interrupted; it is not kept in the conversation]", err=True)


def run_piped(session):
    for line in read_stdin_text().splitlines():
        if not session.handle(line, sys.stdout):
            return


def read_stdin_text():
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TinyPhi3Error(f"stdin is not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r})"
                            ) from None


# ---- generate ---------------------------------------------------------------------------------
@main.command("generate")
@click.option("--ckpt", default=DEFAULT_CKPT, show_default=True, help="Checkpoint directory.")
@click.option("--prompt", required=True, help="Text to continue, or - to read it from stdin.")
@click.option("--chat", "as_chat", is_flag=True,
              help="Wrap the prompt as one user message in the chat template.")
@click.option("--trim", is_flag=True,
              help="Drop the start of a prompt that is too long for the context instead of "
                   "refusing it.")
@sampling_options
def generate_command(ckpt, prompt, as_chat, trim, **options):
    """Continue a prompt and print the generated text.

    \b
    Examples:
      tinyphi3 generate --ckpt checkpoints/mini --prompt "The sum of 12 and 30 is"
      echo "What is 7 times 6?" | tinyphi3 generate --ckpt checkpoints/mini --prompt - --chat
    """
    from tinyphi3.inference.generate import fit_to_context
    model, tokenizer = load_model_and_tokenizer(ckpt)
    text = read_stdin_text() if prompt == "-" else prompt
    if as_chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                            add_generation_prompt=True, tokenize=True)
    else:
        ids = tokenizer.encode(text)
    ids, trimmed = fit_to_context(ids, model.config.max_position_embeddings, trim=trim)
    if trimmed:
        click.echo(f"[prompt trimmed: dropped its first {trimmed} tokens to fit the "
                   f"{model.config.max_position_embeddings}-token context]", err=True)
    stream_answer(model, tokenizer, ids, options, sys.stdout)


# ---- info -------------------------------------------------------------------------------------
@main.command()
@click.option("--ckpt", default=DEFAULT_CKPT, show_default=True, help="Checkpoint directory.")
def info(ckpt):
    """Describe a checkpoint without loading its weights: architecture, parameters, sizes.

    \b
    Example:
      tinyphi3 info --ckpt checkpoints/mini
    """
    from tinyphi3.cli.info import describe_checkpoint
    click.echo(describe_checkpoint(ckpt))


# ---- quantize ---------------------------------------------------------------------------------
@main.command()
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
    float16 scale (and minimum) per block; norms and biases stay float32. Tensors are read,
    quantized and written one at a time, so a 7.6 GB snapshot needs memory for one tensor. The
    output appears only when complete.

    \b
    Example:
      tinyphi3 quantize --ckpt checkpoints/mini --out mini-q4 --bits 4 --block 32
      tinyphi3 chat --ckpt mini-q4 --stats
    """
    from tinyphi3.cli.info import human_bytes
    from tinyphi3.quant.q4 import bits_per_weight, check_options
    from tinyphi3.quant.checkpoint import quantize_checkpoint
    check_options(bits, block, scheme)
    if not Path(ckpt).is_dir():
        raise TinyPhi3Error(f"checkpoint directory {ckpt} not found")
    quantize_checkpoint(ckpt, out, block, scheme)
    size = (Path(out) / "model.safetensors").stat().st_size
    click.echo(f"wrote {out}: {human_bytes(size)}, {bits_per_weight(block, scheme):g} bits per "
               f"quantized weight ({scheme}, blocks of {block})")


# ---- init -------------------------------------------------------------------------------------
@main.command()
@click.option("--preset", default="tiny", show_default=True,
              help="Configuration: phi-3-mini-4k, phi-3-mini-128k, phi-3-medium-4k, tiny, "
                   "tiny-gqa, tiny-longrope.")
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
    from tinyphi3.cli.info import init_checkpoint
    init_checkpoint(preset, out, tokenizer_dir, seed, dtype)
    click.echo(f"wrote a random {preset} model and its tokenizer to {out}")


# ---- train ------------------------------------------------------------------------------------
@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True,
              help="Continue the run from the checkpoint in the recipe's output directory.")
def train(recipe, resume):
    """Train a model as a recipe (a TOML file in configs/) says.

    Shows a progress bar with loss, tokens/s and ETA; evaluates on held-out data and writes a
    checkpoint periodically; Ctrl-C finishes the current step, saves, and stops. At the end the
    model is exported to <output>/final in the Hugging Face layout, with a loss curve.

    \b
    Examples:
      tinyphi3 train configs/mini-base-phase1.toml
      tinyphi3 train configs/mini-base-phase1.toml --resume
    """
    from tinyphi3.train.loop import Trainer
    from tinyphi3.train.recipe import load_recipe
    trainer = Trainer(load_recipe(recipe), resume=resume)
    for note in trainer.objective.notes:
        click.echo(note)
    finished = trainer.run()
    s = trainer.state
    if not finished:
        click.echo(f"stopped at step {s['step']}: checkpoint saved in {trainer.out}/checkpoint; "
                   f"continue with --resume", err=True)
        sys.exit(130)
    final = trainer.export()
    click.echo(f"trained {s['step']} steps ({s['tokens']:,} tokens) in {s['seconds'] / 60:.1f} min;"
               f" final loss {s['losses'][-1][1]:.3f}; model in {final}")


# ---- tokenizer --------------------------------------------------------------------------------
@main.group()
def tokenizer():
    """Tokenizer tools."""


@tokenizer.command("train")
@click.option("--input", "inputs", required=True, multiple=True, type=click.Path(),
              help="A UTF-8 text file, or a .jsonl file of documents, to learn from (repeat for several).")
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
        click.echo(f"wrote a tokenizer of {tok.vocab_size} ids ({tok.base_vocab_size} BPE ranks, then "
                   f"phi-3-small's special and padding ids) to {out}")
        return
    from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer
    tok = train_tokenizer(list(inputs), out, vocab_size)
    click.echo(f"wrote a tokenizer of {tok.vocab_size} tokens (base vocabulary, then Phi-3's "
               f"{tok.vocab_size - tok.base_vocab_size} special tokens) to {out}")


# ---- blocksparse ------------------------------------------------------------------------------
@main.command("blocksparse")
@click.option("--heads", type=int, default=4, show_default=True,
              help="Query heads; each gets its own pattern and panel.")
@click.option("--local", "local_blocks", type=int, default=2, show_default=True,
              help="Local blocks: a query block sees itself and the LOCAL - 1 blocks before it.")
@click.option("--stride", type=int, default=3, show_default=True,
              help="Vertical stride: further back, one key block in every STRIDE (shifted per "
                   "head).")
@click.option("--blocks", type=int, default=16, show_default=True,
              help="Blocks to draw (query blocks x key blocks), at most 256.")
@click.option("--homo", is_flag=True, help="The same pattern for every head.")
@click.option("--block-size", type=int, default=64, show_default=True, help="Tokens per block.")
@click.option("--kv-heads", type=int, default=None,
              help="Key/value heads (grouped-query attention)  [default: as many as --heads]")
@click.option("--head-dim", type=int, default=128, show_default=True,
              help="Head dimension, for the KV-cache bytes.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
def blocksparse_command(heads, local_blocks, stride, blocks, homo, block_size, kv_heads, head_dim,
                        out):
    """Draw the block-sparse attention pattern of phi-3-small (the Phi-3 report's Figure 2) for
    any configuration; print its density and the KV cache it reads.

    One panel per head, query blocks down and key blocks across: blue blocks are local, orange
    ones vertical (remote blocks at a stride, each head shifted), grey ones skipped. Density is
    the fraction of causal blocks, over all heads, that are attended. KV bytes are what one layer
    reads from its cache (2 bytes a value) to generate one token after BLOCKS x BLOCK-SIZE
    tokens: per query head, and per KV head, which serves heads / kv-heads query heads and so
    reads the union of their blocks. The defaults draw the report's toy setting.

    \b
    Examples:
      tinyphi3 blocksparse --heads 4 --local 2 --stride 3 --out figure2.png
      tinyphi3 blocksparse --heads 32 --kv-heads 8 --local 16 --stride 8 --blocks 64 --out small.png
    """
    import numpy as np

    from tinyphi3.nn.blocksparse import blocksparse_layout, density, kv_bytes_per_token
    from tinyphi3.pictures.blocksparse import draw_layout
    from tinyphi3.errors import InvalidInputError
    kv_heads = heads if kv_heads is None else kv_heads
    for option, value in [("--heads", heads), ("--local", local_blocks), ("--stride", stride),
                          ("--blocks", blocks), ("--block-size", block_size),
                          ("--kv-heads", kv_heads), ("--head-dim", head_dim)]:
        if value < 1:
            raise InvalidInputError(f"{option} must be a positive integer, got {value}")
    if local_blocks > blocks:
        raise InvalidInputError(f"--local {local_blocks} is more local blocks than --blocks "
                                f"{blocks}")
    if heads % kv_heads:
        raise InvalidInputError(f"--heads {heads} is not a multiple of --kv-heads {kv_heads}: "
                                f"every KV head serves the same number of query heads")
    if heads > 64 or blocks > 256:
        raise InvalidInputError(f"at most 64 --heads and 256 --blocks can be drawn, got {heads} "
                                f"and {blocks}")
    layout = blocksparse_layout(heads, blocks, local_blocks, stride, homo_head=homo)  # [H, NB, NB]
    causal = heads * blocks * (blocks + 1) // 2
    active = int(layout.sum())                       # the layout is zero above the diagonal
    union = layout.any(axis=0)[np.tril_indices(blocks)]   # [NB, NB] -> the causal blocks
    fraction = density(layout)
    config = (f"{heads} heads ({kv_heads} KV), {local_blocks} local blocks, vertical stride "
              f"{stride}{', same pattern for all heads' if homo else ''}, {blocks} blocks of "
              f"{block_size} tokens")
    draw_layout(out, layout, local_blocks, f"Block-sparse attention: {config}",
                f"density {fraction:.3f} of the causal blocks; rows: query blocks, "
                f"columns: key blocks")
    length = blocks * block_size
    per_token = 2 * head_dim * 2                     # a key and a value, 2 bytes a number
    per_query, _ = kv_bytes_per_token(layout, length, block_size, heads, head_dim)
    per_group, dense = kv_bytes_per_token(layout, length, block_size, kv_heads, head_dim)
    click.echo(config)
    click.echo(f"density {fraction:.6f}: {active} of {causal} causal blocks (all heads) "
               f"are attended")
    click.echo("every earlier block is attended by some head: "
               + ("yes" if union.all() else f"no, {int((~union).sum())} blocks by none"))
    click.echo(f"KV cache read by one layer for the token after {length} tokens "
               f"(2 bytes a value, head_dim {head_dim}), dense = {length * per_token:,} bytes "
               f"per head:")
    click.echo(f"  per query head (mean of {heads}): {per_query / heads:,.0f} bytes, "
               f"{per_query / (heads * length * per_token):.1%} of dense")
    click.echo(f"  per KV head (union over its {heads // kv_heads} query heads): "
               f"{per_group / kv_heads:,.0f} bytes, {per_group / dense:.1%} of dense; "
               f"all {kv_heads} KV heads: {per_group:,} of {dense:,} bytes")
    click.echo(f"picture: {out}")


def _register_subcommands():
    from tinyphi3.cli.data import data
    from tinyphi3.cli.evaluation import eval_command
    main.add_command(data)
    main.add_command(eval_command, name="eval")


_register_subcommands()

if __name__ == "__main__":
    main()
