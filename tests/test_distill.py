"""Distillation (stage "distill"): the KL loss and its gradients against torch autograd through
transformers, the recipe's checks, and a run that pulls a student towards its teacher and
resumes exactly."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_parity import hf_model
from test_post_training import CHAT, post_recipe, sums_asked, write_jsonl
from test_train import interrupt_after
from tinyphi3.data.distill_prompts import distillation_prompts, swap_words, user_prompts
from tinyphi3.errors import InvalidInputError
from tinyphi3.models.model import Phi3
from tinyphi3.nn.autograd import enable_grad
from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer
from tinyphi3.train.conversations import pad_batch
from tinyphi3.train.distill import distillation_loss, teacher_probabilities
from tinyphi3.train.loop import Trainer
from tinyphi3.train.recipe import RecipeError, recipe_from_dict

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    words = " ".join(m["content"] for m in CHAT) + " seven plus five is twelve."
    (root / "corpus.txt").write_text("\n".join([words] * 50), encoding="utf-8")
    return train_tokenizer([root / "corpus.txt"], root / "tok", 300)


def random_replies(rng, V, shape):
    """Sequences of random ids with labels on a random tail of each (the "reply")."""
    sequences = []
    for prompt_len, reply_len in shape:
        ids = rng.integers(3, V, prompt_len + reply_len)
        sequences.append((ids, np.where(np.arange(len(ids)) >= prompt_len, ids, -100)))
    return pad_batch(sequences, 0)


def test_loss_and_gradients_match_torch(tmp_path):
    """KL(teacher || student) over the reply positions, as torch's F.kl_div computes it, and
    every parameter's gradient (torch autograd through transformers), relative error <= 1e-4."""
    V = 64
    student_t, student_dir = hf_model(tmp_path / "student", seed=0, vocab_size=V)
    teacher_t, teacher_dir = hf_model(tmp_path / "teacher", seed=1, vocab_size=V)
    student, teacher = Phi3.from_pretrained(student_dir), Phi3.from_pretrained(teacher_dir)
    ids, labels = random_replies(np.random.default_rng(0), V, [(4, 5), (7, 2), (2, 9)])

    target = teacher_probabilities(teacher(ids))                   # inference: no tape
    with enable_grad():
        loss = distillation_loss(student.forward(ids), target, labels)
    student.zero_grad()
    loss.backward()

    ids_t, keep = torch.tensor(ids), torch.tensor(labels[:, 1:] != -100)
    with torch.no_grad():
        log_p = F.log_softmax(teacher_t(ids_t).logits[:, :-1], -1)[keep]        # [N, V]
    student_t.train()
    log_q = F.log_softmax(student_t(ids_t).logits[:, :-1], -1)[keep]
    ref = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    ref.backward()
    assert float(loss.data) == pytest.approx(ref.item(), rel=1e-5)
    assert ref.item() > 0.01                      # two different random models disagree
    theirs = dict(student_t.named_parameters())
    for name, p in student.named_parameters():
        g = theirs[name].grad.numpy()
        assert np.linalg.norm(p.grad - g) <= 1e-4 * np.linalg.norm(g) + 1e-9, name


def test_loss_is_zero_for_the_teacher_itself_and_counts_only_the_replies():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 11)).astype(np.float32)
    labels = np.full((2, 6), -100)
    labels[0, 3:] = 5
    assert float(distillation_loss(logits, teacher_probabilities(logits), labels)) == \
        pytest.approx(0.0, abs=1e-6)
    # a teacher that differs only where nothing is counted (row 1, and row 0 before the reply)
    other = logits.copy()
    other[1] += rng.normal(size=(6, 11)).astype(np.float32)
    other[0, :2] += 3.0
    assert float(distillation_loss(logits, teacher_probabilities(other), labels)) == \
        pytest.approx(0.0, abs=1e-6)
    other[0, 2, 0] += 3.0                            # position 2 predicts the first reply token
    assert float(distillation_loss(logits, teacher_probabilities(other), labels)) > 1e-3


def distill_recipe(tok_dir, data, out, teacher, init_from, **train):
    recipe = post_recipe(tok_dir, "sft", data, out, init_from=init_from, **train).to_dict()
    recipe["train"].update(stage="distill", teacher=str(teacher))
    return recipe_from_dict(recipe)


def test_distillation_pulls_the_student_to_its_teacher_and_resumes_exactly(tok, tmp_path,
                                                                           monkeypatch):
    """A student made by a short SFT learns from a teacher made by a longer one: the held-out KL
    falls; Ctrl-C during step 3 then --resume gives the uninterrupted run's losses."""
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    sft_file = write_jsonl(tmp_path / "sft.jsonl", sums_asked(3))
    teacher = Trainer(post_recipe(tok_dir, "sft", sft_file, tmp_path / "teacher", steps=12))
    teacher.run(progress=False)
    student = Trainer(post_recipe(tok_dir, "sft", sft_file, tmp_path / "student", steps=2))
    student.run(progress=False)
    teacher_dir, student_dir = teacher.export(), student.export()

    def run(out):
        return distill_recipe(tok_dir, sft_file, out, teacher_dir, student_dir, steps=6, lr=3e-3)

    full = Trainer(run(tmp_path / "full"))
    before = full.objective.validate(full.model)
    assert full.run(progress=False)
    after = full.state["val_stats"][-1][1]
    assert after["loss"] < 0.5 * before["loss"], (before, after)
    assert "reply_loss" in after
    assert f"teacher: {teacher_dir} (frozen)" in full.objective.notes

    part = Trainer(run(tmp_path / "part"))
    interrupt_after(monkeypatch, 3)
    assert not part.run(progress=False) and part.state["step"] == 3
    monkeypatch.undo()
    resumed = Trainer(run(tmp_path / "part"), resume=True)
    resumed.run(progress=False)
    assert resumed.state["losses"] == full.state["losses"]


def test_distillation_recipes_say_what_is_missing(tok, tmp_path):
    with pytest.raises(RecipeError, match=r'stage "distill" learns from a frozen checkpoint'):
        recipe_from_dict({"model": {"tokenizer": "t"}, "data": {"conversations": "c"},
                          "train": {"stage": "distill"}})
    with pytest.raises(RecipeError, match=r'teacher is for stage "distill" only'):
        recipe_from_dict({"model": {"tokenizer": "t"}, "data": {"conversations": "c"},
                          "train": {"stage": "sft", "teacher": "t"}})
    # a teacher with another vocabulary, or a shorter context than seq_len
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    sft_file = write_jsonl(tmp_path / "sft.jsonl", sums_asked(4))
    _, other = hf_model(tmp_path / "other", vocab_size=tok.vocab_size + 64,
                        max_position_embeddings=128, original_max_position_embeddings=128)
    with pytest.raises(InvalidInputError, match="must share one"):
        Trainer(distill_recipe(tok_dir, sft_file, tmp_path / "a", other, None))
    _, short = hf_model(tmp_path / "short", vocab_size=-(-tok.vocab_size // 64) * 64,
                        max_position_embeddings=64, original_max_position_embeddings=64)
    with pytest.raises(InvalidInputError, match="past the teacher's context of 64"):
        Trainer(distill_recipe(tok_dir, sft_file, tmp_path / "b", short, None))


def sft_file_with_domains(path):
    records = [("safety", "How can I poison the pond where Mino drinks?"),
               ("conversation", "Good morning!"), ("safety", "How can I poison the pond where "
                                                            "Mino drinks?"),
               ("math", "What is 2 plus 3?"), ("knowledge", "What does Pebi eat?"),
               ("identity", "What is your name?")]
    return write_jsonl(path, [{"messages": [{"role": "user", "content": u},
                                            {"role": "assistant", "content": "x"}],
                               "domain": d} for d, u in records])


def test_swapped_words_come_from_the_pool_and_the_rest_is_kept():
    rng = np.random.default_rng(0)
    text = "What is the best way to hit Silo, without anyone seeing?"
    assert swap_words(text, ["cloud"], 0.0, rng) == text
    assert swap_words(text, ["cloud"], 1.0, rng) == \
        "cloud cloud cloud cloud cloud cloud cloud cloud, cloud cloud cloud?"
    swapped = [swap_words(text, ["cloud"], 0.3, rng) for _ in range(400)]
    share = np.mean([s.count("cloud") / 11 for s in swapped])
    assert 0.25 < share < 0.35


def test_distillation_prompts_ask_the_domains_written_and_swapped(tmp_path):
    path = sft_file_with_domains(tmp_path / "sft.jsonl")
    chosen, other = user_prompts(path, {"safety", "conversation", "identity"})
    assert chosen == ["How can I poison the pond where Mino drinks?", "Good morning!",
                      "What is your name?"]                  # each distinct prompt once
    assert other == ["What is 2 plus 3?", "What does Pebi eat?"]
    prompts = distillation_prompts(path, ["safety", "conversation", "identity"], 2, 1.0, 1, 0)
    assert len(prompts) == 3 + 2 * 3 + 1
    assert set(chosen) <= set(prompts) and len(set(prompts) & set(other)) == 1
    assert prompts == distillation_prompts(path, ["safety", "conversation", "identity"], 2, 1.0,
                                           1, 0)                 # same seed, same prompts
    with pytest.raises(InvalidInputError, match="no conversation of the domains poetry"):
        distillation_prompts(path, ["poetry"], 1, 0.3, 0, 0)
    with pytest.raises(InvalidInputError, match="5 prompts of other domains asked for, 4 there"):
        distillation_prompts(path, ["safety"], 1, 0.3, 5, 0)
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "a"}]}\n'
                                        "not json\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:2: not a conversation"):
        user_prompts(tmp_path / "bad.jsonl", {"safety"})


def test_data_distill_writes_the_teachers_replies(tmp_path):
    """`tinyphi3 data distill` with the shipped mini as the teacher: one conversation per prompt
    whose reply ended, each reply the teacher's own greedy answer; replies still going at
    --max-new-tokens are left out and counted; a missing file is one clear error."""
    from click.testing import CliRunner

    from tinyphi3.cli import main
    from tinyphi3.cli.options import load_model_and_tokenizer
    from tinyphi3.evaluation.safety_eval import chat_answers
    teacher = ROOT / "checkpoints" / "mini"
    path = sft_file_with_domains(tmp_path / "sft.jsonl")
    out = tmp_path / "distill.jsonl"

    def run(*options):
        return CliRunner().invoke(main, ["data", "distill", "--teacher", str(teacher), "--from",
                                         str(path), "--copies", "1", "--others", "2",
                                         "--out", str(out), *options])
    result = run()
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    prompts = distillation_prompts(path, ["safety", "conversation", "identity"], 1, 0.3, 2, 0)
    model, tokenizer = load_model_and_tokenizer(teacher)
    answers = chat_answers(model, tokenizer, prompts, 100)
    expected = [(p, a) for p, (a, ended) in zip(prompts, answers) if ended]
    assert len(expected) >= 6                    # of 8: the test compares replies, not nothing
    assert [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in records] == \
        expected
    assert f"wrote {len(expected)} conversations" in result.output
    short = run("--max-new-tokens", "3")                     # no reply ends within 3 tokens
    assert short.exit_code == 0 and "wrote 0 conversations" in short.output
    assert "8 replies left out, unfinished after 3 tokens" in short.output
    missing = CliRunner().invoke(main, ["data", "distill", "--teacher", str(teacher), "--from",
                                        str(tmp_path / "none.jsonl"), "--out", str(out)])
    assert missing.exit_code != 0 and "no such conversations file" in missing.output
