"""`tinyphi3 chat` and `tinyphi3 generate`: a model's text, streamed as it is written."""

import re
import sys

import click

from tinyphi3.cli.options import DEFAULT_CKPT, load_model_and_tokenizer, sampling_options
from tinyphi3.errors import ContextLengthError, TinyPhi3Error


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


@click.command()
@click.option("--ckpt", default=DEFAULT_CKPT, show_default=True,
              help="Checkpoint directory (Hugging Face layout, with tokenizer files).")
@click.option("--system", default=None, help="A system message that opens the conversation.")
@sampling_options
def chat(ckpt, system, **options):
    """Talk to a model. Type a message and press Enter.

    \b
    Commands: /help lists them, /reset clears the conversation, /exit (or Ctrl-D) quits.
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
    model, tokenizer = load_model_and_tokenizer(ckpt, options.pop("dtype"))
    session = ChatSession(model, tokenizer, system, options)
    if sys.stdin.isatty():
        click.echo(f"tinyphi3 chat · {ckpt} · /help for commands, /reset to start over, /exit or "
                   f"Ctrl-D to quit",
                   err=True)
        run_interactive(session)
    else:
        run_piped(session)


COMMANDS_HELP = ("Commands: /help lists these, /reset forgets the conversation (names and "
                 "numbers you gave too), /exit (or Ctrl-D) quits; Ctrl-C stops an answer.")


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
        if message in ("/help", "/?"):
            click.echo(COMMANDS_HELP, err=True)
            return True
        if re.fullmatch(r"/\w+", message):        # a mistyped command is not sent to the model
            click.echo(f"unknown command {message}. {COMMANDS_HELP}", err=True)
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
        raise TinyPhi3Error(f"stdin is not valid UTF-8 (byte {e.start}: "
                            f"{data[e.start:e.start + 1]!r})") from None


# ---- generate ---------------------------------------------------------------------------------
@click.command("generate")
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
    model, tokenizer = load_model_and_tokenizer(ckpt, options.pop("dtype"))
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
