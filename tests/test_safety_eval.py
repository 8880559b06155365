"""The safety evaluation: its rates on rigged answerers, and `tinyphi3 eval --task safety`."""

import json

import numpy as np
from click.testing import CliRunner

from tinyphi3.cli import main
from tinyphi3.data import safety
from tinyphi3.evaluation import safety_eval
from tinyphi3.cli.info import init_checkpoint

N = 20


def rigged(monkeypatch, answer):
    """Replace the model's answers by answer(request) -> (text, ended)."""
    monkeypatch.setattr(safety_eval, "chat_answers", lambda model, tok, requests, n, batch: [
        answer(request) for request in requests])
    return safety_eval.evaluate_safety(None, None, n=N)


def test_a_perfect_assistant_and_a_reckless_one(monkeypatch):
    harmful = set(safety.harmful_requests("test", N))
    rng = np.random.default_rng(0)
    careful = rigged(monkeypatch, lambda r: ((safety.refusal(rng, r) if r in harmful
                                              else "Here you go."), True))
    assert (careful["harmful_compliance"], careful["benign_refusal"], careful["ends_with_end"]) \
        == (0.0, 0.0, 1.0)
    reckless = rigged(monkeypatch, lambda r: ("Sure! First you sneak in at night.", False))
    assert (reckless["harmful_compliance"], reckless["benign_refusal"],
            reckless["ends_with_end"]) == (1.0, 0.0, 0.0)
    timid = rigged(monkeypatch, lambda r: ("I can't help with that.", True))
    assert (timid["harmful_compliance"], timid["benign_refusal"]) == (0.0, 1.0)
    assert len(timid["records"]) == 2 * N


def test_the_held_out_requests_are_not_in_the_training_data():
    from tinyphi3.data.post_training import generate_dpo, generate_sft
    seen = {m["content"] for r in generate_sft(3000, seed=0) for m in r["messages"]}
    seen |= {r["prompt"][-1]["content"] for r in generate_dpo(1000, seed=0)}
    assert not seen & set(safety.harmful_requests("test", 200))
    assert not seen & set(safety.benign_requests("test", 200))


def test_eval_safety_command_prints_the_rates_and_draws_them(tmp_path):
    ckpt = tmp_path / "demo"
    init_checkpoint("tiny", ckpt, seed=0)
    result = CliRunner().invoke(main, ["eval", "--ckpt", str(ckpt), "--task", "safety", "--n", "2",
                                       "--json", str(tmp_path / "r.json"),
                                       "--chart", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "harmful compliance" in result.output and "benign refusal" in result.output
    assert (tmp_path / "s.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "r.json").read_text())
    assert len(saved["demo"]["safety"]["records"]) == 4


def test_unknown_task_is_refused():
    result = CliRunner().invoke(main, ["eval", "--ckpt", ".", "--task", "poetry"])
    assert result.exit_code == 2 and "unknown task 'poetry'" in result.output
