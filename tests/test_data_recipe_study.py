"""benchmarks/data_recipe.py, the study of the data recipe against raw web at equal compute:
its plan (equal tokens per budget, configs that read the data the plan makes, seeds that keep the
evaluation held out, a few hours on two cores), its statistics on known numbers, the token
multiple read off synthetic curves, the cloze scorer and the measures on a tiny random model, the
runner, the report, and the one-line errors."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyphi3 import Phi3, load_tokenizer, preset
from tinyphi3.data.tasks import LETTERS
from tinyphi3.evaluation.perplexity import HELD_OUT_SEED

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "data_recipe.py"
sys.path.insert(0, str(ROOT / "benchmarks"))          # its `from fact_recall import ...`


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("data_recipe_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny():
    """A randomly initialised tiny Phi-3 with the study's tokenizer (checkpoints/mini-base's)."""
    tokenizer = load_tokenizer(ROOT / "checkpoints" / "mini-base")
    config = preset("tiny").replace(vocab_size=2112, max_position_embeddings=512,
                                    original_max_position_embeddings=512)
    return Phi3(config, seed=0), tokenizer


# ---- the plan ----------------------------------------------------------------------------------

def test_recipe_and_raw_web_train_on_equal_tokens_at_each_budget(study):
    recipes = study.load_configs()
    tokens = study.arm_tokens(recipes)
    for budget, millions in (("2m", 2), ("6m", 6), ("14m", 14)):
        chain = [run for name, _, runs in study.ARMS if name == f"recipe-{budget}" for run in runs]
        assert [recipes[r].train.batch_size * recipes[r].train.seq_len for r in chain] == [
            8 * 256] * 2
        assert tokens[f"recipe-{budget}"] == tokens[f"baseline-{budget}"]
        assert abs(tokens[f"recipe-{budget}"] / 1e6 - millions) / millions < 0.05
    assert tokens["no-textbooks-6m"] == tokens["no-filter-6m"] == tokens["recipe-6m"]


def test_the_configs_parse_and_read_the_data_the_plan_makes(study, tmp_path):
    recipes = study.load_configs()
    jobs = study.plan_jobs(results=tmp_path)           # no model kept yet: the whole plan
    made = {str(job.output) for job in jobs if job.name.startswith("data ")}
    mini_base = json.loads((ROOT / "checkpoints" / "mini-base" / "config.json").read_text())
    outputs = [recipe.output_dir for recipe in recipes.values()]
    assert len(set(outputs)) == len(outputs)
    for run, recipe in recipes.items():
        assert recipe.data_shards in made, run
        assert recipe.tokenizer == "checkpoints/mini-base"
        assert recipe.output_dir == f"runs/recipe-study/{run}"
        if recipe.init_from:                      # phase 2 continues its budget's phase 1
            phase1 = run.replace("phase2", "phase1") if run.startswith("recipe") else \
                "recipe-6m-phase1"
            assert recipe.init_from == f"runs/recipe-study/{phase1}/checkpoint"
        else:                                     # from nothing: mini-base's architecture
            config = recipe.model_config(2059).to_dict()
            for key in ("hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                        "vocab_size"):
                assert config[key] == mini_base[key], (run, key)
    starts = {job.name: (start, job) for start, job in study.schedule(jobs, done=())}
    assert len(starts) == len(jobs) == len(study.DATA_STEPS) + 11 + 8
    for start, job in starts.values():            # every input is made before it is read
        assert all(starts[n][0] + starts[n][1].seconds <= start for n in job.needs), job.name


def test_no_run_trains_on_the_seeds_of_the_held_out_text(study):
    seeds = [int(cmd.split("--seed ")[1].split()[0]) for _, cmd, _ in study.DATA_STEPS
             if " web " in f" {cmd} " or " textbooks " in f" {cmd} "]
    assert seeds and not {HELD_OUT_SEED, study.WEB_HELD_OUT_SEED} & set(seeds)
    raw = [cmd for output, cmd, _ in study.DATA_STEPS if output == "web-raw.jsonl"][0]
    assert "--seed 11" in raw and "--docs 100000" in raw   # not the recipe's web (seed 0)


def test_the_plan_fits_in_three_to_four_hours_on_two_cores(study, capsys, tmp_path):
    jobs = study.plan_jobs(results=tmp_path)
    wall = max(start + job.seconds for start, job in study.schedule(jobs, 2, done=()))
    assert 3 * 3600 <= wall <= 4 * 3600
    study.print_plan(jobs)
    printed = capsys.readouterr().out
    assert "with 2 at a time" in printed and f"{wall / 3600:.1f} h" in printed
    assert all(f". {job.name} (" in printed for job in jobs)
    assert printed.count("tinyphi3 train configs/recipe-study/") == 11
    assert printed.count("benchmarks/data_recipe.py evaluate runs/recipe-study/") == 8


def test_a_kept_model_leaves_the_plan_with_the_runs_only_it_needed(study, tmp_path):
    """docs/data_recipe_runs/<model>.json: the plan drops that model's evaluation and every run
    and data step no other model left needs; a run shared with a model left stays."""
    full = {job.name for job in study.plan_jobs(results=tmp_path)}
    for name in ("recipe-14m", "recipe-6m", "no-filter-6m"):
        (tmp_path / f"{name}.json").write_text("{}")
    assert study.recorded_arms(tmp_path) == ["recipe-6m", "recipe-14m", "no-filter-6m"]
    left = {job.name for job in study.plan_jobs(results=tmp_path)}
    gone = {"evaluate recipe-14m", "train recipe-14m-phase1", "train recipe-14m-phase2",
            "evaluate recipe-6m", "train recipe-6m-phase2", "evaluate no-filter-6m",
            "train no-filter-6m-phase2", "data shards/phase2-no-filter", "data phases-no-filter",
            "data web-part.jsonl"}
    assert full - left == gone
    assert {"train recipe-6m-phase1", "train no-textbooks-6m-phase2", "data shards/phase2",
            "evaluate baseline-14m"} <= left            # still needed by the models left
    for name, _, _ in study.ARMS:
        (tmp_path / f"{name}.json").write_text("{}")
    assert study.plan_jobs(results=tmp_path) == []


def test_a_sitting_can_take_a_few_models_and_evaluates_each_as_soon_as_it_can(study, tmp_path):
    """--arms: only what the named models need is planned (runs/ may not outlive a sitting, so
    a sitting takes what it can finish); an unknown name is one clear error; and a model's
    evaluation starts as soon as its last run is done, before any longer training waiting."""
    jobs = study.plan_jobs(results=tmp_path, arms=["recipe-2m", "baseline-2m"])
    names = {job.name for job in jobs}
    assert {"evaluate recipe-2m", "evaluate baseline-2m", "train recipe-2m-phase1",
            "train recipe-2m-phase2", "train baseline-2m", "data shards/phase1"} <= names
    assert not any("6m" in n or "14m" in n for n in names)
    assert "data phases-no-filter" not in names
    with pytest.raises(study.StudyError, match="no model named recipe-3m"):
        study.plan_jobs(results=tmp_path, arms=["recipe-3m"])
    plan = study.schedule(study.plan_jobs(results=tmp_path), done=())
    starts = {job.name: (start, start + job.seconds) for start, job in plan}
    for name, _, chain in study.ARMS:           # no training starts between a model's last run
        ready, evaluated = starts[f"train {chain[-1]}"][1], starts[f"evaluate {name}"][0]
        assert evaluated >= ready
        assert not [n for n, (start, _) in starts.items()
                    if not n.startswith("evaluate ") and ready <= start < evaluated], name


def test_the_report_reads_the_kept_models(study, tmp_path, monkeypatch):
    """report() draws from docs/data_recipe_runs alone (runs/ may be gone): the points, the runs
    table without repeats, the machine the records name."""
    monkeypatch.setattr(study, "plan_jobs", lambda configs, results: [])
    points = synthetic_points(study)
    for name, point in points.items():
        chain = next(chain for arm, _, chain in study.ARMS if arm == name)
        runs = [{"run": run, "steps": 1000, "tokens": point["tokens"] // len(chain),
                 "seconds": 60.0 / len(chain)} for run in chain]
        record = {"model": name, "group": point["group"], "n": 200, "runs": runs,
                  "measures": point["measures"], "machine": "a test machine"}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    text = study.report(out=tmp_path / "results.md", pictures=tmp_path, results=tmp_path)
    assert "- cloze fact recall, held-out facts (%): +41.5 points" in text
    assert text.count("| recipe-6m-phase1 |") == 1 and "on a test machine;" in text
    assert all((tmp_path / f"data_recipe_{m.key}.png").is_file() for m in study.MEASURES)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(study.StudyError, match="no model evaluated yet"):
        study.report(pictures=tmp_path, results=empty)


def test_a_run_with_a_checkpoint_is_resumed(study, tmp_path):
    job = study.Job("train x", ["tinyphi3", "train", "x.toml"],
                    tmp_path / "run" / "final" / "config.json", 1.0)
    assert study.command_now(job) == ["tinyphi3", "train", "x.toml"]
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / "trainer_state.json").write_text("{}")
    assert study.command_now(job)[-1] == "--resume"


# ---- statistics --------------------------------------------------------------------------------

def test_mean_and_standard_error_on_known_numbers(study):
    assert study.mean_and_se([0, 1, 0, 1]) == pytest.approx((0.5, math.sqrt(1 / 3) / 2))
    right = [1] * 30 + [0] * 70
    assert study.mean_and_se(right) == pytest.approx((0.3, math.sqrt(0.3 * 0.7 / 99)))
    # a ratio: r = 6 / 4; residuals -0.5, 1.5, -1; SE = sqrt(3.5 / 6) / (4 / 3)
    assert study.mean_and_se([1, 3, 2], [1, 1, 2]) == pytest.approx(
        (1.5, math.sqrt(3.5 / 6) / (4 / 3)))
    assert study.mean_and_se([2, 4], [1, 2]) == (2.0, 0.0)       # every window at r: no error
    with pytest.raises(study.StudyError):
        study.mean_and_se([1])


def test_differences_in_standard_errors_and_the_verdicts(study):
    diff, se, z = study.compare({"value": 0.62, "se": 0.03}, {"value": 0.5, "se": 0.04})
    assert (diff, se, z) == pytest.approx((0.12, 0.05, 2.4))
    assert study.verdict(z) == "the recipe is ahead by 2.4 standard errors"
    _, _, z = study.compare({"value": 1.0, "se": 0.1}, {"value": 1.3, "se": 0.1}, False)
    assert z == pytest.approx(0.3 / math.hypot(0.1, 0.1))        # lower is better: recipe ahead
    assert study.verdict(1.9).startswith("no clear difference")
    assert study.verdict(-2.5) == "raw web is ahead by 2.5 standard errors"
    assert study.at_chance({"value": 0.26, "se": 0.03}, 0.25)
    assert not study.at_chance({"value": 0.40, "se": 0.03}, 0.25)
    assert not study.at_chance({"value": 1.0, "se": 1.0}, None)  # a perplexity: no chance
    assert study.verdict(5.0, both_at_chance=True).startswith("both at chance")
    assert study.compare({"value": 0.0, "se": 0.0}, {"value": 0.0, "se": 0.0})[2] == 0.0


def test_the_matching_multiple_is_read_in_log_tokens(study):
    tokens = [2e6, 6e6, 14e6]
    scores = [math.log2(t / 1e6) for t in tokens]                # straight in log tokens
    assert study.matching_tokens(tokens, scores, 2.0) == pytest.approx(4e6)
    assert study.matching_tokens(tokens, [-s for s in scores], -2.0, False) == pytest.approx(4e6)
    # in log tokens the middle of (1 M, 0) and (4 M, 2) is 2 M (linear tokens would say 2.5 M)
    assert study.matching_tokens([1e6, 4e6], [0.0, 2.0], 1.0) == pytest.approx(2e6)
    assert study.matching_tokens(tokens, scores, 9.0) is None
    assert study.matching_tokens(tokens, scores, 0.5) == 2e6    # there already
    assert study.describe_multiple(2.0, 7.0) == "2.0x"
    assert study.describe_multiple(3.5, 7.0) == "not within 3x"
    assert study.describe_multiple(None, 7.0) == "not within 3x"
    assert study.describe_multiple(None, 2.3) == "not within 2.3x (the largest run)"
    assert study.describe_multiple(1.0, 7.0).startswith("1x or less")


# ---- the measures on a tiny random model -------------------------------------------------------

def test_the_cloze_scorer_picks_one_option_per_item(tiny):
    from tinyphi3.evaluation.harness import evaluate
    model, tokenizer = tiny
    result = evaluate(model, tokenizer, "knowledge", shots=1, n=4, cloze=True)
    assert result["format"] == "cloze" and len(result["records"]) == 4
    for record in result["records"]:
        scores = record["loglikelihoods"]
        assert list(scores) == list(LETTERS[:len(record["options"])])
        assert all(np.isfinite(v) and v < 0 for v in scores.values())
        assert record["prediction"] == max(scores, key=scores.get)


def test_every_measure_gives_a_value_and_its_error(study, tiny):
    scores = study.evaluate_model(*tiny, n=2)
    assert list(scores) == [m.key for m in study.MEASURES]
    for m in study.MEASURES:
        assert scores[m.key]["n"] >= 2 and scores[m.key]["se"] >= 0
        if m.chance is None:                     # a random model: near ln(vocab) nats per token
            assert 5.0 < scores[m.key]["value"] < 10.0
        else:
            assert 0.0 <= scores[m.key]["value"] <= 1.0


# ---- the runner and the report -----------------------------------------------------------------

def writer(path, code=0):
    """A command that appends a line to runs.txt beside `path`, then writes `path`."""
    return ["python", "-c", f"import sys, pathlib; p = pathlib.Path(sys.argv[1]); "
            f"open(p.parent / 'runs.txt', 'a').write(p.name + '\\n'); p.write_text('x'); "
            f"sys.exit({code})", str(path)]


def test_the_runner_orders_skips_and_resumes(study, tmp_path):
    a = study.Job("a", writer(tmp_path / "a.jsonl"), tmp_path / "a.jsonl", 1, atomic=True)
    b = study.Job("b", writer(tmp_path / "b"), tmp_path / "b", 1, ["a"])
    c = study.Job("c", writer(tmp_path / "c", code=3), tmp_path / "c", 1)
    d = study.Job("d", writer(tmp_path / "d"), tmp_path / "d", 1, ["c"])
    failed = study.run_jobs([d, c, b, a], every=0, log_dir=tmp_path / "logs", poll=0.05)
    assert sorted(failed) == ["c", "d"]
    assert (tmp_path / "a.jsonl").exists() and not (tmp_path / "a.tmp.jsonl").exists()
    assert (tmp_path / "runs.txt").read_text().split().index("a.tmp.jsonl") < \
        (tmp_path / "runs.txt").read_text().split().index("b")
    (tmp_path / "c").unlink()
    assert study.run_jobs([d, c, b, a], every=0, log_dir=tmp_path / "logs",
                          poll=0.05) == ["c", "d"]
    assert (tmp_path / "runs.txt").read_text().split().count("b") == 1   # done: not run again


def synthetic_points(study):
    """Scores as the study could find them: the recipe ahead on facts, raw web on web text."""
    points = {}
    for name, group, _ in study.ARMS:
        tokens = {"2m": 2_048_000, "6m": 6_144_000, "14m": 14_336_000}[name.split("-")[-1]]
        step = math.log2(tokens / 2_048_000)
        good = group != "baseline"
        measures = {m.key: {"value": (0.3 + 0.15 * step if good else 0.25 + 0.02 * step)
                            if m.chance is not None else (1.0 - 0.1 * step if good else 4.0 - step)
                            + (2.0 if m.key == "web_ppl" and good else 0.0), "se": 0.02, "n": 200}
                    for m in study.MEASURES}
        points[name] = {"group": group, "tokens": tokens, "seconds": 60.0, "measures": measures}
    return points


def test_the_report_draws_a_picture_per_measure_and_gives_verdicts(study, tmp_path):
    points = synthetic_points(study)
    drawn = [study.draw_measure(m, points, tmp_path) for m in study.MEASURES]
    assert [p.name for p in drawn] == [f"data_recipe_{m.key}.png" for m in study.MEASURES]
    assert all(Image.open(p).size == (900, 520) for p in drawn)
    text = study.report_markdown(points, [("baseline-2m", 1000, 2_048_000, 600.0)],
                                 [p.name for p in drawn])
    assert "- cloze fact recall, held-out facts (%): +41.5 points" in text
    assert "the recipe is ahead by" in text and "raw web is ahead by" in text
    assert "not within 3x" in text and "| baseline-2m | 1,000 | 2,048,000 | 10 |" in text
    assert "recipe at chance" not in text
    assert all(f"({p.name})" in text for p in drawn)


# ---- bad input ---------------------------------------------------------------------------------

def test_bad_input_gives_one_line_and_a_non_zero_exit(study, tmp_path, capsys):
    for argv in (["evaluate", str(tmp_path / "no-such-run")],
                 ["study", "--plan", "--configs", str(tmp_path / "no-such-configs")],
                 ["study", "--plan", "--configs", str(tmp_path)],       # no TOML files in it
                 ["report", "--configs", str(tmp_path / "no-such-configs")]):
        assert study.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, argv
    done = subprocess.run([sys.executable, str(SCRIPT), "evaluate", str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"error: {tmp_path / 'none'}: no finished model there (no " \
        "final/config.json); train it first\n"


def test_kill_pauses_the_runner_started_in_the_background_and_the_run_saves(tmp_path):
    """A study started in the background ignores SIGINT (the shell's rule); `kill PID` (SIGTERM)
    still pauses it: the running command gets SIGINT, as training does on Ctrl-C, and the runner
    says how to continue and exits non-zero."""
    import signal
    import time
    job = ("import signal, sys, time, pathlib; p = pathlib.Path(sys.argv[1]); "
           "signal.signal(signal.SIGINT, lambda *_: (p.with_name('saved').write_text('x'), "
           "sys.exit(1))); p.with_name('started').write_text('x'); time.sleep(60)")
    runner = (f"import importlib.util, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
              f"spec = importlib.util.spec_from_file_location('s', {str(SCRIPT)!r}); "
              "s = importlib.util.module_from_spec(spec); spec.loader.exec_module(s); "
              f"out = {str(tmp_path / 'out')!r}; "
              f"job = s.Job('j', ['python', '-c', {job!r}, out], s.Path(out), 1); "
              f"s.run_jobs([job], every=0, log_dir={str(tmp_path / 'logs')!r}, poll=0.05)")
    process = subprocess.Popen([sys.executable, "-c", runner], cwd=ROOT, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                           signal.SIG_IGN))
    for _ in range(600):
        if (tmp_path / "started").exists():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode != 0 and (tmp_path / "saved").exists()
    assert "run the same command again to continue" in err
