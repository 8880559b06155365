"""`tinyphi3 train`: train as a recipe (configs/*.toml) says."""

import sys

import click


@click.command()
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
      tinyphi3 train configs/mini-vision-sft.toml      (phi-3-vision: pictures and questions)
      tinyphi3 train configs/mini-vision-tower.toml    (its tower alone, on the pictures' facts)
      tinyphi3 train configs/mini-long-direct-distill4.toml   (learn a frozen teacher's replies)
      tinyphi3 train configs/mini-vision-tower18-distill.toml (the same, pictures on some steps)
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
    unit = "pictures" if trainer.recipe.stage == "vision_tower" else "tokens"
    click.echo(f"trained {s['step']} steps ({s['tokens']:,} {unit}) in {s['seconds'] / 60:.1f} min;"
               f" final loss {s['losses'][-1][1]:.3f}; model in {final}")
