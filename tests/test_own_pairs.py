"""Preference pairs from a chat model's own mistakes (tinyphi3.evaluation.own_pairs, `tinyphi3 data
dpo-own`): train requests only, a pair exactly for each reply its family's rule judges wrong."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_wordings import held_out_detector
from tinyphi3.cli import main
from tinyphi3.evaluation import own_pairs
from tinyphi3.evaluation import wording
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.train.conversations import load_preferences

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"


def test_requests_are_train_wordings_in_turn_and_every_data_reply_passes_its_rule():
    drawn = own_pairs.requests(300, seed=0)
    detect = held_out_detector()
    assert [f for f, _, _ in drawn[:10]] == list(own_pairs.FAMILIES)
    for family, messages, expected in drawn:
        assert messages[-1]["role"] == "assistant"
        assert not [m for m in messages if m["role"] == "user" and detect(m["content"])]
        assert wording.judge(family, messages[-1]["content"], expected)["ok"], messages
    assert own_pairs.requests(30, seed=1) == own_pairs.requests(30, seed=1)
    assert own_pairs.requests(30, seed=1) != own_pairs.requests(30, seed=2)
    with pytest.raises(ValueError, match="families"):
        own_pairs.requests(5, families=("farewell",))


def test_a_pair_exactly_for_each_wrong_reply(monkeypatch):
    """A stand-in model: right (the data's reply) on even requests, a greeting on odd ones, and
    an empty reply on every fifth; only the wrong, non-empty replies become pairs."""
    drawn = own_pairs.requests(40, seed=3)
    answers = {}
    for k, (family, messages, _) in enumerate(drawn):
        answers[json.dumps(messages[:-1])] = ("" if k % 5 == 4 else messages[-1]["content"]
                                              if k % 2 == 0 else "Hello! How can I help?")

    def fake_replies(model, tokenizer, conversations, max_new_tokens, batch_size):
        return [answers[json.dumps(c)] for c in conversations]
    monkeypatch.setattr(wording, "replies", fake_replies)
    pairs, asked, wrong = own_pairs.own_error_pairs(None, None, 40, seed=3, batch_size=7)
    expected = [(messages, answers[json.dumps(messages[:-1])], family)
                for family, messages, want in drawn
                if answers[json.dumps(messages[:-1])]
                and not wording.judge(family, answers[json.dumps(messages[:-1])], want)["ok"]]
    assert [(p["prompt"], p["rejected"], p["kind"]) for p in pairs] == [
        (m[:-1], r, f"own_{f}") for m, r, f in expected]
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    assert sum(asked.values()) == 40 and sum(wrong.values()) == len(pairs)
    assert wrong["greeting"] == 0          # a greeting is right for a greeting: no pair
    assert len(pairs) > 5


def test_the_command_writes_pairs_dpo_reads(tmp_path):
    out = tmp_path / "own.jsonl"
    result = CliRunner().invoke(main, ["data", "dpo-own", "--ckpt", str(MINI), "--n", "10",
                                       "--families", "sum,greeting", "--out", str(out)])
    assert result.exit_code == 0, result.output
    counts = re.findall(r"(\w+) +(\d+) of +(\d+) wrong", result.output)
    assert [(family, asked) for family, _, asked in counts] == [("sum", "5"), ("greeting", "5")]
    wrong = sum(int(n) for _, n, _ in counts)
    lines = out.read_text().splitlines()
    assert len(lines) == wrong
    if wrong:
        pairs, too_long = load_preferences(out, load_tokenizer(MINI), 320)
        assert len(pairs) + too_long == wrong


def test_bad_input_gets_one_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": [], "chosen": "a", "rejected": "b"}\n{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="line 2"):
        own_pairs.read_pairs(bad)
    runner = CliRunner()
    for args, says in ((["--also", str(bad)], "line 2"), (["--families", "farewell"], "farewell"),
                       ([], "not found")):
        ckpt = str(tmp_path / "none") if not args else str(MINI)
        result = runner.invoke(main, ["data", "dpo-own", "--ckpt", ckpt, "--n", "2", "--out",
                                      str(tmp_path / "o.jsonl"), *args])
        assert result.exit_code != 0 and says in result.output, result.output
        assert "Traceback" not in result.output


def test_a_mirror_exactly_for_each_rejected_reply_that_fits_another_family(tmp_path):
    """A rejected greeting on a thanks becomes a greeting request whose data reply is chosen over
    that thanks (and a rejected thanks on a greeting the other way); a rejected wrong name (no
    family's kind of reply) and a rejected reply of the pair's own family get none. Mirrors are
    train requests, and `dpo-mirror` writes pairs DPO reads."""
    drawn = {f: own_pairs.requests(1, seed=4, families=(f,))[0] for f in own_pairs.FAMILIES}
    greeting = drawn["greeting"][1][-1]["content"]
    thanks = drawn["thanks"][1][-1]["content"]
    pairs = [
        {"prompt": drawn["thanks"][1][:-1], "chosen": thanks, "rejected": greeting,
         "kind": "own_thanks"},
        {"prompt": drawn["memory"][1][:-1], "chosen": "Your name is Mana.",
         "rejected": "Your name is Mna.", "kind": "own_memory"},
        {"prompt": drawn["greeting"][1][:-1], "chosen": greeting, "rejected": "You're welcome!",
         "kind": "own_greeting"},
        {"prompt": drawn["greeting"][1][:-1], "chosen": greeting, "rejected": "Hi there!",
         "kind": "own_greeting"},
    ]
    mirrors = own_pairs.mirror_pairs(pairs, seed=0)
    assert [m["kind"] for m in mirrors] == ["mirror_greeting", "mirror_thanks"]
    first = mirrors[0]
    assert first["rejected"] == thanks and first["chosen"] != thanks
    assert wording.judge("greeting", first["chosen"], {})["ok"]
    assert not wording.judge("greeting", first["rejected"], {})["ok"]
    assert mirrors[1]["rejected"] == greeting and mirrors[1]["prompt"][-1]["role"] == "user"
    assert wording.judge("thanks", mirrors[1]["chosen"], {})["ok"]
    detect = held_out_detector()
    assert not [m for p in mirrors for m in p["prompt"] if m["role"] == "user"
                and detect(m["content"])]
    assert own_pairs.mirror_pairs(pairs, seed=0) == mirrors

    source, out = tmp_path / "own.jsonl", tmp_path / "mirrored.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    run = CliRunner().invoke(main, ["data", "dpo-mirror", "--pairs", str(source),
                                    "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "2 mirrors of 4" in run.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written[:4] == pairs and written[4:] == mirrors
    read, too_long = load_preferences(out, load_tokenizer(MINI), 320)
    assert len(read) + too_long == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    run = CliRunner().invoke(main, ["data", "dpo-mirror", "--pairs", str(bad), "--out",
                                    str(out)])
    assert run.exit_code != 0 and "line 1" in run.output and "Traceback" not in run.output
