"""SFT conversations and DPO pairs as the trainer sees them: tokenized, loss-masked, batched.

A conversation record (one JSON object per line):

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}

is rendered with the tokenizer's chat template (Phi-3's: `<|user|>\\n...<|end|>\\n<|assistant|>\\n
...<|end|>\\n`). SFT learns only what the assistant says: the labels are the token ids of every
assistant reply and its closing `<|end|>`, and -100 (ignored by the loss) everywhere else, so the
model is never trained to write the user's turns or the template's headers.

A completion record, plain text without the chat template:

    {"prompt": "... What is the pass key? The pass key is", "completion": " 48213."}

is the prompt's tokens, then the completion's, labelled on the completion only: the loss of a
4,000-token passkey document is then its five digits, not the filler around them
(`tinyphi3 data passkey --completion` writes such records).

A preference record:

    {"prompt": [messages ending with a user turn], "chosen": "...", "rejected": "..."}

becomes two sequences, prompt + chosen reply and prompt + rejected reply, labelled on that last
reply only (DPO compares the log-probabilities of the two replies).
"""

import json
from pathlib import Path

import numpy as np

from tinyphi3.errors import TinyPhi3Error
from tinyphi3.tokenizers.chat_template import CHAT_ROLES



class ChatDataError(TinyPhi3Error):
    """A post-training data file is missing or has a malformed record (named by file and line)."""


def read_records(path):
    """(line number, dict) for each non-empty line of a .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise ChatDataError(f"{path}: no such file")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ChatDataError(f"{path}:{number}: not a JSON line ({e})") from None
            if not isinstance(record, dict):
                raise ChatDataError(f"{path}:{number}: expected a JSON object")
            yield number, record


def check_messages(messages, where):
    if not isinstance(messages, list) or not messages:
        raise ChatDataError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES or not isinstance(
                m.get("content"), str):
            raise ChatDataError(f"{where}: message {i} needs a role ({', '.join(CHAT_ROLES)}) "
                                f"and a string content")


def assistant_labels(ids, assistant_id, end_id, last_only=False):
    """Labels for ids: the tokens after each <|assistant|> up to and including its <|end|>;
    -100 elsewhere. With last_only, only the last assistant reply is labelled."""
    labels = np.full(len(ids), -100, dtype=np.int64)
    starts = [i for i, t in enumerate(ids) if t == assistant_id]
    for start in starts[-1:] if last_only else starts:
        for i in range(start + 1, len(ids)):
            labels[i] = ids[i]
            if ids[i] == end_id:
                break
    return labels


class ChatEncoder:
    """Token ids and labels of conversations under one tokenizer's chat template."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        try:
            self.assistant_id = tokenizer.token_to_id("<|assistant|>")
            self.end_id = tokenizer.token_to_id("<|end|>")
        except Exception:
            raise ChatDataError("the tokenizer has no <|assistant|> / <|end|> tokens: "
                                "post-training needs the Phi-3 chat format") from None

    def encode(self, messages, last_only=False):
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=False,
                                                 tokenize=True)
        return np.array(ids, dtype=np.int64), assistant_labels(ids, self.assistant_id,
                                                               self.end_id, last_only)


def completion_example(tokenizer, prompt, completion):
    """(ids, labels) of a plain-text completion record: the prompt's tokens (as
    `tokenizer.encode` gives them, the way a prompt is read at inference) and then the
    completion's, labelled on the completion only."""
    prompt_ids = tokenizer.encode(prompt)
    completion_ids = tokenizer.encode(completion, add_special_tokens=False)
    ids = np.array(prompt_ids + completion_ids, dtype=np.int64)
    labels = np.full(len(ids), -100, dtype=np.int64)
    labels[len(prompt_ids):] = completion_ids
    return ids, labels


def load_conversations(path, tokenizer, seq_len):
    """[(ids, labels)] of every conversation (or completion record) that fits seq_len, and how
    many did not fit."""
    encoder, examples, too_long = ChatEncoder(tokenizer), [], 0
    for number, record in read_records(path):
        where = f"{path}:{number}"
        if "completion" in record and "messages" not in record:
            prompt, completion = record.get("prompt"), record["completion"]
            if not (isinstance(prompt, str) and isinstance(completion, str) and prompt
                    and completion.strip()):
                raise ChatDataError(f"{where}: a completion record needs a non-empty 'prompt' "
                                    f"and 'completion', both strings")
            ids, labels = completion_example(tokenizer, prompt, completion)
        else:
            messages = record.get("messages")
            check_messages(messages, where)
            if not any(m["role"] == "assistant" for m in messages):
                raise ChatDataError(f"{where}: the conversation has no assistant turn to learn "
                                    f"from")
            ids, labels = encoder.encode(messages)
        if len(ids) > seq_len:
            too_long += 1
            continue
        examples.append((ids, labels))
    if not examples:
        raise ChatDataError(f"{path}: no conversation fits in {seq_len} tokens")
    return examples, too_long


def load_preferences(path, tokenizer, seq_len):
    """[((chosen ids, labels), (rejected ids, labels))] of the pairs that fit, and the count of
    those that did not."""
    encoder, pairs, too_long = ChatEncoder(tokenizer), [], 0
    for number, record in read_records(path):
        where = f"{path}:{number}"
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
        if missing:
            raise ChatDataError(f"{where}: the preference record has no {', '.join(missing)}")
        prompt = record["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        check_messages(prompt, where)
        if prompt[-1]["role"] != "user":
            raise ChatDataError(f"{where}: the prompt must end with a user turn")
        if not all(isinstance(record[k], str) and record[k] for k in ("chosen", "rejected")):
            raise ChatDataError(f"{where}: chosen and rejected must be non-empty strings")
        pair = tuple(encoder.encode(prompt + [{"role": "assistant", "content": record[k]}],
                                    last_only=True) for k in ("chosen", "rejected"))
        if max(len(pair[0][0]), len(pair[1][0])) > seq_len:
            too_long += 1
            continue
        pairs.append(pair)
    if not pairs:
        raise ChatDataError(f"{path}: no preference pair fits in {seq_len} tokens")
    return pairs, too_long


def pad_batch(sequences, pad_id):
    """[(ids, labels)] -> (ids [B, T], labels [B, T]) right-padded to the longest; pads carry
    label -100. Right padding needs no attention mask: no real token attends to a later one."""
    T = max(len(ids) for ids, _ in sequences)
    ids = np.full((len(sequences), T), pad_id, dtype=np.int64)
    labels = np.full((len(sequences), T), -100, dtype=np.int64)
    for row, (x, y) in enumerate(sequences):
        ids[row, :len(x)], labels[row, :len(y)] = x, y
    return ids, labels


class ExampleBatches:
    """Batches of examples in a fresh random order each epoch; the last `val_count` examples are
    held out. state_dict() / load_state_dict() let a resumed run continue with the same batches.

    With `length_groups` = G > 0 (and `lengths`, one per example), each epoch's random order is
    cut into groups of G batches, each group is sorted by length and cut into its G batches, and
    the batches are shuffled: a batch holds examples of about one length, so padding to the
    longest wastes little, and every batch is still drawn from a random G * batch_size examples.
    Each epoch still reads every train example once (but for the tail that fills no batch)."""

    def __init__(self, examples, batch_size, seed, val_count, length_groups=0, lengths=None):
        val_count = min(val_count, len(examples) // 5)
        self.train = examples[:len(examples) - val_count]
        self.val = examples[len(examples) - val_count:]
        self.batch_size = min(batch_size, len(self.train))
        self.length_groups = length_groups
        if length_groups:
            if lengths is None or len(lengths) != len(examples):
                raise ValueError("length_groups needs the length of every example")
            self.lengths = np.asarray(lengths[:len(self.train)])
        self.seed, self.epoch, self.position = seed, 0, 0
        self._order = self._permutation()

    def _permutation(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.train))
        if not self.length_groups:
            return order
        bs = self.batch_size
        order = order[:len(order) // bs * bs]                  # whole batches only
        group = self.length_groups * bs
        batches = []
        for start in range(0, len(order), group):
            chunk = order[start:start + group]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]   # short to long
            batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
        return np.concatenate([batches[i] for i in rng.permutation(len(batches))])

    def next_examples(self):
        if self.position + self.batch_size > len(self.train):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation()
        chosen = self._order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return [self.train[i] for i in chosen]

    def val_examples(self, n_batches):
        """The first n_batches held-out batches (always the same)."""
        for start in range(0, min(len(self.val), n_batches * self.batch_size), self.batch_size):
            yield self.val[start:start + self.batch_size]

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()
