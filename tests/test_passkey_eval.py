"""The long-context evaluation (tinyphi3.evaluation.passkey): the grid's shape and its cells past
the context on a tiny random model, the scoring path checked with rigged answers (the key: 100%;
a digit off, or cut short: 0%), the past-context view (same weights, only the limit moved), the
loss by position against a direct computation, the tables and pictures, and `tinyphi3 eval
--task passkey|position-ppl`."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tinyphi3.cli.evaluation import eval_command
from tinyphi3.config import preset
from tinyphi3.data import world
from tinyphi3.errors import ContextLengthError
from tinyphi3.evaluation import passkey
from tinyphi3.inference.generate import generate
from tinyphi3.models.model import Phi3
from tinyphi3.pictures.passkey import passkey_heatmaps, position_plot
from tinyphi3.tokenizers import load_tokenizer

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"
CONTEXT = 128


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MINI)


@pytest.fixture(scope="module")
def tiny(tok):
    """A random two-layer Phi-3 with the mini's vocabulary and a context of 128 tokens."""
    config = preset("tiny").replace(vocab_size=2112, num_hidden_layers=2,
                                    max_position_embeddings=CONTEXT,
                                    original_max_position_embeddings=CONTEXT,
                                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                    pad_token_id=tok.pad_token_id)
    return Phi3(config, seed=0)


# ---- the grid -----------------------------------------------------------------------------------

def test_the_grid_has_a_cell_per_depth_and_length_and_marks_those_past_the_context(tiny, tok):
    seen = []
    grid = passkey.passkey_grid(tiny, tok, lengths=(96, 128, 256), depths=(0.0, 0.5, 1.0),
                                n_per_cell=2, progress=seen.append)
    assert np.shape(grid["accuracy"]) == (3, 3)
    for row in grid["accuracy"]:
        assert row[2] is None                                       # 256 > 128: past
        assert all(0.0 <= a <= 1.0 for a in row[:2])
    assert grid["context"] == CONTEXT and grid["past_context"] is False
    assert len(grid["records"]) == 3 * 2 * 2 and sum(seen) == 3 * 3 * 2
    assert all(world.held_out(("passkey", int(r["key"]))) for r in grid["records"])


def test_past_the_context_generation_refuses_and_the_view_runs_it(tiny, tok):
    (ids, _), = passkey.passkey_prompts(tok, 256, 0.5, 1)
    with pytest.raises(ContextLengthError):
        next(generate(tiny, ids, max_new_tokens=2))
    grid = passkey.passkey_grid(tiny, tok, lengths=(128, 256), depths=(0.5,), n_per_cell=1,
                                allow_past_context=True)
    assert all(a is not None for a in grid["accuracy"][0]) and grid["past_context"] is True
    assert tiny.config.max_position_embeddings == CONTEXT          # the model itself unchanged
    within = passkey.passkey_grid(tiny, tok, lengths=(128,), depths=(0.5,), n_per_cell=1,
                                  allow_past_context=True)
    assert within["past_context"] is False                # nothing was past it: not "run past it"
    assert "run past it" not in passkey.format_passkey_tables({"tiny": within})


def test_the_view_shares_the_weights_and_gives_the_same_logits(tiny):
    view = passkey.past_context_view(tiny, 512)
    assert view.config.max_position_embeddings == 512 and view.config.rope_scaling is None
    assert all(view.params[k] is tiny.params[k] for k in tiny.params)
    ids = np.arange(3, 60)[None]
    np.testing.assert_array_equal(view(ids), tiny(ids))


def test_the_view_of_a_longrope_model_keeps_its_attention_factor():
    model = Phi3(preset("tiny-longrope"), seed=0)
    view = passkey.past_context_view(model, 4 * model.config.max_position_embeddings)
    assert view.config.longrope_attention_factor == model.config.longrope_attention_factor
    ids = np.arange(3, 80)[None]                                   # past L0 = 32: long factors
    np.testing.assert_allclose(view(ids), model(ids), rtol=1e-6, atol=1e-6)


def rigged(tok, answer):
    """A stand-in for generate: reads the key from the prompt and yields the tokens of
    answer(key)."""
    def fake_generate(model, prompt_ids, **kwargs):
        key = re.search(r"The pass key is (\d+)\.", tok.decode(prompt_ids)).group(1)
        yield from tok.encode(answer(key))
    return fake_generate


FAKE = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=4096, rope_scaling=None))


@pytest.mark.parametrize("answer, accuracy", [
    (lambda key: f" {key}.", 1.0),                                 # the key: all right
    (lambda key: f" {key} is the pass key", 1.0),
    (lambda key: f" {key[:-1]}{(int(key[-1]) + 1) % 10}.", 0.0),   # one digit off
    (lambda key: f" {key[:4]}.", 0.0),                              # cut short
    (lambda key: f" {key}1", 0.0),                                 # one digit too many
    (lambda key: " I do not know.", 0.0)])                         # no number at all
def test_the_scoring_path_on_rigged_answers(monkeypatch, tok, answer, accuracy):
    monkeypatch.setattr(passkey, "generate", rigged(tok, answer))
    grid = passkey.passkey_grid(FAKE, tok, lengths=(100, 300), depths=(0.0, 1.0), n_per_cell=3)
    assert grid["accuracy"] == [[accuracy] * 2] * 2


def test_every_model_is_asked_the_same_documents(tok):
    first = passkey.passkey_prompts(tok, 200, 0.25, 3, seed=4)
    assert first == passkey.passkey_prompts(tok, 200, 0.25, 3, seed=4)
    assert first != passkey.passkey_prompts(tok, 200, 0.25, 3, seed=5)
    assert all(abs(len(ids) + len(tok.encode(f" {key}.")) - 200) <= 2 for ids, key in first)


def test_the_passkey_table(tiny, tok):
    grid = {"lengths": [512, 4096], "depths": [0.0, 1.0], "accuracy": [[1.0, None], [0.5, None]],
            "n_per_cell": 4, "context": 512, "past_context": False}
    table = passkey.format_passkey_tables({"mini": grid, "mini-4k": {
        **grid, "accuracy": [[1.0, 1.0], [1.0, 0.75]], "context": 4096}})
    lines = table.splitlines()
    assert "mini (context 512)" in lines[0]
    assert lines[2].split() == ["0.00", "100", "past"] and lines[3].split() == ["1.00", "50",
                                                                               "past"]
    assert table.splitlines()[-1].split() == ["1.00", "100", "75"]


# ---- the loss by position -----------------------------------------------------------------------

def direct_nll(model, ids):
    """-log softmax(logits[t - 1])[ids[t]] for t = 1 .. T-1, in float64, by hand."""
    logits = model(np.asarray(ids)[None])[0].astype(np.float64)     # [T, V]
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -logp[np.arange(len(ids) - 1), ids[1:]]                  # [T-1]


def test_position_perplexity_equals_a_direct_computation(tiny):
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 2000, size=128), rng.integers(3, 2000, size=90)]
    buckets = [(0, 32), (32, 64), (64, 128), (128, 256)]
    out = passkey.position_perplexity(tiny, docs, buckets)
    nll = [direct_nll(tiny, d) for d in docs]                        # position t = index + 1
    for (lo, hi), got in zip(buckets[:3], out[:3]):
        picked = np.concatenate([n[max(lo, 1) - 1:hi - 1] for n in nll])
        assert got["tokens"] == len(picked) and got["bucket"] == [lo, hi]
        assert np.isclose(got["nll"], picked.mean(), rtol=1e-5)
        assert np.isclose(got["perplexity"], np.exp(picked.mean()), rtol=1e-5)
    assert out[3] == {"bucket": [128, 256], "tokens": 0, "nll": None, "perplexity": None}
    assert passkey.pooled_perplexity(out) is None
    assert np.isclose(passkey.pooled_perplexity(out[:3]), np.exp(np.concatenate(nll).mean()),
                      rtol=1e-5)


def test_position_perplexity_past_the_context_when_allowed(tiny):
    doc = np.random.default_rng(1).integers(3, 2000, size=200)
    out = passkey.position_perplexity(tiny, [doc], [(0, 128), (128, 256)], allow_past_context=True)
    assert out[1]["tokens"] == 200 - 128 and out[1]["nll"] > 0
    assert np.isclose(out[1]["nll"], direct_nll(tiny, doc)[127:].mean(), rtol=1e-5)


def test_buckets_and_held_out_long_documents(tok):
    assert passkey.buckets_between([1024, 512, 4096, 2048]) == [(0, 512), (512, 1024),
                                                               (1024, 2048), (2048, 4096)]
    docs = passkey.heldout_long_ids(tok, 2, 300)
    assert [len(d) for d in docs] == [300, 300]


def test_the_position_table():
    rows = [{"bucket": [0, 512], "tokens": 10, "nll": np.log(4.0), "perplexity": 4.0},
            {"bucket": [512, 1024], "tokens": 10, "nll": np.log(4.0), "perplexity": 4.0}]
    past = [rows[0], {"bucket": [512, 1024], "tokens": 0, "nll": None, "perplexity": None}]
    lines = passkey.format_position_table({"mini-4k": rows, "mini": past}).splitlines()
    assert lines[2].split() == ["512-1024", "4.000", "past"]
    assert lines[-1].split()[-2:] == ["100.0%", "-"]


def test_the_pictures(tmp_path):
    grid = {"lengths": [512, 1024, 4096], "depths": [0.0, 0.5, 1.0], "n_per_cell": 2,
            "accuracy": [[1.0, None, None], [0.5, None, None], [0.0, None, None]],
            "context": 512, "past_context": False}
    path = passkey_heatmaps(tmp_path / "grid.png", {"mini": grid, "mini-4k": grid}, "passkey")
    assert Image.open(path).size[0] > Image.open(path).size[1] > 100
    rows = [{"bucket": [0, 512], "tokens": 1, "nll": 1.0, "perplexity": 2.7},
            {"bucket": [512, 1024], "tokens": 0, "nll": None, "perplexity": None}]
    assert position_plot(tmp_path / "ppl.png", {"mini": rows}, "ppl").is_file()


def test_a_narrow_log_axis_still_gets_tick_labels():
    """Perplexities of 2-7 span no power of ten: the axis is labelled 2 and 5 (1-2-5 steps), a
    wider one at powers of ten, a still narrower one at every digit."""
    import math

    from tinyphi3.pictures.charts import _ticks
    assert _ticks(math.log10(1.9), math.log10(7.5), True) == [2.0, 5.0]
    assert _ticks(math.log10(45), math.log10(420), True) == [50.0, 100.0, 200.0]
    assert _ticks(0.0, 2.0, True) == [1.0, 10.0, 100.0]
    assert _ticks(math.log10(2.5), math.log10(4.5), True) == [3.0, 4.0]


# ---- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt(tiny, tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("passkey") / "tiny-long"
    tiny.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_cli_help_names_the_long_context_tasks():
    result = CliRunner().invoke(eval_command, ["--help"])
    assert result.exit_code == 0
    for word in ("passkey", "position-ppl", "--lengths", "--depths", "--past-context"):
        assert word in result.output


def test_cli_prints_the_grid_and_draws_it(ckpt, tmp_path):
    result = CliRunner().invoke(eval_command, [
        "--ckpt", str(ckpt), "--task", "passkey", "--lengths", "96,256", "--depths", "0,1",
        "--per-cell", "1", "--chart", str(tmp_path / "grid.png"), "--json",
        str(tmp_path / "out.json")])
    assert result.exit_code == 0, result.output
    assert "passkey retrieval" in result.output and "past" in result.output
    assert (tmp_path / "grid.png").is_file()
    grid = json.loads((tmp_path / "out.json").read_text())["tiny-long"]["passkey"]
    assert [row[1] for row in grid["accuracy"]] == [None, None]


def test_cli_position_perplexity_and_a_chart_each(ckpt, tmp_path):
    result = CliRunner().invoke(eval_command, [
        "--ckpt", str(ckpt), "--task", "passkey,position-ppl", "--lengths", "96,128",
        "--depths", "0.5", "--per-cell", "1", "--long-docs", "1", "--chart",
        str(tmp_path / "long.png")])
    assert result.exit_code == 0, result.output
    assert re.search(r"96-128\s+\d+\.\d{3}", result.output)
    assert (tmp_path / "long-passkey.png").is_file() and (tmp_path / "long-position-ppl.png")\
        .is_file()


@pytest.mark.parametrize("option, value, message", [
    ("--lengths", "512,abc", "'abc' is not a length in tokens"),
    ("--lengths", "-5", "'-5' is not a length in tokens"),
    ("--depths", "0,1.5", "'1.5' is not a depth"),
    ("--depths", "half", "'half' is not a depth"),
    ("--lengths", "50,128", "cannot hold the question")])
def test_cli_bad_values_are_one_clear_message(ckpt, option, value, message):
    result = CliRunner().invoke(eval_command, ["--ckpt", str(ckpt), "--task", "passkey",
                                               option, value])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output
