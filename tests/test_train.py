"""Training: the optimizer against torch, recipes, and the loop's promises (resume equals the
uninterrupted run, NaN stops, Ctrl-C saves, a failed save keeps the previous checkpoint)."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from tinyphi3.nn.autograd import Parameter
from tinyphi3.data.shards import write_shards
from tinyphi3.models.model import Phi3
from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer
from tinyphi3.train import loop as loop_module
from tinyphi3.train.loop import Trainer, TrainingError
from tinyphi3.train.optim import AdamW, clip_grad_norm, cosine_lr
from tinyphi3.train.recipe import RecipeError, load_recipe, recipe_from_dict

TEXT = ("The otter swims in the river. Seven plus five is twelve. The fox sleeps under the oak. "
        "A metre has one hundred centimetres. Mira counts nine shells on the beach. ")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tokenizer and token shards from a small generated text."""
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    sentences = TEXT.split(". ")
    docs = [". ".join(rng.permutation(sentences)) for _ in range(300)]
    (root / "corpus.txt").write_text("\n".join(docs), encoding="utf-8")
    tok = train_tokenizer([root / "corpus.txt"], root / "tok", 320)
    write_shards(({"text": d} for d in docs), tok, root / "shards", val_fraction=0.1)
    return root


def recipe(workspace, out, **train):
    settings = dict(steps=8, batch_size=2, seq_len=32, lr=1e-2, min_lr=1e-3, warmup_steps=2)
    settings.update(train)
    return recipe_from_dict({
        "model": {"preset": "tiny", "tokenizer": str(workspace / "tok"), "hidden_size": 32,
                  "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2},
        "data": {"shards": str(workspace / "shards")},
        "train": settings,
        "log": {"eval_every": 4, "eval_batches": 2, "save_every": 4},
        "output": {"dir": str(out)}})


# ---- optimizer ---------------------------------------------------------------------------------
def test_adamw_matches_torch():
    """Same updates as torch.optim.AdamW, with decay on matrices only (two parameter groups)."""
    rng = np.random.default_rng(0)
    shapes = {"model.layers.0.mlp.down_proj.weight": (4, 3), "model.norm.weight": (3,),
              "model.embed_tokens.weight": (5, 3)}
    ours = {n: Parameter(rng.standard_normal(s).astype(np.float32)) for n, s in shapes.items()}
    theirs = {n: torch.nn.Parameter(torch.tensor(p.data.copy())) for n, p in ours.items()}
    decayed = [theirs["model.layers.0.mlp.down_proj.weight"]]
    others = [theirs["model.norm.weight"], theirs["model.embed_tokens.weight"]]
    opt_t = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1},
                               {"params": others, "weight_decay": 0.0}], lr=0.01,
                              betas=(0.9, 0.95), eps=1e-8)
    opt_o = AdamW(ours.items(), lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for step in range(5):
        for n in shapes:
            g = rng.standard_normal(shapes[n]).astype(np.float32)
            ours[n].grad = g
            theirs[n].grad = torch.tensor(g)
        opt_o.step()
        opt_t.step()
    for n in shapes:
        np.testing.assert_allclose(ours[n].data, theirs[n].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_schedule_and_clipping():
    lrs = [cosine_lr(s, 1.0, 0.1, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    p = Parameter(np.zeros(4, np.float32))
    p.grad = np.array([3.0, 4.0, 0.0, 0.0], np.float32)
    assert clip_grad_norm([p], 1.0) == pytest.approx(5.0)
    assert np.linalg.norm(p.grad) == pytest.approx(1.0, rel=1e-4)


# ---- recipes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("[model]\ntokenizer='t'\n[data]\nshards='s'\n[train]\nstepz=3\n", "unknown key"),
    ("[model]\ntokenizer='t'\n[data]\nshards='s'\n[optimiser]\nlr=1\n", "unknown section"),
    ("[model]\ntokenizer='t'\n[data]\nshards='s'\n[train]\nsteps='many'\n", "expected a number"),
    ("[data]\nshards='s'\n", "needs tokenizer"),
    ("[model]\ntokenizer='t'\nhidden_sise=3\n[data]\nshards='s'\n", "unknown key"),
    ("not = [toml", "not valid TOML"),
])
def test_bad_recipes_are_named(tmp_path, text, message):
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(tmp_path / "r.toml")


def test_shipped_recipes_parse():
    from pathlib import Path
    recipes = sorted(Path(__file__).parent.parent.glob("configs/*.toml"))
    for path in recipes:
        load_recipe(path)


# ---- the loop ----------------------------------------------------------------------------------
def test_loss_falls(workspace, tmp_path):
    trainer = Trainer(recipe(workspace, tmp_path / "run", steps=30, lr=2e-2))
    assert trainer.run(progress=False)
    losses = [l for _, l in trainer.state["losses"]]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])
    final = trainer.export()
    assert Phi3.from_pretrained(final).config.vocab_size == 384
    assert (tmp_path / "run" / "loss.png").is_file()


def interrupt_after(monkeypatch, n):
    """Make Ctrl-C arrive during step n (the loop must finish that step, save, and stop)."""
    real, calls = Trainer.step, []

    def step(self):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self)
    monkeypatch.setattr(Trainer, "step", step)


def test_ctrl_c_saves_and_resume_equals_the_uninterrupted_run(workspace, tmp_path, monkeypatch):
    full = Trainer(recipe(workspace, tmp_path / "full"))
    assert full.run(progress=False)
    interrupt_after(monkeypatch, 3)
    first = Trainer(recipe(workspace, tmp_path / "cut"))
    assert not first.run(progress=False)
    assert first.state["step"] == 3
    monkeypatch.undo()
    resumed = Trainer(recipe(workspace, tmp_path / "cut"), resume=True)
    assert resumed.state["step"] == 3
    assert resumed.run(progress=False)
    assert resumed.state["losses"] == full.state["losses"]
    assert resumed.state["val_losses"] == full.state["val_losses"]
    for (name, a), (_, b) in zip(resumed.model.named_parameters(), full.model.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(workspace, tmp_path, monkeypatch):
    real, calls = Phi3.loss, []

    def loss(self, x, y, attention_mask=None):
        calls.append(1)
        out = real(self, x, y)
        if len(calls) == 6:
            out.data = np.array(np.nan, np.float32)
        return out
    monkeypatch.setattr(Phi3, "loss", loss)
    trainer = Trainer(recipe(workspace, tmp_path / "nan"))
    with pytest.raises(TrainingError, match=r"the loss became nan at step 6.*last good checkpoint"):
        trainer.run(progress=False)
    saved = json.loads((tmp_path / "nan" / "checkpoint" / "trainer_state.json").read_text())
    assert saved["state"]["step"] == 4
    Phi3.from_pretrained(tmp_path / "nan" / "checkpoint")


def test_a_failed_save_keeps_the_previous_checkpoint(workspace, tmp_path, monkeypatch):
    trainer = Trainer(recipe(workspace, tmp_path / "full_disk"))
    real_savez, calls = np.savez, []

    def savez(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_savez(*args, **kwargs)
    monkeypatch.setattr(loop_module.np, "savez", savez)
    with pytest.raises(TrainingError, match="No space left on device.*previous one .* is intact"):
        trainer.run(progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "full_disk" / "checkpoint.tmp").exists()
    resumed = Trainer(recipe(workspace, tmp_path / "full_disk"), resume=True)
    assert resumed.state["step"] == 4


def test_resume_refuses_another_config_and_fresh_runs_refuse_old_output(workspace, tmp_path):
    Trainer(recipe(workspace, tmp_path / "a", steps=4)).run(progress=False)
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        Trainer(recipe(workspace, tmp_path / "a", steps=4))
    other = recipe(workspace, tmp_path / "a", steps=4)
    other.model["hidden_size"] = 64
    other.model["intermediate_size"] = 128
    with pytest.raises(TrainingError, match="another model configuration"):
        Trainer(other, resume=True)
    with pytest.raises(TrainingError, match="no checkpoint"):
        Trainer(recipe(workspace, tmp_path / "b"), resume=True)


def test_a_sequence_longer_than_the_models_context_is_refused(workspace, tmp_path):
    """seq_len past max_position_embeddings would train positions the model's RoPE (and its
    config) does not cover: the run stops before its first step and says how to extend."""
    too_long = recipe(workspace, tmp_path / "c", seq_len=512)
    too_long.model["max_position_embeddings"] = 256
    with pytest.raises(TrainingError, match="seq_len 512 is past the model's context of 256 "
                                            "tokens: extend it first"):
        Trainer(too_long)


def test_stop_at_ends_the_run_early_on_the_full_runs_schedule(workspace, tmp_path):
    """stop_at = 4 of 8 steps trains exactly the first 4 steps of the 8-step run (its learning
    rates, not those of a 4-step run) and exports its model."""
    full = Trainer(recipe(workspace, tmp_path / "full", steps=8))
    stopped = Trainer(recipe(workspace, tmp_path / "stopped", steps=8, stop_at=4))
    short = Trainer(recipe(workspace, tmp_path / "short", steps=4))
    for trainer in (full, stopped, short):
        assert trainer.run(progress=False)
    assert stopped.state["step"] == 4 and stopped.state["losses"] == full.state["losses"][:4]
    weights = [dict(t.model.named_parameters())["model.norm.weight"].data for t in (stopped, short)]
    assert not np.array_equal(*weights)                 # the 4th step's learning rate differs
    assert Phi3.from_pretrained(stopped.export()).config.vocab_size == 384
    with pytest.raises(RecipeError, match="stop_at"):
        recipe(workspace, tmp_path / "bad", steps=8, stop_at=9)


def test_gradient_accumulation_equals_one_big_batch(workspace, tmp_path):
    """Two micro-batches of 2 accumulate the gradient of one batch of 4 (same windows)."""
    big = Trainer(recipe(workspace, tmp_path / "big", batch_size=4))
    small = Trainer(recipe(workspace, tmp_path / "small", batch_size=2, grad_accum=2))
    x, y = big.objective.stream.next_batch()
    batches = iter([(x[:2], y[:2]), (x[2:], y[2:])])
    small.objective.stream.next_batch = lambda: next(batches)
    big.objective.stream.next_batch = lambda: (x, y)
    for trainer in (big, small):
        trainer.optimizer.step = lambda lr=None: None          # keep the weights, compare grads
        trainer.step()
    for (name, a), (_, b) in zip(big.model.named_parameters(), small.model.named_parameters()):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7, err_msg=name)


def test_recipe_overrides_apply_to_every_variant():
    """[model] keys are config fields: they override a phi-3-small preset too (whose config.json
    spells the MLP width ff_intermediate_size)."""
    r = recipe_from_dict({"model": {"preset": "tiny-small", "tokenizer": "t", "hidden_size": 32,
                                    "intermediate_size": 80, "num_attention_heads": 4,
                                    "num_key_value_heads": 2, "dummy_token_indices": [318, 319]},
                          "data": {"shards": "s"}})
    config = r.model_config(300)
    assert (config.intermediate_size, config.hidden_size, config.vocab_size) == (80, 32, 320)
    assert config.is_phi3small


def test_the_recipe_chooses_the_attention_path(workspace, tmp_path):
    """[train] attention reaches the model (Phi3.attention); an unknown path is a recipe error."""
    for kind in ("auto", "dense", "flash"):
        assert Trainer(recipe(workspace, tmp_path / kind, attention=kind)).model.attention == kind
    with pytest.raises(RecipeError, match='attention must be "auto", "dense" or "flash"'):
        recipe(workspace, tmp_path / "bad", attention="fast")
