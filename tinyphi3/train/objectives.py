"""What a training step optimises, one class per stage of the Phi-3 recipe:

    Pretraining                next-token loss on windows of the token shards
    SupervisedFineTuning       next-token loss on the assistant's replies of conversations (SFT)
    PreferenceOptimization     the DPO loss on chosen/rejected pairs, against a frozen reference
    Distillation               a frozen teacher's next-token distributions on the replies of
                               conversations (tinyphi3.train.distill): how mini-long keeps
                               mini's short-prompt behaviour
    VisionFineTuning           next-token loss on the answers to questions on pictures, read by
                               phi-3-vision (Phi-3 report §6; tinyphi3.train.images)

Each is made from the recipe, the tokenizer and the model to train, and gives the loss of the
next batch (a Tensor to call backward on, with statistics to log and the number of tokens it
read), the held-out statistics, and its data position for resume.
"""

import numpy as np

from tinyphi3.data.shards import TokenStream, val_batches
from tinyphi3.errors import InvalidInputError
from tinyphi3.nn.autograd import enable_grad
from tinyphi3.nn.layers import causal_lm_loss
from tinyphi3.models.model import Phi3
from tinyphi3.train.conversations import (ExampleBatches, load_conversations, load_preferences,
                                          pad_batch)
from tinyphi3.train.distill import distillation_loss, teacher_probabilities
from tinyphi3.train.dpo import dpo_batch_loss
from tinyphi3.train.images import image_batch, image_processor_for, load_image_conversations
from tinyphi3.train.tower import TowerPretraining

VAL_EXAMPLES = 256            # SFT/DPO: examples held out from the end of the file (<= 20%)


class Pretraining:
    def __init__(self, recipe, tokenizer, model):
        t = recipe.train
        self.recipe, self.tokenizer = recipe, tokenizer
        self.stream = TokenStream(recipe.data_shards, "train", t.batch_size, t.seq_len, t.seed,
                                  tokenizer=tokenizer)
        self.notes = []

    def next_loss(self, model):
        x, y = self.stream.next_batch()
        return model.loss(x, y), {}, x.size

    def validate(self, model):
        return {"loss": shards_loss(model, self.recipe.data_shards, self.recipe, self.tokenizer)}

    def state_dict(self):
        return self.stream.state_dict()

    def load_state_dict(self, state):
        self.stream.load_state_dict(state)


def shards_loss(model, directory, recipe, tokenizer) -> float:
    """Mean held-out next-token loss over the first eval_batches windows of the token shards'
    val split (always the same), at the recipe's batch_size and seq_len."""
    t = recipe.train
    return float(np.mean([float(causal_lm_loss(model(x), y))          # inference: no tape
                          for x, y in val_batches(directory, t.batch_size, t.seq_len,
                                                  recipe.log.eval_batches, tokenizer=tokenizer)]))


def open_replay(recipe, tokenizer, seed):
    """The [data] replay shards as a TokenStream of the recipe's batches, and its note."""
    t = recipe.train
    stream = TokenStream(recipe.replay, "train", t.batch_size, t.seq_len, seed,
                         tokenizer=tokenizer)
    note = (f"pre-training text from {recipe.replay} on {recipe.replay_share:.0%} of the steps "
            f"({stream.num_windows:,} windows of {t.seq_len} tokens)")
    return stream, note


def replay_batch_loss(model, stream):
    """The next batch of replay windows: its loss (every token), statistics, tokens read."""
    x, y = stream.next_batch()
    loss = model.loss(x, y)
    return loss, {"replay_loss": float(loss.data)}, x.size


def conversation_loss(model, batches: ExampleBatches, pad_id: int, n_batches: int) -> float:
    """Mean held-out loss over the first n_batches batches of conversations (always the same)."""
    losses = [float(causal_lm_loss(model(ids), labels))            # inference: no tape
              for ids, labels in (pad_batch(b, pad_id) for b in batches.val_examples(n_batches))]
    return float(np.mean(losses))


def picture_batch_loss(model, examples, processor, pad_id: int):
    """A batch of pictures with questions: its next-token loss on the answers (a Tensor to call
    backward on) and the number of tokens it read, image slots included."""
    batch = image_batch(examples, processor, pad_id)
    return model.loss(**batch), batch["input_ids"].size


def pictures_loss(model, batches: ExampleBatches, processor, pad_id: int, n_batches: int) -> float:
    """Mean held-out loss over the first n_batches batches of pictures with questions (the
    answers' tokens; always the same batches)."""
    losses = []
    for examples in batches.val_examples(n_batches):
        b = image_batch(examples, processor, pad_id)                   # inference: no tape
        logits = model(b["input_ids"], b["pixel_values"], b["image_sizes"])
        losses.append(float(causal_lm_loss(logits, b["labels"])))
    return float(np.mean(losses))


def share_step(n: int, share: float) -> bool:
    """Whether step n (from 0) is one of a share of the steps, spread evenly: floor((n + 1) *
    share) > floor(n * share), i.e. every fourth step at share 0.25."""
    return int((n + 1) * share) > int(n * share)


class _ExampleObjective:
    """Shared by SFT, DPO and vision SFT: whole examples from a .jsonl file, in shuffled batches;
    and, optionally, a side stream (`side`) that a share of the steps reads instead: step n
    (counting from 0) is a side step when share_step(n, side_share). A checkpoint's data position
    holds the batches under STATE_KEYS[0] and the side stream under STATE_KEYS[1]; runs with no
    side stream keep the batches' own layout where FLAT_ALONE (SFT and DPO, as before sides)."""

    STATE_KEYS = ("examples", "side")
    FLAT_ALONE = True

    def __init__(self, recipe, tokenizer, examples, too_long, what, lengths=None):
        t = recipe.train
        self.recipe, self.tokenizer, self.pad_id = recipe, tokenizer, tokenizer.pad_token_id or 0
        self.batches = ExampleBatches(examples, t.batch_size, t.seed, VAL_EXAMPLES,
                                      t.length_groups, lengths)
        self.notes = [f"{len(self.batches.train):,} {what} to train on, "
                      f"{len(self.batches.val):,} held out"
                      + (f"; {too_long:,} longer than seq_len {t.seq_len} left out"
                         if too_long else "")]
        if t.length_groups:
            self.notes.append(f"batches of {what} of about one length (groups of "
                              f"{t.length_groups} batches sorted by length)")
        self.side, self.side_share, self.calls = None, 0.0, 0

    def _side_conversations(self, path, tokenizer, what, batch_size, length_groups=0):
        """A file of conversations as the side stream (read on side_share of the steps), with its
        note."""
        texts, too_long = load_conversations(path, tokenizer, self.recipe.train.seq_len)
        self._side_examples(texts, too_long, what, batch_size, length_groups,
                            [len(ids) for ids, _ in texts])

    def _side_examples(self, examples, too_long, what, batch_size, length_groups=0,
                       lengths=None):
        """Examples already read as the side stream (read on side_share of the steps), with its
        note."""
        self.side = ExampleBatches(examples, batch_size, self.recipe.train.seed + 1, VAL_EXAMPLES,
                                   length_groups, lengths)
        self.notes.append(f"{len(self.side.train):,} {what} on {self.side_share:.0%} of the "
                          f"steps, {len(self.side.val):,} held out"
                          + (f"; {too_long:,} longer than seq_len left out" if too_long else ""))

    def side_step(self, n: int) -> bool:
        return self.side is not None and share_step(n, self.side_share)

    def next_is_side(self) -> bool:
        """Counts the call; whether it reads the side stream."""
        n, self.calls = self.calls, self.calls + 1
        return self.side_step(n)

    def state_dict(self):
        if self.side is None and self.FLAT_ALONE:
            return self.batches.state_dict()
        examples, side = self.STATE_KEYS
        state = {examples: self.batches.state_dict(), "calls": self.calls}
        if self.side is not None:
            state[side] = self.side.state_dict()
        return state

    def load_state_dict(self, state):
        if self.side is None and self.FLAT_ALONE:
            self.batches.load_state_dict(state)
            return
        examples, side = self.STATE_KEYS
        self.batches.load_state_dict(state[examples])
        self.calls = int(state["calls"])
        if self.side is not None:
            self.side.load_state_dict(state[side])


class SupervisedFineTuning(_ExampleObjective):
    """Conversations; with [data] replay, a share of the steps reads a batch of pre-training text
    windows instead (the next-token loss on every token), so that fine-tuning keeps the facts the
    base learned."""

    STATE_KEYS = ("conversations", "replay")

    def __init__(self, recipe, tokenizer, model):
        examples, too_long = load_conversations(recipe.data_file, tokenizer, recipe.train.seq_len)
        super().__init__(recipe, tokenizer, examples, too_long, "conversations",
                         lengths=[len(ids) for ids, _ in examples])
        if recipe.replay is not None:
            self.side_share = recipe.replay_share
            self.side, note = open_replay(recipe, tokenizer, recipe.train.seed + 1)
            self.notes.append(note)

    def next_loss(self, model):
        if self.next_is_side():
            return replay_batch_loss(model, self.side)
        ids, labels = pad_batch(self.batches.next_examples(), self.pad_id)
        return model.loss(ids, labels), {}, ids.size

    def validate(self, model):
        result = {"loss": conversation_loss(model, self.batches, self.pad_id,
                                            self.recipe.log.eval_batches)}
        if self.side is not None:
            result["replay_loss"] = shards_loss(model, self.recipe.replay, self.recipe,
                                                self.tokenizer)
        return result


class PreferenceOptimization(_ExampleObjective):
    """Pairs; with [data] conversations, a share of the steps trains on a batch of the SFT's
    conversations instead (2 x batch_size of them, as many sequences as a batch of pairs), with
    the SFT's next-token loss. A pair lowers its rejected reply wherever that reply's tokens are
    likely, not only after its own prompt; the conversations hold every family's replies where
    SFT put them."""

    STATE_KEYS = ("pairs", "conversations")

    def __init__(self, recipe, tokenizer, model):
        pairs, too_long = load_preferences(recipe.data_file, tokenizer, recipe.train.seq_len)
        super().__init__(recipe, tokenizer, pairs, too_long, "preference pairs",
                         lengths=[max(len(c[0]), len(r[0])) for c, r in pairs])
        self.reference = Phi3.from_pretrained(recipe.init_from)      # frozen: never updated
        if recipe.rehearsal is not None:
            t = recipe.train
            self.side_share = recipe.rehearsal_share
            self._side_conversations(recipe.rehearsal, tokenizer, "SFT conversations trained",
                                     2 * t.batch_size, t.length_groups)

    def _loss(self, model, pairs, record):
        t = self.recipe.train
        return dpo_batch_loss(model, self.reference, pairs, t.beta, t.label_smoothing,
                              self.pad_id, record=record, sft_weight=t.sft_weight)

    def next_loss(self, model):
        if self.next_is_side():
            ids, labels = pad_batch(self.side.next_examples(), self.pad_id)
            loss = model.loss(ids, labels)
            return loss, {"conversation_loss": float(loss.data)}, ids.size
        pairs = self.batches.next_examples()
        loss, stats = self._loss(model, pairs, record=True)
        return loss, stats, 2 * len(pairs) * max(len(x[0]) for pair in pairs for x in pair)

    def validate(self, model):
        results = [self._loss(model, b, record=False)
                   for b in self.batches.val_examples(self.recipe.log.eval_batches)]
        stats = {k: float(np.mean([s[k] for _, s in results])) for k in results[0][1]}
        if self.side is not None:
            stats["conversation_loss"] = conversation_loss(model, self.side, self.pad_id,
                                                           self.recipe.log.eval_batches)
        return {"loss": float(np.mean([float(loss) for loss, _ in results])), **stats}


class Distillation(_ExampleObjective):
    """Conversations read by the student and by a frozen teacher ([train] teacher, a checkpoint
    with the same vocabulary): the mean KL divergence from the teacher's next-token distribution
    to the student's at the replies' tokens (tinyphi3.train.distill). The held-out statistics
    add the replies' plain next-token loss (`reply_loss`), as SFT would report it.

    With [data] images (a phi3_v student), a share of the steps (images_share, spread as
    share_step spreads them) trains on a batch of pictures with questions instead, with vision
    SFT's next-token loss on the answers (`picture_loss`): the teacher is a text model and knows
    nothing of pictures, so without them the distillation pulls the decoder back towards the
    text model on every step and wears away what the picture SFT taught."""

    STATE_KEYS = ("conversations", "pictures")

    def __init__(self, recipe, tokenizer, model):
        t = recipe.train
        examples, too_long = load_conversations(recipe.data_file, tokenizer, t.seq_len)
        super().__init__(recipe, tokenizer, examples, too_long, "conversations",
                         lengths=[len(ids) for ids, _ in examples])
        self.teacher = Phi3.from_pretrained(t.teacher)                # frozen: never updated
        theirs, ours = self.teacher.config, model.config
        if theirs.vocab_size != ours.vocab_size:
            raise InvalidInputError(f"the teacher {t.teacher} has a vocabulary of "
                                    f"{theirs.vocab_size} tokens, the student "
                                    f"{ours.vocab_size}: distillation compares their "
                                    f"distributions token by token, so they must share one")
        if t.seq_len > theirs.max_position_embeddings:
            raise InvalidInputError(f"seq_len {t.seq_len} is past the teacher's context of "
                                    f"{theirs.max_position_embeddings} tokens")
        self.notes.append(f"teacher: {t.teacher} (frozen)")
        if recipe.pictures is not None:                 # a phi3_v student (Trainer checks)
            self.image_processor = image_processor_for(model, recipe)  # written with checkpoints
            pictures, too_long = load_image_conversations(recipe.pictures, tokenizer,
                                                          self.image_processor, t.seq_len)
            self.side_share = recipe.pictures_share
            self._side_examples(pictures, too_long, "pictures with questions", t.batch_size)

    def _batch(self, examples):
        """(ids, labels, the teacher's distributions at each position) of a batch."""
        ids, labels = pad_batch(examples, self.pad_id)
        return ids, labels, teacher_probabilities(self.teacher(ids))     # inference: no tape

    def next_loss(self, model):
        if self.next_is_side():
            loss, tokens = picture_batch_loss(model, self.side.next_examples(),
                                              self.image_processor, self.pad_id)
            return loss, {"picture_loss": float(loss.data)}, tokens
        ids, labels, target = self._batch(self.batches.next_examples())
        with enable_grad():
            return distillation_loss(model.forward(ids), target, labels), {}, ids.size

    def validate(self, model):
        kl, replies = [], []
        for examples in self.batches.val_examples(self.recipe.log.eval_batches):
            ids, labels, target = self._batch(examples)
            logits = model(ids)                                       # inference: no tape
            kl.append(float(distillation_loss(logits, target, labels)))
            replies.append(float(causal_lm_loss(logits, labels)))
        result = {"loss": float(np.mean(kl)), "reply_loss": float(np.mean(replies))}
        if self.side is not None:
            result["picture_loss"] = pictures_loss(model, self.side, self.image_processor,
                                                   self.pad_id, self.recipe.log.eval_batches)
        return result


class VisionFineTuning(_ExampleObjective):
    """Pictures with questions; with [vision] text, a share of the steps takes a batch of text
    conversations instead (no picture), so that the decoder keeps what SFT taught it: step n
    (counting from 0) is a text step when floor((n + 1) * share) > floor(n * share), i.e. every
    fourth step at share 0.25. With [data] replay, step n is first a replay step by the same rule
    at replay_share (a batch of pre-training windows, the next-token loss on every token: the
    facts that the textbooks taught), and text_share is a share of the other steps: at 0.25 and
    0.25, a quarter of the steps replay, 3/16 are text and 9/16 pictures."""

    STATE_KEYS = ("images", "text")
    FLAT_ALONE = False

    def __init__(self, recipe, tokenizer, model):
        self.image_processor = image_processor_for(model, recipe)     # written with checkpoints
        examples, too_long = load_image_conversations(recipe.data_file, tokenizer,
                                                      self.image_processor, recipe.train.seq_len)
        super().__init__(recipe, tokenizer, examples, too_long, "pictures with questions")
        if recipe.vision.text is not None:
            self.side_share = recipe.vision.text_share
            self._side_conversations(recipe.vision.text, tokenizer,
                                     "text conversations mixed in", recipe.train.batch_size)
        self.replay, self.replay_share = None, recipe.replay_share
        if recipe.replay is not None:
            self.replay, note = open_replay(recipe, tokenizer, recipe.train.seed + 2)
            self.notes.append(note)

    def replay_step(self, n: int) -> bool:
        return self.replay is not None and share_step(n, self.replay_share)

    def text_index(self, n: int) -> int:
        """Step n's place among the steps that are not replay steps (int(n * share) of the n
        steps before it are): the text share counts those, so the two shares never collide."""
        return n - int(n * self.replay_share) if self.replay is not None else n

    def state_dict(self):
        state = super().state_dict()
        if self.replay is not None:
            state["replay"] = self.replay.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])

    def next_loss(self, model):
        n, self.calls = self.calls, self.calls + 1
        if self.replay_step(n):
            return replay_batch_loss(model, self.replay)
        if self.side_step(self.text_index(n)):
            ids, labels = pad_batch(self.side.next_examples(), self.pad_id)
            loss = model.loss(ids, labels)
            return loss, {"text_loss": float(loss.data)}, ids.size
        loss, tokens = picture_batch_loss(model, self.batches.next_examples(),
                                          self.image_processor, self.pad_id)
        return loss, {}, tokens

    def validate(self, model):
        result = {"loss": pictures_loss(model, self.batches, self.image_processor, self.pad_id,
                                        self.recipe.log.eval_batches)}
        if self.side is not None:
            result["text_loss"] = conversation_loss(model, self.side, self.pad_id,
                                                    self.recipe.log.eval_batches)
        if self.replay is not None:
            result["replay_loss"] = shards_loss(model, self.recipe.replay, self.recipe,
                                                self.tokenizer)
        return result


def _tower_pretraining(recipe, tokenizer, model):
    return TowerPretraining(recipe, tokenizer, model, VAL_EXAMPLES)


OBJECTIVES = {"pretrain": Pretraining, "sft": SupervisedFineTuning,
              "dpo": PreferenceOptimization, "distill": Distillation,
              "vision_sft": VisionFineTuning, "vision_tower": _tower_pretraining}
