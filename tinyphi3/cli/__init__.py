"""The `tinyphi3` command line, one module per command group:

    chat, generate     chat.py        talk to a model, or continue a prompt
    info, init, grow,  info.py        what a checkpoint holds and costs; a random one to start from;
    merge                             a deeper copy of a trained one; models merged in weight space
    quantize           quantize.py    4-bit weights from a float checkpoint
    tokenizer train    tokenizer.py   a tokenizer of your own
    data ...           data.py        the data recipe, stage by stage, and post-training data
    train              train.py       train as a recipe says
    eval               evaluation.py  few-shot evaluation in the report's format, safety, wordings,
                                      pictures
    blocksparse        blocksparse.py the report's Figure 2: a block-sparse layout, drawn
    longrope           longrope.py    a longer context without retraining: pi, ntk, yarn, and
                                      LongRoPE's searched factors
    (shared)           options.py     --backend, sampling options, loading a checkpoint
    (shared)           images.py      --image for chat and generate: files opened, checked, read

Every tinyphi3 error ends a command with one line on stderr and exit status 1.
"""

import click

from tinyphi3.cli import (blocksparse, chat, data, evaluation, info, longrope, quantize,
                          tokenizer, train)
from tinyphi3.errors import TinyPhi3Error


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


main.add_command(chat.chat)
main.add_command(chat.generate_command, name="generate")
main.add_command(info.info)
main.add_command(info.init)
main.add_command(info.grow)
main.add_command(info.merge)
main.add_command(quantize.quantize)
main.add_command(train.train)
main.add_command(tokenizer.tokenizer)
main.add_command(data.data)
main.add_command(evaluation.eval_command, name="eval")
main.add_command(blocksparse.blocksparse_command, name="blocksparse")
main.add_command(longrope.longrope)
