"""What a training step optimises, one class per stage of the Phi-3 recipe:

    Pretraining                next-token loss on windows of the token shards
    SupervisedFineTuning       next-token loss on the assistant's replies of conversations (SFT)
    PreferenceOptimization     the DPO loss on chosen/rejected pairs, against a frozen reference

Each gives the loss of the next batch (a Tensor to call backward on, with statistics to log and
the number of tokens it read), the held-out statistics, and its data position for resume.
"""

import numpy as np

from tinyphi3.data.shards import TokenStream, val_batches
from tinyphi3.nn.layers import causal_lm_loss
from tinyphi3.models.model import Phi3
from tinyphi3.train.conversations import (ExampleBatches, load_conversations, load_preferences,
                                          pad_batch)
from tinyphi3.train.dpo import dpo_batch_loss

VAL_EXAMPLES = 256            # SFT/DPO: examples held out from the end of the file (<= 20%)


class Pretraining:
    def __init__(self, recipe, tokenizer):
        t = recipe.train
        self.recipe, self.tokenizer = recipe, tokenizer
        self.stream = TokenStream(recipe.data_shards, "train", t.batch_size, t.seq_len, t.seed,
                                  tokenizer=tokenizer)
        self.notes = []

    def next_loss(self, model):
        x, y = self.stream.next_batch()
        return model.loss(x, y), {}, x.size

    def validate(self, model):
        t = self.recipe.train
        losses = [float(causal_lm_loss(model(x), y))          # inference: no tape
                  for x, y in val_batches(self.recipe.data_shards, t.batch_size, t.seq_len,
                                          self.recipe.log.eval_batches, tokenizer=self.tokenizer)]
        return {"loss": float(np.mean(losses))}

    def state_dict(self):
        return self.stream.state_dict()

    def load_state_dict(self, state):
        self.stream.load_state_dict(state)


class _ExampleObjective:
    """Shared by SFT and DPO: whole examples from a .jsonl file, in shuffled batches."""

    def __init__(self, recipe, tokenizer, examples, too_long, what):
        t = recipe.train
        self.recipe, self.pad_id = recipe, tokenizer.pad_token_id or 0
        self.batches = ExampleBatches(examples, t.batch_size, t.seed, VAL_EXAMPLES)
        self.notes = [f"{len(self.batches.train):,} {what} to train on, "
                      f"{len(self.batches.val):,} held out"
                      + (f"; {too_long:,} longer than seq_len {t.seq_len} left out"
                         if too_long else "")]

    def state_dict(self):
        return self.batches.state_dict()

    def load_state_dict(self, state):
        self.batches.load_state_dict(state)


class SupervisedFineTuning(_ExampleObjective):
    def __init__(self, recipe, tokenizer):
        examples, too_long = load_conversations(recipe.data_file, tokenizer, recipe.train.seq_len)
        super().__init__(recipe, tokenizer, examples, too_long, "conversations")

    def next_loss(self, model):
        ids, labels = pad_batch(self.batches.next_examples(), self.pad_id)
        return model.loss(ids, labels), {}, ids.size

    def validate(self, model):
        losses = [float(causal_lm_loss(model(ids), labels)) for ids, labels in
                  (pad_batch(b, self.pad_id)
                   for b in self.batches.val_examples(self.recipe.log.eval_batches))]
        return {"loss": float(np.mean(losses))}


class PreferenceOptimization(_ExampleObjective):
    def __init__(self, recipe, tokenizer):
        pairs, too_long = load_preferences(recipe.data_file, tokenizer, recipe.train.seq_len)
        super().__init__(recipe, tokenizer, pairs, too_long, "preference pairs")
        self.reference = Phi3.from_pretrained(recipe.init_from)      # frozen: never updated

    def _loss(self, model, pairs, record):
        t = self.recipe.train
        return dpo_batch_loss(model, self.reference, pairs, t.beta, t.label_smoothing,
                              self.pad_id, record=record, sft_weight=t.sft_weight)

    def next_loss(self, model):
        pairs = self.batches.next_examples()
        loss, stats = self._loss(model, pairs, record=True)
        return loss, stats, 2 * len(pairs) * max(len(x[0]) for pair in pairs for x in pair)

    def validate(self, model):
        results = [self._loss(model, b, record=False)
                   for b in self.batches.val_examples(self.recipe.log.eval_batches)]
        stats = {k: float(np.mean([s[k] for _, s in results])) for k in results[0][1]}
        return {"loss": float(np.mean([float(loss) for loss, _ in results])), **stats}


OBJECTIVES = {"pretrain": Pretraining, "sft": SupervisedFineTuning,
              "dpo": PreferenceOptimization}
