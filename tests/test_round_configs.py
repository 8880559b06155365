"""The wide rounds' DPO configs that name their pairs' command ("# pairs: ..." run by
configs/wide-round.sh after the SFT): the command is one the CLI knows, and it writes the file
the recipe trains on from the SFT the recipe starts from."""

import shlex
from pathlib import Path

from click.testing import CliRunner

from tinyphi3.cli import main
from tinyphi3.train.recipe import load_recipe

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def pairs_commands():
    for path in sorted(CONFIGS.glob("*.toml")):
        for line in path.read_text().splitlines():
            if line.startswith("# pairs: "):
                yield path, shlex.split(line.removeprefix("# pairs: "))


def test_every_pairs_line_is_a_command_that_writes_the_recipe_s_pairs_from_its_start():
    found = list(pairs_commands())
    assert found and "# pairs: " in (CONFIGS.parent / "configs" / "wide-round.sh").read_text()
    for path, words in found:
        assert words[:3] == ["tinyphi3", "data", "dpo-own"], (path, words)
        options = dict(zip(words[3::2], words[4::2]))
        recipe = load_recipe(path)
        assert Path(options["--out"]) == Path(recipe.data_file), path
        assert Path(options["--ckpt"]) == Path(recipe.init_from), path
        help_run = CliRunner().invoke(main, [*words[1:3], "--help"])
        assert help_run.exit_code == 0
        assert set(options) <= set(w for w in help_run.output.split() if w.startswith("--"))


def test_every_merge_in_the_merges_script_uses_options_the_cli_knows():
    """configs/wide-merges.sh's `make NAME ...` lines are `tinyphi3 merge` calls: each names
    checkpoints the round's recipes write and options `tinyphi3 merge` has."""
    script = (CONFIGS / "wide-merges.sh").read_text()
    variables = dict(line.split("=", 1) for line in script.splitlines()
                     if line[:1].isupper() and "=" in line and " " not in line.split("=")[0])
    variables = {k: v.split()[0] for k, v in variables.items()}
    written = {Path(load_recipe(p).output_dir) / "final" for p in CONFIGS.glob("wide-*.toml")}
    help_run = CliRunner().invoke(main, ["merge", "--help"])
    known = set(w for w in help_run.output.split() if w.startswith("--"))
    calls = [shlex.split(line) for line in script.replace("\\\n", " ").splitlines()
             if line.startswith("make ")]
    assert len(calls) >= 6
    for words in calls:
        args = words[2:]
        options = args[0::2]
        assert set(options) <= known, words
        for option, value in zip(options, args[1::2]):
            if option in ("--ckpt", "--base"):
                assert value.startswith("$"), words
                assert Path(variables[value[1:]]) in written, (words, variables[value[1:]])
