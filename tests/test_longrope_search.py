"""LongRoPE's evolutionary search (tinyphi3.train.longrope_search) on a tiny random model, and the
`tinyphi3 longrope` commands on a tiny checkpoint."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tinyphi3.cli import main
from tinyphi3.cli.info import init_checkpoint, starter_corpus
from tinyphi3.cli.longrope import long_documents
from tinyphi3.data.documents import read_documents
from tinyphi3.config import Phi3Config
from tinyphi3.models.model import Phi3
from tinyphi3.nn import rope_scaling
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.train import longrope_search

L0, TARGET, V = 16, 64, 64


@pytest.fixture(scope="module")
def model():
    """2 layers, hidden 32, head_dim 8 (4 frequencies), trained (say) at 16 tokens; large random
    weights, so that the angles matter to the logits."""
    config = Phi3Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=L0,
                        original_max_position_embeddings=L0, initializer_range=0.3,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return Phi3(config, seed=1)


@pytest.fixture(scope="module")
def docs():
    return list(np.random.default_rng(5).integers(0, V, (3, TARGET)))


@pytest.fixture(scope="module")
def result(model, docs):
    return longrope_search.search_long_factors(model, docs, TARGET, population=8, generations=3,
                                               seed=0, batch_size=2)


def independent_perplexity(model, docs, factors):
    """exp(mean NLL) of a fresh model under the extended config, scored by torch."""
    config = rope_scaling.extend_config(model.config, "longrope", TARGET, factors)
    ids = np.stack(docs)
    logits = torch.tensor(Phi3(config, params=model.params)(ids))           # [N, T, V]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V).double(),
                                            torch.tensor(ids[:, 1:]).reshape(-1))
    return math.exp(float(nll))


def test_every_candidate_is_monotone_and_within_bounds(result):
    s = TARGET / L0
    assert len(result.evaluated) == longrope_search.evaluations(8, 3) == 20
    for factors, _ in result.evaluated:
        assert len(factors) == 4
        assert np.all(np.diff(factors) >= 0), factors
        assert 1.0 <= min(factors) and max(factors) <= 1.25 * s, factors


def test_the_best_is_never_worse_than_the_seeded_baselines(result):
    assert set(result.seeds) == {"pi", "ntk", "yarn"}
    assert result.perplexity <= min(result.seeds.values())
    assert len(result.history) == 3 + 1
    assert all(b <= a for a, b in zip(result.history, result.history[1:]))
    assert result.history[-1] == result.perplexity
    assert min(p for _, p in result.evaluated) == result.perplexity


def test_same_seed_same_search(model, docs, result):
    again = longrope_search.search_long_factors(model, docs, TARGET, population=8, generations=3,
                                                seed=0, batch_size=2)
    assert again.evaluated == result.evaluated and again.long_factor == result.long_factor
    other = longrope_search.search_long_factors(model, docs, TARGET, population=8, generations=3,
                                                seed=1, batch_size=2)
    assert other.evaluated != result.evaluated


def test_objective_is_the_mean_nll_of_the_model_under_the_config(model, docs, result):
    for factors, ppl in [result.evaluated[0], result.evaluated[-1],
                         (result.long_factor, result.perplexity)]:
        assert ppl == pytest.approx(independent_perplexity(model, docs, factors), rel=1e-5)
    assert model.config.rope_scaling is None                       # the model is left as it was
    # the seeds are the methods' factors with LongRoPE's magnitude: pi's is longrope's start
    baselines = longrope_search.baseline_perplexities(model, docs, TARGET)
    assert baselines["longrope"] == pytest.approx(result.seeds["pi"], rel=1e-6)   # batch 1, 2
    assert baselines["none"] == pytest.approx(math.exp(longrope_search.mean_nll(model, docs)))
    # and the factors do matter: the candidates' perplexities differ
    assert max(p for _, p in result.evaluated) > 1.001 * result.perplexity


# ---- the command line ----------------------------------------------------------------------
LENGTH = 300                                      # the tiny preset is trained at 256 tokens


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return init_checkpoint("tiny", tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """Five documents: three long ones (about 1000 tokens) and two short ones."""
    corpus = starter_corpus()
    texts = [corpus[i * 2000:(i + 1) * 2000] for i in range(3)] + ["A short one.", "Another."]
    path = tmp_path_factory.mktemp("text") / "long.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in [texts[3], *texts[:3],
                                                                       texts[4]]))
    return path


def invoke(*args):
    return CliRunner().invoke(main, ["longrope", *map(str, args)])


def assert_one_clear_error(result, fragment):
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert fragment in err, err


def test_search_writes_a_checkpoint_with_the_found_factors(ckpt, text_file, tmp_path):
    out = tmp_path / "long"
    result = invoke("search", "--ckpt", ckpt, "--text", text_file, "--length", LENGTH,
                    "--docs", 2, "--population", 4, "--generations", 1, "--seed", 0,
                    "--out", out)
    assert result.exit_code == 0, result.output
    assert "longrope (found)" in result.stdout and "search.json" in result.stdout
    assert "candidate" in result.stderr                                # the progress bar
    report = json.loads((out / "search.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["rope_scaling"]["long_factor"] == report["long_factor"]
    assert config["rope_scaling"]["short_factor"] == [1.0] * 8
    assert (config["max_position_embeddings"], config["original_max_position_embeddings"]) \
        == (LENGTH, 256)
    assert set(report["baselines"]) == {"none", "pi", "ntk", "yarn", "longrope"}
    assert len(report["best_per_generation"]) == 2
    assert report["perplexity"] <= min(report["seeds"].values())
    for name in ("model.safetensors", "tokenizer.model", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (ckpt / name).read_bytes()
    # the written checkpoint scores the documents as the search did
    docs = long_documents(load_tokenizer(out), [d["text"] for d in read_documents(text_file)],
                          LENGTH, 2)
    ppl = math.exp(longrope_search.mean_nll(Phi3.from_pretrained(out), docs))
    assert ppl == pytest.approx(report["perplexity"], rel=1e-6)


@pytest.mark.parametrize("method", rope_scaling.METHODS)
def test_extend_writes_each_method(ckpt, tmp_path, method):
    out = tmp_path / method
    result = invoke("extend", "--ckpt", ckpt, "--method", method, "--length", 1024, "--out", out)
    assert result.exit_code == 0, result.output
    config = Phi3Config.from_json_file(out / "config.json")
    factors, attention = rope_scaling.method_factors(method, 16, 10000.0, 256, 4.0)
    assert config.rope_scaling["long_factor"] == factors
    assert config.longrope_attention_factor == pytest.approx(attention)
    assert ("attention_factor" in config.rope_scaling) == (method != "longrope")
    assert Phi3.from_pretrained(out)(np.zeros((1, 300), np.int64)).shape == (1, 300, 512)


def test_errors_are_one_clear_line(ckpt, text_file, tmp_path):
    search = ("search", "--ckpt", ckpt, "--population", 4, "--generations", 0)
    assert_one_clear_error(invoke(*search, "--text", tmp_path / "nope.jsonl", "--length", LENGTH,
                                  "--out", tmp_path / "a"), "nope.jsonl: no such file")
    assert_one_clear_error(invoke(*search, "--text", text_file, "--length", 5000,
                                  "--out", tmp_path / "a"), "the longest has")
    assert_one_clear_error(invoke(*search, "--text", text_file, "--length", 256,
                                  "--out", tmp_path / "a"), "must be longer than the context")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n["not", "an", "object"]\n')
    assert_one_clear_error(invoke(*search, "--text", bad, "--length", LENGTH,
                                  "--out", tmp_path / "a"), "line 2: expected an object")
    assert_one_clear_error(invoke("extend", "--ckpt", tmp_path / "missing", "--method", "pi",
                                  "--length", 512, "--out", tmp_path / "b"), "not found")
    extended = tmp_path / "extended"
    assert invoke("extend", "--ckpt", ckpt, "--method", "pi", "--length", 512,
                  "--out", extended).exit_code == 0
    assert_one_clear_error(invoke("extend", "--ckpt", extended, "--method", "yarn", "--length",
                                  1024, "--out", tmp_path / "c"), "already runs at 512")
    assert_one_clear_error(invoke("extend", "--ckpt", ckpt, "--method", "pi", "--length", 512,
                                  "--out", extended), "already exists and is not empty")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_help_explains_with_an_example():
    for command in (["longrope"], ["longrope", "search"], ["longrope", "extend"]):
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output
