"""`tinyphi3 chat` and `tinyphi3 generate`: a model's text, streamed as it is written.

A Phi-3-vision checkpoint (model_type "phi3_v") also reads pictures: `--image PATH`, and `/image
PATH` in a chat. A message that carries pictures starts with their tags, as the model card writes
it (`<|user|>\n<|image_1|>\nWhat is this?<|end|>\n<|assistant|>\n`), numbered 1..N over the
conversation (tinyphi3.models.vision.conversation)."""

import re
import sys
from pathlib import Path

import click

from tinyphi3.cli.images import (check_checkpoint_reads_images, check_pictures_fit, image_inputs,
                                 image_option, load_processor, no_images_error, open_picture)
from tinyphi3.cli.options import DEFAULT_CKPT, load_model_and_tokenizer, sampling_options
from tinyphi3.errors import ContextLengthError, InvalidInputError, TinyPhi3Error


def print_stats(stats, model):
    import resource

    from tinyphi3.cli.info import human_bytes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024     # KiB on Linux
    kind = "4-bit" if model.quantization else "float"
    click.echo(f"[prefill {stats.prompt_tokens} tokens at {stats.prefill_tokens_per_second:.1f} "
               f"tokens/s · decode {stats.generated_tokens} tokens at "
               f"{stats.decode_tokens_per_second:.1f} tokens/s · weights {kind} "
               f"{human_bytes(model.weight_bytes())} · peak memory {human_bytes(peak)}]", err=True)


def stream_answer(model, tokenizer, prompt_ids, options, out, **images):
    """Generate and print text as it comes; return the full answer text. `images`:
    pixel_values and image_sizes of a Phi-3-vision prompt."""
    from tinyphi3.inference.generate import GenerationStats, TextStreamer, generate
    stats = GenerationStats()
    streamer = TextStreamer(tokenizer)
    pieces = []
    for token in generate(model, prompt_ids, options["max_new_tokens"], options["temperature"],
                          options["top_k"], options["top_p"], options["seed"],
                          stats=stats, tokenizer=tokenizer, **images):
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
@image_option
@sampling_options
def chat(ckpt, system, images, **options):
    """Talk to a model. Type a message and press Enter.

    \b
    Commands: /help lists them, /reset clears the conversation, /exit (or /quit, Ctrl-D) quits.
    /file PATH puts a text file (a long document, say) before your next message.
    /image PATH shows a Phi-3-vision model a picture with your next message.
    Ctrl-C stops an answer that is being written.
    The oldest exchanges are dropped (and you are told) when the
    conversation outgrows the model's context.

    \b
    Examples:
      tinyphi3 chat --ckpt checkpoints/mini --system "Answer briefly."
      tinyphi3 chat --ckpt checkpoints/mini --temperature 0.7 --top-p 0.9 --stats
      tinyphi3 chat --ckpt phi-3-vision --image cat.png   (the first message carries it)
    With stdin piped, every line is one message and the answers go to stdout:
      printf 'Hi\\nWhat is 2+3?\\n' | tinyphi3 chat --ckpt checkpoints/mini
    A document of many lines goes in with /file, the question after it:
      printf '/file story.txt\\nWho is Zorin?\\n' | tinyphi3 chat --ckpt checkpoints/mini-long
    """
    if images:
        check_checkpoint_reads_images(ckpt)
    model, tokenizer = load_model_and_tokenizer(ckpt, options.pop("dtype"))
    session = ChatSession(model, tokenizer, system, options, load_processor(ckpt, model))
    for path in images:
        session.attach(path)
    if sys.stdin.isatty():
        pictures = " · /image PATH to show a picture" if session.processor else ""
        click.echo(f"tinyphi3 chat · {ckpt} · /help for commands, /reset to start over, /exit or "
                   f"Ctrl-D to quit{pictures}",
                   err=True)
        run_interactive(session)
    else:
        run_piped(session)


COMMANDS_HELP = ("Commands: /help lists these, /file PATH puts a text file before your next "
                 "message, /reset forgets the conversation (names and numbers you gave too), "
                 "/exit (or /quit, or Ctrl-D) quits; Ctrl-C stops an answer.")
VISION_COMMANDS_HELP = ("Commands: /help lists these, /image PATH shows the model a picture with "
                        "your next message, /file PATH puts a text file before it, /reset "
                        "forgets the conversation (its pictures, names and numbers you gave "
                        "too), /exit (or /quit, or Ctrl-D) quits; Ctrl-C stops an answer.")


class ChatSession:
    """The conversation so far, kept within the model's context window."""

    def __init__(self, model, tokenizer, system, options, processor=None):
        self.model, self.tokenizer, self.options = model, tokenizer, options
        self.system = [{"role": "system", "content": system}] if system else []
        self.turns = []
        self.processor = processor      # a Phi3VProcessor for a phi3_v model, else None
        self.pending = []               # the Pictures the next message carries
        self.pending_text = None        # a file's text, put before the next message

    @property
    def commands_help(self):
        return COMMANDS_HELP if self.processor is None else VISION_COMMANDS_HELP

    def reset(self):
        self.turns = []
        self.pending = []
        self.pending_text = None

    def attach(self, path):
        """Open and process the picture at `path` for the next message (InvalidInputError when it
        is not a readable image, the model reads none, or the pictures leave no room)."""
        if self.processor is None:
            raise no_images_error("this checkpoint", self.model.config)
        picture = open_picture(path, self.processor.image_processor)
        check_pictures_fit(self.pending + [picture], self.model.config.max_position_embeddings)
        self.pending.append(picture)
        click.echo(f"[picture {len(self.pending)} for your next message: {path}, {picture.width} "
                   f"x {picture.height} pixels, {picture.tokens} tokens]", err=True)

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

    def vision_prompt_for(self, message):
        """(ids, pictures) of the chat with `message` and the pending pictures appended, for a
        phi3_v model: as `prompt_for`, the oldest exchanges (and their pictures) dropped when the
        whole history would leave no room for an answer; the pictures kept, in order."""
        from tinyphi3.models.vision.conversation import chat_ids
        context = self.model.config.max_position_embeddings
        budget = context - self.options["max_new_tokens"]
        turns, dropped = list(self.turns), []
        current = {"role": "user", "content": message, "images": list(self.pending)}
        while True:
            messages = self.system + turns + [current]
            pictures = [p for m in messages for p in m.get("images", ())]
            ids = chat_ids(self.tokenizer, messages, [p.tokens for p in pictures])
            if len(ids) <= budget or not turns:
                break
            dropped, turns = dropped + turns[:2], turns[2:]
        if len(ids) >= context:
            slots = sum(p.tokens for p in self.pending)
            raise ContextLengthError(f"this message needs {len(ids)} tokens with the chat format "
                                     f"({slots} of them for its pictures), but the context holds "
                                     f"{context}; send a shorter one")
        if dropped:
            lost = sum(len(m.get("images", ())) for m in dropped)
            click.echo(f"[dropped the {len(dropped) // 2} oldest exchange(s)"
                       + (f" and their {lost} picture(s)" if lost else "")
                       + f" to stay within the {context}-token context]", err=True)
        self.turns = turns
        return ids, pictures

    def answer(self, message, out):
        if self.pending_text is not None:         # the file, then what was typed
            message = f"{self.pending_text}\n\n{message}"
        if self.processor is None:
            ids, images = self.prompt_for(message), {}
        else:
            ids, pictures = self.vision_prompt_for(message)
            images = image_inputs(pictures)
        reply = stream_answer(self.model, self.tokenizer, ids, self.options, out, **images)
        user = {"role": "user", "content": message}
        if self.pending:
            user["images"], self.pending = self.pending, []
        self.pending_text = None
        self.turns += [user, {"role": "assistant", "content": reply}]

    def handle(self, line, out):
        """Process one input line; return False when the session should end."""
        message = line.strip()
        if not message:
            return True
        if message in ("/exit", "/quit"):
            return False
        if message == "/reset":
            self.reset()
            click.echo("[conversation cleared]", err=True)
            return True
        if message in ("/help", "/?"):
            click.echo(self.commands_help, err=True)
            return True
        if message.split(maxsplit=1)[0] == "/image":
            self.image_command(message[len("/image"):].strip())
            return True
        if message.split(maxsplit=1)[0] == "/file":
            self.file_command(message[len("/file"):].strip())
            return True
        if re.fullmatch(r"/\w+", message):        # a mistyped command is not sent to the model
            click.echo(f"unknown command {message}. {self.commands_help}", err=True)
            return True
        try:
            self.answer(message, out)
        except (ContextLengthError, InvalidInputError) as e:
            click.echo(f"error: {e}", err=True)
        return True

    def file_command(self, path):
        """`/file PATH`: the file's text (UTF-8) goes before the next message, one blank line
        between; an error (no such file, not text, too long for the context) keeps the
        session."""
        path = unquote(path)
        if not path:
            click.echo("usage: /file PATH (its text goes before your next message)", err=True)
            return
        try:
            text = read_text_file(Path(path).expanduser())
        except InvalidInputError as e:
            click.echo(f"error: {e}", err=True)
            return
        context = self.model.config.max_position_embeddings
        tokens = len(self.tokenizer.encode(text, add_special_tokens=False))
        if tokens + self.options["max_new_tokens"] >= context:
            click.echo(f"error: {path} is {tokens} tokens; with room for an answer "
                       f"({self.options['max_new_tokens']} tokens) the context of {context} "
                       f"cannot hold it", err=True)
            return
        self.pending_text = text.strip("\n")
        click.echo(f"[{path}, {tokens} tokens, goes before your next message]", err=True)

    def image_command(self, path):
        """`/image PATH`: the picture goes with the next message; an error keeps the session."""
        path = unquote(path)
        if not path:
            click.echo("usage: /image PATH (the picture goes with your next message)", err=True)
            return
        try:
            self.attach(str(Path(path).expanduser()))
        except InvalidInputError as e:
            click.echo(f"error: {e}", err=True)


def unquote(path):
    """A path as typed after a command: quotes around it (a path with spaces) dropped."""
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "'\"":
        return path[1:-1]
    return path


def read_text_file(path):
    """The text of a UTF-8 file, or InvalidInputError saying why not."""
    if not path.exists():
        raise InvalidInputError(f"no such file: {path}")
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file")
    return decode_utf8(path.read_bytes(), f"{path} is not UTF-8 text", InvalidInputError)


def decode_utf8(data, complaint, error):
    """data decoded as UTF-8, or `error` saying `complaint` and where the first bad byte is."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{complaint} (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


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
    return decode_utf8(sys.stdin.buffer.read(), "stdin is not valid UTF-8", TinyPhi3Error)


# ---- generate ---------------------------------------------------------------------------------
@click.command("generate")
@click.option("--ckpt", default=DEFAULT_CKPT, show_default=True, help="Checkpoint directory.")
@click.option("--prompt", required=True, help="Text to continue, or - to read it from stdin.")
@click.option("--chat", "as_chat", is_flag=True,
              help="Wrap the prompt as one user message in the chat template.")
@click.option("--trim", is_flag=True,
              help="Drop the start of a prompt that is too long for the context instead of "
                   "refusing it.")
@image_option
@sampling_options
def generate_command(ckpt, prompt, as_chat, trim, images, **options):
    """Continue a prompt and print the generated text.

    \b
    Examples:
      tinyphi3 generate --ckpt checkpoints/mini --prompt "The sum of 12 and 30 is"
      echo "What is 7 times 6?" | tinyphi3 generate --ckpt checkpoints/mini --prompt - --chat

    \b
    Pictures (a Phi-3-vision checkpoint): with --chat the message starts with their tags; without
    it, write the tags <|image_1|>, <|image_2|>, ... where the pictures go, as the model card does:
      tinyphi3 generate --ckpt phi-3-vision --image cat.png --chat --prompt "What is this?"
      tinyphi3 generate --ckpt phi-3-vision --image cat.png \\
        --prompt $'<|user|>\\n<|image_1|>\\nWhat is this?<|end|>\\n<|assistant|>\\n'
    """
    from tinyphi3.inference.generate import fit_to_context
    if images:
        check_checkpoint_reads_images(ckpt)
    model, tokenizer = load_model_and_tokenizer(ckpt, options.pop("dtype"))
    processor = load_processor(ckpt, model)
    if images and processor is None:
        raise no_images_error(ckpt, model.config)
    text = read_stdin_text() if prompt == "-" else prompt
    pixels = {}
    if processor is not None:
        ids, pixels = vision_prompt(processor, text, as_chat, images)
    elif as_chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                            add_generation_prompt=True, tokenize=True)
    else:
        ids = tokenizer.encode(text)
    ids, trimmed = fit_to_context(ids, model.config.max_position_embeddings, trim=trim)
    if trimmed:
        click.echo(f"[prompt trimmed: dropped its first {trimmed} tokens to fit the "
                   f"{model.config.max_position_embeddings}-token context]", err=True)
    stream_answer(model, tokenizer, ids, options, sys.stdout, **pixels)


def vision_prompt(processor, text, as_chat, paths) -> tuple:
    """(ids, pixels) of a Phi-3-vision prompt: one user message carrying the pictures (--chat),
    or the text as the published processor reads it (its tags, its control tokens); pixels:
    generate's pixel_values and image_sizes, {} without pictures."""
    from tinyphi3.models.vision.conversation import chat_inputs
    from tinyphi3.models.vision.image_file import open_image
    images = [open_image(path) for path in paths]
    if as_chat:
        inputs = chat_inputs(processor, [{"role": "user", "content": text, "images": images}])
    else:
        inputs = processor(text, images)
    pixels = ({} if inputs["pixel_values"] is None else
              {"pixel_values": inputs["pixel_values"], "image_sizes": inputs["image_sizes"]})
    return inputs["input_ids"][0].tolist(), pixels
