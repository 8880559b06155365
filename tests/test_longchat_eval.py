"""The long-chat evaluation (tinyphi3.evaluation.longchat, `tinyphi3 eval --task longchat`): the
judging rules on replies written for them, the question alone holding none of the long context,
the scoring path with a rigged model that answers from the prompt (all right with the chat,
nothing but stories' facts without it), cells past the context, the table and the command."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from tinyphi3.cli.evaluation import eval_command
from tinyphi3.config import preset
from tinyphi3.data import longdocs
from tinyphi3.evaluation import longchat
from tinyphi3.models.model import Phi3
from tinyphi3.tokenizers import load_tokenizer

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MINI)


@pytest.mark.parametrize("kind, answer, reply, right", [
    ("passkey", "48213", "The pass key is 48213.", True),
    ("passkey", "48213", "The pass key is 48214.", False),
    ("passkey", "48213", "It is 1, no: 48213.", False),             # the first number counts
    ("passkey", "48213", "I do not know.", False),
    ("memory", "Lea", "Your name is Lea.", True),
    ("memory", "Lea", "your name is lea", True),                    # case aside
    ("memory", "Lea", "Your name is Leah.", False),                 # a whole word
    ("memory", "75", "27 + 48: 7 + 8 = 15, write 5 carry 1; 2 + 4 + 1 = 7. So 27 + 48 = 75. "
                      "The answer is 75.", True),
    ("memory", "75", "So 27 + 48 = 75. The answer is 76.", False),  # what it says it is
    ("memory", "-3", "The answer is -3.", True),
    ("story", "marsh", "Veska lives in the marsh.", True),
    ("story", "marsh", "Veska lives in the marshes.", False),
    ("story", "singer", "Kaffy is a Singer by trade.", True)])
def test_the_judging_rules(kind, answer, reply, right):
    assert longchat.judge(kind, answer, reply) is right


@pytest.mark.parametrize("kind", longdocs.LONG_CHAT_KINDS)
def test_the_question_alone_keeps_only_the_final_question(tok, kind):
    for seed in range(3):
        chat = longdocs.long_chat(np.random.default_rng(seed), kind, 1024, "test", tok)
        alone = longchat.question_alone(kind, chat["messages"])
        assert len(alone) == 1 and alone[0]["role"] == "user"
        text = alone[0]["content"]
        assert text and chat["messages"][-2]["content"].endswith(text)
        assert len(tok.encode(text)) < 40                     # a question, not the context
        if kind != "story":                                   # the key or name is not in it
            assert not re.search(rf"\b{re.escape(chat['answer'])}\b", text)


def rigged(tok, chats):
    """A stand-in for generate that gives the data's own last reply to the prompt of each of
    `chats` asked whole, and "I do not know." to anything else (the question alone)."""
    replies = {tuple(tok.apply_chat_template(c["messages"][:-1], add_generation_prompt=True,
                                             tokenize=True)): c["messages"][-1]["content"]
               for c in chats}

    def fake_generate(model, prompt_ids, **kwargs):
        yield from tok.encode(replies.get(tuple(prompt_ids), "I do not know."))
    return fake_generate


FAKE = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=2048, rope_scaling=None))


def test_the_scoring_path_on_a_model_that_reads_its_prompt(monkeypatch, tok):
    lengths = (600, 1024)
    chats = [chat for kind in longdocs.LONG_CHAT_KINDS for length in lengths
             for chat in longchat.held_out_chats(tok, kind, length, 2)]
    monkeypatch.setattr(longchat, "generate", rigged(tok, chats))
    with_chat = longchat.longchat_recall(FAKE, tok, lengths, n_per_cell=2)
    assert with_chat["accuracy"] == {kind: [1.0, 1.0] for kind in longdocs.LONG_CHAT_KINDS}
    assert len(with_chat["records"]) == 12 and all(r["right"] for r in with_chat["records"])
    alone = longchat.longchat_recall(FAKE, tok, lengths, n_per_cell=2, alone=True)
    assert alone["accuracy"] == {kind: [0.0, 0.0] for kind in longdocs.LONG_CHAT_KINDS}
    assert {r["reply"] for r in alone["records"]} == {"I do not know."}


def test_cells_past_the_context(tok):
    model = Phi3(preset("tiny").replace(vocab_size=2112, num_hidden_layers=1,
                                        max_position_embeddings=700,
                                        original_max_position_embeddings=700), seed=0)
    grid = longchat.longchat_recall(model, tok, (600, 1024), kinds=("memory",), n_per_cell=1)
    assert grid["accuracy"]["memory"][1] is None and grid["accuracy"]["memory"][0] in (0.0, 1.0)
    assert [r["length"] for r in grid["records"]] == [600]
    run = longchat.longchat_recall(model, tok, (1024,), kinds=("passkey",), n_per_cell=1,
                                   allow_past_context=True)
    assert run["accuracy"]["passkey"] == [0.0] and run["past_context"]
    within = longchat.longchat_recall(model, tok, (600,), kinds=("memory",), n_per_cell=1,
                                      allow_past_context=True)
    assert within["past_context"] is False            # allowed, but no chat was past the context
    table = longchat.format_longchat_table({"tiny": {"chat": grid, "alone": grid}})
    assert "past" in table and "context 700" in table


def test_the_command(tmp_path, tok):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(eval_command, ["--ckpt", str(MINI), "--task", "longchat",
                                               "--lengths", "1024", "--per-cell", "1",
                                               "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "long chats" in result.output and "past" in result.output   # mini: context 512
    saved = json.loads(out.read_text())["mini"]["longchat"]
    assert saved["chat"]["accuracy"]["story"] == [None]
    bad = CliRunner().invoke(eval_command, ["--ckpt", str(MINI), "--task", "longchat",
                                            "--lengths", "100"])
    assert bad.exit_code != 0 and "at least 512 tokens" in bad.output
