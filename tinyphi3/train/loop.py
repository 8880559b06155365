"""The training loop: batches in, AdamW steps out, with evaluation, checkpoints and resume.

    for each step:
        lr = warm-up then cosine
        for each of grad_accum micro-batches:  loss = objective's loss / grad_accum; backward
        clip the global gradient norm; AdamW step
        every eval_every steps: held-out loss;  every save_every steps: checkpoint

A checkpoint (`<output>/checkpoint/`) holds the float32 weights in the Hugging Face layout, the
tokenizer (and a phi-3-vision run's preprocessor_config.json, so that `tinyphi3 chat --image`
reads it), the optimizer moments, and the trainer state (step, loss history, data position), so
`--resume` continues exactly where the run stopped. It is written to a temporary directory and
swapped in by renames: a crash or a full disk never leaves a half-written checkpoint.
"""

import json
import math
import shutil
import signal
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinyphi3.errors import TinyPhi3Error
from tinyphi3.models.model import MODEL_CLASSES, Phi3
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.train.images import (carry_preprocessor_config, with_image_side,
                                   write_preprocessor_config)
from tinyphi3.train.objectives import OBJECTIVES
from tinyphi3.train.optim import AdamW, clip_grad_norm, cosine_lr
from tinyphi3.train.recipe import Recipe


OBJECTIVE_PARAMETERS = "objective_parameters.npz"   # a checkpoint's heads (stage vision_tower)


class TrainingError(TinyPhi3Error):
    """Training cannot go on: a diverged loss, a resume that does not match, a failed save."""




class Trainer:
    """Owns the model, optimizer, data position and history of one run."""

    def __init__(self, recipe: Recipe, resume: bool = False):
        self.recipe = recipe
        self.out = Path(recipe.output_dir)
        self.tokenizer = load_tokenizer(recipe.tokenizer)
        self.state = {"step": 0, "tokens": 0, "seconds": 0.0, "losses": [], "val_losses": []}
        checkpoint = self.latest_checkpoint()
        if resume and checkpoint is None:
            raise TrainingError(f"--resume: no checkpoint in {self.out}")
        if not resume and checkpoint is not None:
            raise TrainingError(f"{self.out} already holds a checkpoint: pass --resume to continue "
                                f"it, or choose another output directory")
        if resume:
            self.model = Phi3.from_pretrained(checkpoint)
            expected = recipe.model_config(self.tokenizer.vocab_size)
            if recipe.init_from is None and self.model.config.to_dict() != expected.to_dict():
                raise TrainingError(f"cannot resume: the checkpoint in {checkpoint} has another "
                                    f"model configuration than {recipe.source}")
            if recipe.vision is not None and self.model.config.vision is None:
                raise TrainingError(f"cannot resume: the checkpoint in {checkpoint} is a text "
                                    f"model, but {recipe.source} trains on pictures")
        elif recipe.init_from:
            self.model = Phi3.from_pretrained(recipe.init_from)
            if recipe.vision is not None:              # a text model gets a tower to train
                self.model = with_image_side(self.model, recipe)
        else:                                          # Phi3, or Phi3V for a phi3_v config
            config = recipe.model_config(self.tokenizer.vocab_size)
            self.model = MODEL_CLASSES.get(config.model_type, Phi3)(config, seed=recipe.train.seed)
        if recipe.vision is not None:
            self.model.freeze(recipe.vision.freeze)
        self.model.attention = recipe.train.attention        # tiled or dense (Phi3.attention)
        if self.tokenizer.vocab_size > self.model.config.vocab_size:
            raise TrainingError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but the "
                                f"model's vocabulary only {self.model.config.vocab_size}")
        t = recipe.train
        context = self.model.config.max_position_embeddings
        if t.seq_len > context:
            raise TrainingError(f"seq_len {t.seq_len} is past the model's context of {context} "
                                f"tokens: extend it first (tinyphi3 longrope extend or search), "
                                f"or train on shorter sequences")
        self.objective = OBJECTIVES[recipe.stage](recipe, self.tokenizer, self.model)
        self.optimizer = AdamW(self.named_parameters(), t.lr, (t.beta1, t.beta2),
                               weight_decay=t.weight_decay)
        if resume:
            self.load_objective_parameters(checkpoint)
            self.optimizer.load_state_dict(dict(np.load(checkpoint / "optimizer.npz")))
            saved = json.loads((checkpoint / "trainer_state.json").read_text())
            try:
                self.objective.load_state_dict(saved.pop("data"))
            except (KeyError, TypeError, ValueError, IndexError):
                raise TrainingError(f"cannot resume: the data position in {checkpoint} does not "
                                    f"fit the [data] of {recipe.source} (was it changed since "
                                    f"the run started?)") from None
            self.state = saved["state"]

    def named_parameters(self):
        """What the optimizer trains: the model's parameters, and an objective's own (the heads
        of stage vision_tower, which the exported model does not keep)."""
        yield from self.model.named_parameters()
        yield from self.objective_parameters().items()

    def objective_parameters(self) -> dict:
        """The objective's own parameters by name (none for most stages)."""
        return dict(getattr(self.objective, "named_parameters", list)())

    def load_objective_parameters(self, checkpoint):
        own = self.objective_parameters()
        if not own:
            return
        try:
            saved = dict(np.load(checkpoint / OBJECTIVE_PARAMETERS))
            for name, p in own.items():
                p.data[...] = saved[name]
        except (OSError, KeyError, ValueError):
            raise TrainingError(f"cannot resume: {checkpoint / OBJECTIVE_PARAMETERS} is missing "
                                f"or does not hold the heads of {self.recipe.source}") from None

    # ---- checkpoints ---------------------------------------------------------------------------
    def latest_checkpoint(self):
        for name in ("checkpoint", "checkpoint.old"):        # .old survives a crash mid-swap
            if (self.out / name / "trainer_state.json").is_file():
                return self.out / name
        return None

    def save_checkpoint(self):
        """Write everything to checkpoint.tmp, then swap it in with renames."""
        tmp, current, old = (self.out / n for n in ("checkpoint.tmp", "checkpoint",
                                                    "checkpoint.old"))
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            self.model.save_pretrained(tmp, dtype="float32")
            self.save_processor(tmp)
            np.savez(tmp / "optimizer.npz", **self.optimizer.state_dict())
            own = self.objective_parameters()
            if own:
                np.savez(tmp / OBJECTIVE_PARAMETERS, **{n: p.data for n, p in own.items()})
            state = {"state": self.state, "data": self.objective.state_dict(),
                     "recipe": self.recipe.to_dict()}
            (tmp / "trainer_state.json").write_text(json.dumps(state, default=_to_json))
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            kept = self.latest_checkpoint()
            raise TrainingError(f"could not save a checkpoint ({e}); "
                                + (f"the previous one in {kept} is intact" if kept else
                                   "no earlier checkpoint exists")) from None
        if current.exists():
            shutil.rmtree(old, ignore_errors=True)
            current.rename(old)
        tmp.rename(current)
        shutil.rmtree(old, ignore_errors=True)

    def save_processor(self, directory):
        """What reads the model's inputs, beside its weights: the tokenizer, and for a vision
        run the image processor's preprocessor_config.json."""
        self.tokenizer.save_pretrained(directory)
        if self.recipe.vision is not None:
            write_preprocessor_config(directory, self.objective.image_processor)
        elif self.model.config.vision is not None and self.recipe.init_from:
            carry_preprocessor_config(self.recipe.init_from, directory)   # SFT, DPO on phi3_v

    # ---- the loop ------------------------------------------------------------------------------
    def validation_loss(self):
        """Held-out loss over the first eval_batches batches (always the same); the objective's
        other held-out statistics (DPO: margin, accuracy) go to state["val_stats"]."""
        stats = self.objective.validate(self.model)
        if len(stats) > 1:
            self.state.setdefault("val_stats", []).append([self.state["step"], stats])
        return stats["loss"]

    def step(self):
        """One optimizer step over grad_accum micro-batches; returns the mean loss."""
        t = self.recipe.train
        for _, p in self.named_parameters():
            p.grad = None
        total, self.step_stats, self.step_tokens = 0.0, {}, 0
        for _ in range(t.grad_accum):
            loss, stats, tokens = self.objective.next_loss(self.model)
            (loss * (1.0 / t.grad_accum)).backward()
            total += float(loss.data) / t.grad_accum
            self.step_tokens += tokens
            for k, v in stats.items():
                self.step_stats[k] = self.step_stats.get(k, 0.0) + v / t.grad_accum
        if not math.isfinite(total):
            kept = self.latest_checkpoint()
            raise TrainingError(f"the loss became {total} at step {self.state['step'] + 1}; "
                                f"stopped without saving"
                                + (f" (the last good checkpoint is {kept})" if kept else ""))
        self.grad_norm = clip_grad_norm([p for _, p in self.named_parameters()], t.clip)
        lr = cosine_lr(self.state["step"], t.lr, t.min_lr, t.warmup_steps, t.steps)
        self.optimizer.step(lr)
        return total

    def run(self, progress=True):
        """Train to the recipe's step count (or its stop_at). Ctrl-C finishes the current step,
        saves, and stops."""
        t, log = self.recipe.train, self.recipe.log
        last = t.stop_at or t.steps
        interrupted = []
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        bar = tqdm(total=last, initial=self.state["step"], disable=not progress,
                   desc=Path(self.recipe.output_dir).name, unit="step", dynamic_ncols=True)
        try:
            while self.state["step"] < last and not interrupted:
                start = time.perf_counter()
                loss = self.step()
                elapsed = time.perf_counter() - start
                s = self.state
                s["step"] += 1
                s["tokens"] += self.step_tokens
                s["seconds"] += elapsed
                s["losses"].append([s["step"], loss])
                if self.step_stats:
                    s.setdefault("stats", []).append([s["step"], self.step_stats])
                if log.eval_every and (s["step"] % log.eval_every == 0 or s["step"] == last):
                    s["val_losses"].append([s["step"], self.validation_loss()])
                shown = {k: f"{self.step_stats[k]:.2f}" for k in ("margin", "accuracy")
                         if k in self.step_stats}
                bar.set_postfix(loss=f"{loss:.3f}", **shown, grad_norm=f"{self.grad_norm:.2f}",
                                tok_s=f"{self.step_tokens / elapsed:.0f}",
                                val=f"{s['val_losses'][-1][1]:.3f}" if s["val_losses"] else "-")
                bar.update(1)
                if (log.save_every and s["step"] % log.save_every == 0) or s["step"] == last:
                    self.save_checkpoint()
            if interrupted:
                self.save_checkpoint()
        finally:
            bar.close()
            signal.signal(signal.SIGINT, previous)
        return not interrupted

    def export(self):
        """The final model in the Hugging Face layout (recipe dtype), tokenizer,
        generation_config.json, loss curve."""
        from tinyphi3.pictures.charts import line_plot
        final = self.out / "final"
        self.model.save_pretrained(final, dtype=self.recipe.output_dtype)
        self.save_processor(final)
        tok = self.tokenizer                 # generation stops where the chat format ends a turn
        (final / "generation_config.json").write_text(json.dumps({
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.stop_token_ids,
            "pad_token_id": tok.pad_token_id, "do_sample": False}, indent=2) + "\n")
        series = loss_series(self.state)
        ylabel = {"dpo": "DPO loss", "distill": "KL(teacher || student), nats/token",
                  "vision_tower": "cross-entropy (nats), mean over the heads"}.get(
            self.recipe.stage, "cross-entropy (nats/token)")
        if self.recipe.stage == "dpo" and self.recipe.rehearsal is not None:
            ylabel = "DPO loss; conversations: nats/token"
        if self.recipe.pictures is not None:
            ylabel = "KL(teacher || student); pictures: cross-entropy (nats/token)"
        line_plot(str(self.out / "loss.png"), series, f"loss: {self.out.name}", "step", ylabel)
        (self.out / "history.json").write_text(json.dumps(self.state))
        return final


SIDE_LOSSES = {"text_loss": "text", "replay_loss": "pre-training text",
               "conversation_loss": "SFT conversations", "picture_loss": "pictures"}


def loss_series(state) -> dict:
    """The curves of loss.png from a run's state: name -> (steps, losses). Steps of another kind
    (a text batch in vision_sft, pre-training text in an SFT with replay, the SFT's conversations
    in a DPO: their stats name the loss, SIDE_LOSSES) are drawn apart from the main curve, with
    their held-out loss beside them."""
    kind_of = {step: next((k for k in SIDE_LOSSES if k in st), None)
               for step, st in state.get("stats", [])}
    curves = {}
    for step, loss in state["losses"]:
        curves.setdefault(kind_of.get(step), []).append((step, loss))
    series = {"train": tuple(zip(*curves.pop(None, [])))}
    if state["val_losses"]:
        series["held-out"] = tuple(zip(*state["val_losses"]))
    for key, what in SIDE_LOSSES.items():
        if key in curves:
            series[f"train: {what}"] = tuple(zip(*curves[key]))
        held_out = [(step, st[key]) for step, st in state.get("val_stats", []) if key in st]
        if held_out:
            series[f"held-out: {what}"] = tuple(zip(*held_out))
    return series


def _to_json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in trainer_state.json")
