"""SFT and DPO: the assistant-only loss mask, the DPO loss and its gradients against torch, the
records' errors, and the stages run (and resume) through `tinyphi3 train`."""

import json
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_parity import hf_model
from test_train import interrupt_after
from tinyphi3.models.model import Phi3
from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer
from tinyphi3.train.conversations import (ChatDataError, ChatEncoder, load_conversations,
                                          load_preferences)
from tinyphi3.train.dpo import dpo_batch_loss, dpo_loss
from tinyphi3.train.loop import Trainer, TrainingError, loss_series
from tinyphi3.train.objectives import conversation_loss
from tinyphi3.train.recipe import RecipeError, recipe_from_dict

CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "How many legs does an otter have?"},
        {"role": "assistant", "content": "An otter has four legs."},
        {"role": "user", "content": "And a beetle?"},
        {"role": "assistant", "content": "A beetle has six legs."}]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("post")
    words = " ".join(m["content"] for m in CHAT) + " seven plus five is twelve. no, thanks!"
    (root / "corpus.txt").write_text("\n".join([words] * 50), encoding="utf-8")
    return train_tokenizer([root / "corpus.txt"], root / "tok", 300)


def test_sft_labels_are_the_assistant_replies_and_their_end(tok):
    ids, labels = ChatEncoder(tok).encode(CHAT)
    kept = labels != -100
    np.testing.assert_array_equal(labels[kept], ids[kept])
    assert tok.decode(ids[kept].tolist()) == "An otter has four legs.<|end|>A beetle has six legs.<|end|>"
    # the tokens right after each <|assistant|> are labelled; no user or system token is
    assistant = tok.token_to_id("<|assistant|>")
    assert all(kept[i + 1] and not kept[i] for i in np.nonzero(ids == assistant)[0])
    for role in ("<|user|>", "<|system|>"):
        start = int(np.nonzero(ids == tok.token_to_id(role))[0][0])
        end = start + int(np.nonzero(ids[start:] == tok.token_to_id("<|end|>"))[0][0])
        assert not kept[start:end + 1].any()
    _, last = ChatEncoder(tok).encode(CHAT, last_only=True)
    assert tok.decode(ids[last != -100].tolist()) == "A beetle has six legs.<|end|>"


def test_sft_loss_is_the_mean_over_assistant_tokens_only(tok, tmp_path):
    """model.loss with the SFT labels equals transformers' loss with the same labels, and the
    gradient reaching the logits of unlabelled positions is zero."""
    model, directory = hf_model(tmp_path, vocab_size=tok.vocab_size)
    ours = Phi3.from_pretrained(directory)
    ids, labels = ChatEncoder(tok).encode(CHAT)
    loss = ours.loss(ids[None], labels[None])
    with torch.no_grad():
        ref = model(torch.tensor(ids[None]), labels=torch.tensor(labels[None])).loss.item()
    assert float(loss.data) == pytest.approx(ref, rel=1e-5)
    from tinyphi3.nn.autograd import Parameter
    from tinyphi3.nn.layers import causal_lm_loss
    logits = Parameter(ours(ids[None]))
    causal_lm_loss(logits, labels[None]).backward()
    predicts_nothing = labels[1:] == -100                         # position t predicts t + 1
    assert np.abs(logits.grad[0, :-1][predicts_nothing]).max() == 0.0
    assert np.abs(logits.grad[0, :-1][~predicts_nothing]).max() > 0.0


def torch_dpo(model, ref_model, ids, labels, beta, eps, alpha=0.0):
    """The DPO loss written independently in torch: log-softmax, gather, F.logsigmoid."""
    ids_t, labels_t = torch.tensor(ids), torch.tensor(labels)

    def logps(m):
        logits = m(ids_t).logits[:, :-1].float()
        targets = labels_t[:, 1:]
        keep = targets != -100
        picked = torch.gather(F.log_softmax(logits, -1), 2, targets.clamp(min=0)[..., None])[..., 0]
        return (picked * keep).sum(-1)

    with torch.no_grad():
        ref = logps(ref_model)
    pol = logps(model)
    P = len(ids) // 2
    z = (pol[:P] - pol[P:]) - (ref[:P] - ref[P:])
    dpo = (-(1 - eps) * F.logsigmoid(beta * z) - eps * F.logsigmoid(-beta * z)).mean()
    counted = (labels_t[:P, 1:] != -100).sum(-1)
    return dpo + alpha * (-pol[:P] / counted).mean()


@pytest.mark.parametrize("beta,eps,alpha", [(0.1, 0.0, 0.0), (0.5, 0.2, 0.0), (0.1, 0.0, 0.7)])
def test_dpo_loss_and_gradients_match_torch(tmp_path, beta, eps, alpha):
    """Loss and every parameter's gradient equal torch autograd through transformers, with a
    reference model that differs from the policy (relative error <= 1e-4)."""
    V = 64
    policy_t, policy_dir = hf_model(tmp_path / "policy", seed=0, vocab_size=V)
    ref_t, ref_dir = hf_model(tmp_path / "ref", seed=1, vocab_size=V)
    policy, reference = Phi3.from_pretrained(policy_dir), Phi3.from_pretrained(ref_dir)
    rng = np.random.default_rng(0)
    pairs = []
    for prompt_len, n_chosen, n_rejected in [(4, 5, 3), (6, 2, 7), (3, 4, 4)]:
        prompt = rng.integers(3, V, prompt_len)
        seqs = []
        for n in (n_chosen, n_rejected):
            ids = np.concatenate([prompt, rng.integers(3, V, n)])
            labels = np.where(np.arange(len(ids)) >= prompt_len, ids, -100)
            seqs.append((ids, labels))
        pairs.append(tuple(seqs))
    loss, stats = dpo_batch_loss(policy, reference, pairs, beta, eps, pad_id=0, sft_weight=alpha)
    policy.zero_grad()
    loss.backward()

    from tinyphi3.train.conversations import pad_batch
    ids, labels = pad_batch([c for c, _ in pairs] + [r for _, r in pairs], 0)
    policy_t.train()
    ref_loss = torch_dpo(policy_t, ref_t, ids, labels, beta, eps, alpha)
    ref_loss.backward()
    assert float(loss.data) == pytest.approx(ref_loss.item(), rel=1e-5)
    theirs = dict(policy_t.named_parameters())
    for name, p in policy.named_parameters():
        g = theirs[name].grad.numpy()
        assert np.linalg.norm(p.grad - g) <= 1e-4 * np.linalg.norm(g) + 1e-9, name
    assert 0.0 <= stats["accuracy"] <= 1.0


def test_dpo_loss_formula_and_statistics():
    """Hand-checkable values: with z = 0 the loss is log 2; the margin is beta * z."""
    zero = np.zeros(2)
    loss, stats = dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert float(loss) == pytest.approx(np.log(2))
    loss, stats = dpo_loss(np.array([1.0]), np.array([-1.0]), np.array([0.0]), np.array([0.0]),
                           beta=0.5, label_smoothing=0.1)
    z = 2.0
    expected = -0.9 * np.log(1 / (1 + np.exp(-0.5 * z))) - 0.1 * np.log(1 / (1 + np.exp(0.5 * z)))
    assert float(loss) == pytest.approx(expected)
    assert stats["margin"] == pytest.approx(1.0) and stats["accuracy"] == 1.0


def sums_asked(seed, n=60):
    """n conversations "What is a plus b?" -> "a plus b is a + b." of one-digit numbers."""
    rng = np.random.default_rng(seed)
    return [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                          {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}
            for a, b in rng.integers(1, 9, size=(n, 2))]


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_bad_records_name_the_line(tok, tmp_path):
    good = {"messages": CHAT}
    path = write_jsonl(tmp_path / "sft.jsonl", [good, {"messages": CHAT[:2]}])
    with pytest.raises(ChatDataError, match=r"sft.jsonl:2: the conversation has no assistant turn"):
        load_conversations(path, tok, 256)
    path = write_jsonl(tmp_path / "bad_role.jsonl", [{"messages": [{"role": "bot", "content": "x"}]}])
    with pytest.raises(ChatDataError, match=r"bad_role.jsonl:1: message 0 needs a role"):
        load_conversations(path, tok, 256)
    pair = {"prompt": [CHAT[1]], "chosen": "Four legs.", "rejected": "Six legs."}
    path = write_jsonl(tmp_path / "dpo.jsonl", [pair, {"prompt": [CHAT[1]], "chosen": "Four."}])
    with pytest.raises(ChatDataError, match=r"dpo.jsonl:2: the preference record has no rejected"):
        load_preferences(path, tok, 256)
    path = write_jsonl(tmp_path / "dpo2.jsonl", [{**pair, "prompt": CHAT[:3]}])
    with pytest.raises(ChatDataError, match=r"dpo2.jsonl:1: the prompt must end with a user turn"):
        load_preferences(path, tok, 256)
    (tmp_path / "junk.jsonl").write_bytes(b"\xff\xfe not json\n")
    with pytest.raises(ChatDataError, match=r"junk.jsonl:1: not a JSON line"):
        load_conversations(tmp_path / "junk.jsonl", tok, 256)


def post_recipe(tok_dir, stage, data, out, init_from=None, **train):
    model = {"preset": "tiny", "tokenizer": str(tok_dir), "hidden_size": 32, "intermediate_size": 64,
             "num_attention_heads": 4, "num_key_value_heads": 2}
    if init_from:
        model["init_from"] = str(init_from)
    key = {"sft": "conversations", "dpo": "preferences"}[stage]
    settings = dict(stage=stage, steps=6, batch_size=4, seq_len=96, lr=3e-3, min_lr=3e-4,
                    warmup_steps=1)
    settings.update(train)
    return recipe_from_dict({"model": model, "data": {key: str(data)}, "train": settings,
                             "log": {"eval_every": 3, "eval_batches": 2, "save_every": 3},
                             "output": {"dir": str(out)}})


@pytest.mark.parametrize("groups", [0, 2])
def test_sft_then_dpo_run_and_resume_exactly(tok, tmp_path, groups, monkeypatch):
    """With and without batches grouped by length ([train] length_groups)."""
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    conversations = sums_asked(0)
    sft_file = write_jsonl(tmp_path / "sft.jsonl", conversations)
    sft = Trainer(post_recipe(tok_dir, "sft", sft_file, tmp_path / "sft", length_groups=groups))
    assert sft.run(progress=False)
    sft_model = sft.export()
    assert "48 conversations to train on, 12 held out" in sft.objective.notes[0]

    pairs = [{"prompt": c["messages"][:1], "chosen": c["messages"][1]["content"],
              "rejected": c["messages"][1]["content"] + " And then we went on and on"}
             for c in conversations]
    dpo_file = write_jsonl(tmp_path / "dpo.jsonl", pairs)
    dpo = partial(post_recipe, tok_dir, "dpo", dpo_file, init_from=sft_model, length_groups=groups)
    full = Trainer(dpo(tmp_path / "full"))
    full.run(progress=False)
    assert {"margin", "accuracy"} <= set(full.state["stats"][-1][1])
    assert {"margin", "accuracy"} <= set(full.state["val_stats"][-1][1])
    # Ctrl-C during step 3 (it finishes, saves, stops); resume: the uninterrupted run's losses
    part = Trainer(dpo(tmp_path / "part"))
    interrupt_after(monkeypatch, 3)
    assert not part.run(progress=False) and part.state["step"] == 3
    monkeypatch.undo()
    resumed = Trainer(dpo(tmp_path / "part"), resume=True)
    resumed.run(progress=False)
    assert resumed.state["losses"] == full.state["losses"]


def test_dpo_recipe_needs_its_reference(tok, tmp_path):
    with pytest.raises(RecipeError, match="DPO starts from the SFT model"):
        post_recipe(tmp_path, "dpo", tmp_path / "x.jsonl", tmp_path / "out")
    with pytest.raises(RecipeError, match=r"stage 'sft' needs exactly one key, conversations"):
        recipe_from_dict({"model": {"tokenizer": "t"}, "data": {"shards": "s"},
                          "train": {"stage": "sft"}})


def test_sft_with_replay_reads_pretraining_text_on_its_share_of_steps_and_resumes(tok, tmp_path):
    """[data] replay: on share 0.25 of 8 steps, two batches of pre-training windows and six of
    conversations; the validation reports both losses; an interrupted run resumes to the same
    losses; bad replay keys are errors that say what to write."""
    from tinyphi3.data.shards import write_shards
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    docs = [" ".join(m["content"] for m in CHAT) + f" seven plus {i} is twelve." for i in range(40)]
    write_shards(({"text": d} for d in docs), tok, tmp_path / "shards", val_fraction=0.2)
    conversations = sums_asked(1)
    sft_file = write_jsonl(tmp_path / "sft.jsonl", conversations)

    def replay_recipe(out, **data):
        r = post_recipe(tok_dir, "sft", sft_file, out, steps=8, seq_len=64)
        d = r.to_dict()
        d["data"].update(data or {"replay": str(tmp_path / "shards"), "replay_share": 0.25})
        d["log"] = {"eval_every": 4, "eval_batches": 2, "save_every": 4}
        return recipe_from_dict(d)

    full = Trainer(replay_recipe(tmp_path / "full"))
    assert full.run(progress=False)
    stream = full.objective.side
    assert stream.epoch * stream.num_windows + stream.position == 2 * 4   # 2 batches of 4
    assert full.objective.batches.position == 6 * 4
    assert {"loss", "replay_loss"} <= set(full.state["val_stats"][-1][1])
    assert "pre-training text" in " ".join(full.objective.notes)
    assert loss_series(full.state)["train: pre-training text"][0] == (4, 8)
    assert full.export() and recipe_from_dict(full.recipe.to_dict()).replay_share == 0.25

    part = Trainer(replay_recipe(tmp_path / "part"))
    part.recipe.train.stop_at = 4
    part.run(progress=False)
    resumed = Trainer(replay_recipe(tmp_path / "part"), resume=True)
    resumed.recipe.train.stop_at = 0
    resumed.run(progress=False)
    assert resumed.state["losses"] == full.state["losses"]

    for data, message in (({"replay_share": 0.25}, "needs replay"),
                          ({"replay": "x", "replay_share": 1.0}, "between 0 and 1"),
                          ({"replay": "x", "replay_share": True}, "between 0 and 1")):
        with pytest.raises(RecipeError, match=message):
            replay_recipe(tmp_path / "bad", **data)
    with pytest.raises(RecipeError, match="for stages 'sft' and 'vision_sft' only"):
        recipe_from_dict({"model": {"tokenizer": "t", "init_from": "i"},
                          "data": {"preferences": "p", "replay": "s", "replay_share": 0.5},
                          "train": {"stage": "dpo"}})


def test_dpo_with_conversations_trains_on_them_on_its_share_of_steps_and_resumes(tok, tmp_path):
    """[data] conversations in a DPO recipe: on share 0.25 of 8 steps, two batches of the SFT's
    conversations (2 x batch_size each) with the next-token loss and six batches of pairs; the
    conversation steps lower the held-out conversation loss that plain DPO lets drift; the
    validation reports it beside the pairs' statistics; an interrupted run resumes to the same
    losses; bad keys are errors that say what to write."""
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    conversations = sums_asked(2)
    sft_file = write_jsonl(tmp_path / "sft.jsonl", conversations)
    sft = Trainer(post_recipe(tok_dir, "sft", sft_file, tmp_path / "sft", steps=4))
    assert sft.run(progress=False)
    sft_model = sft.export()
    pairs = [{"prompt": c["messages"][:1], "chosen": "I would rather not say.",
              "rejected": c["messages"][1]["content"]} for c in conversations]
    dpo_file = write_jsonl(tmp_path / "dpo.jsonl", pairs)

    def dpo_recipe(out, **data):
        r = post_recipe(tok_dir, "dpo", dpo_file, out, init_from=sft_model, steps=8,
                        length_groups=2)
        d = r.to_dict()
        d["data"].update(data)
        d["log"] = {"eval_every": 4, "eval_batches": 2, "save_every": 4}
        return recipe_from_dict(d)

    with_sft = {"conversations": str(sft_file), "conversations_share": 0.25}
    full = Trainer(dpo_recipe(tmp_path / "full", **with_sft))
    assert full.run(progress=False)
    objective = full.objective
    assert objective.side.position == 2 * 8              # 2 batches of 2 x 4
    assert objective.batches.position == 6 * 4                    # 6 batches of 4 pairs
    steps = {step for step, stats in full.state["stats"] if "conversation_loss" in stats}
    assert steps == {4, 8}                                        # steps 3 and 7 from 0
    assert {"loss", "margin", "conversation_loss"} <= set(full.state["val_stats"][-1][1])
    assert "SFT conversations trained on 25% of the steps" in " ".join(objective.notes)
    assert full.export() and recipe_from_dict(full.recipe.to_dict()).rehearsal_share == 0.25
    series = loss_series(full.state)                  # loss.png: the two kinds of step apart
    assert series["train"][0] == (1, 2, 3, 5, 6, 7)
    assert series["train: SFT conversations"][0] == (4, 8)
    assert series["held-out: SFT conversations"][0] == (4, 8)
    plain = Trainer(dpo_recipe(tmp_path / "plain"))
    plain.run(progress=False)
    assert "conversation_loss" not in plain.state["val_stats"][-1][1]
    held_out = conversation_loss(full.model, objective.side, objective.pad_id, 2)
    assert held_out < conversation_loss(plain.model, objective.side, objective.pad_id, 2)

    part = Trainer(dpo_recipe(tmp_path / "part", **with_sft))
    part.recipe.train.stop_at = 4
    part.run(progress=False)
    resumed = Trainer(dpo_recipe(tmp_path / "part", **with_sft), resume=True)
    resumed.recipe.train.stop_at = 0
    resumed.run(progress=False)
    assert resumed.state["losses"] == full.state["losses"]
    Trainer(dpo_recipe(tmp_path / "plain"), resume=True)          # the same [data]: resumes
    with pytest.raises(TrainingError, match="does not fit the \\[data\\]"):
        Trainer(dpo_recipe(tmp_path / "plain", **with_sft), resume=True)     # conversations added

    for data, message in (({"conversations_share": 0.25}, "needs conversations"),
                          ({"conversations": "x", "conversations_share": 1.0}, "between 0 and 1"),
                          ({"conversations": "", "conversations_share": 0.5}, "the path of")):
        with pytest.raises(RecipeError, match=message):
            dpo_recipe(tmp_path / "bad", **data)
    with pytest.raises(RecipeError, match="for stage 'dpo' only"):
        recipe_from_dict({"model": {"tokenizer": "t"},
                          "data": {"conversations": "c", "conversations_share": 0.5},
                          "train": {"stage": "sft"}})
