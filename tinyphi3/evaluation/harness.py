"""Few-shot evaluation the report's way (§3, Appendix A): K solved examples from the train split,
then the held-out question, at temperature 0.

Multiple choice (knowledge, reasoning): the model is scored on the answer letter, as the
report's prompt ends with 'Answer:' and its examples answer with a letter:

    score(L) = log p(" L" | prompt) = sum over the tokens t of " L" of log softmax(logits)[t]
    prediction = argmax over L in A, B, C, D

One forward pass per prompt gives all four scores (the letters are single tokens, so the four
inputs are the same prompt); prompts are batched with left padding and an attention mask.

Open answers (arithmetic, like GSM-8K with a chain of thought): greedy generation until the end
of the line, 'Question:', an end token or `max_new_tokens`; the final number ("The answer is N",
else the last number written) must equal the answer exactly.

Chat models can also be asked in their chat format (`chat=True`): the same few-shot prompt is
the user's message, and the answer is the assistant's greedy reply up to <|end|>. A chat model
answers a multiple-choice question as it learned in SFT, with the fact or the reasoning first,
the options checked in turn, and then "The answer is B."; the letter it names (`parse_letter`)
is its prediction, and a reply that names no letter counts as wrong.

In the cloze formulation (`cloze=True`, raw prompts only) the options are not shown: each
option's own text is scored as the answer, log p(" the Copper Caves" | "...Answer:"), the way
models too small to pick a listed letter are usually evaluated.

A prompt longer than the context (`model.config.max_position_embeddings`, less the room the
answer needs) loses few-shot examples, the first ones first, until it fits; the result counts
the items that lost some.

Only the public API is used: model(ids, attention_mask=...) -> logits [B, T, V],
tokenizer.encode / decode / vocab_size / pad_token_id, and tinyphi3.inference.generate.generate.
"""

import re
import time

import numpy as np

from tinyphi3.data.world import stable_hash
from tinyphi3.data.tasks import (LETTERS, TASKS, few_shot_items, get_task, render,
                                       render_cloze, task_items)
from tinyphi3.inference.generate import generate, greedy_replies

ANSWER_RE = re.compile(r"answer is\s*:?\s*(-?[0-9][0-9,]*)", re.IGNORECASE)
NUMBER_RE = re.compile(r"(?<![0-9A-Za-z])-?[0-9][0-9,]*")
LETTER_RE = re.compile(r"answer is\s*:?\s*\(?([A-D])\b")
BARE_LETTER_RE = re.compile(r"^\(?([A-D])(?:[.):]|$)")


def parse_final_number(text: str):
    """The final number of a chain of thought: the last 'The answer is N', else the last number
    in the text, else None. Thousands separators are allowed ('1,234' -> 1234)."""
    found = ANSWER_RE.findall(text) or NUMBER_RE.findall(text)
    for candidate in reversed(found):
        digits = candidate.rstrip(",").replace(",", "")
        if digits not in ("", "-"):
            return int(digits)
    return None


def parse_letter(text: str):
    """The option letter a reply names: the last 'The answer is X', else a reply that starts with
    the letter ('B', 'B.', '(B)'); None when it names none."""
    found = LETTER_RE.findall(text) or BARE_LETTER_RE.findall(text.strip())
    return found[-1] if found else None


def build_prompt(item, examples, cloze=False) -> str:
    """Solved examples then the question, each in the Appendix A format (or the cloze
    formulation: no options), with no blank lines."""
    show = render_cloze if cloze else render
    return "".join(show(example) for example in examples) + show(item, solved=False)


def continuation_ids(tokenizer, context: str, continuation: str):
    """(context ids, continuation ids) such that together they are the tokens of context +
    continuation. If BPE merges across the boundary, the boundary moves back to where the two
    tokenizations still agree."""
    whole = tokenizer.encode(context + continuation)
    head = tokenizer.encode(context)
    n = 0
    while n < min(len(head), len(whole) - 1) and head[n] == whole[n]:
        n += 1
    return whole[:n], whole[n:]


def chat_prompt_ids(tokenizer, prompt: str):
    """Ids of the prompt as the user's message, ready for the assistant's reply."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                         add_generation_prompt=True, tokenize=True)


def fit_prompt(tokenizer, item, examples, budget, chat=False, cloze=False):
    """The prompt with as many of the examples as fit in `budget` tokens (dropping the first
    ones first). Returns (prompt text, its ids, number of examples kept, truncated): with no
    example left and still too long, the ids are cut from the left to the budget."""
    examples = list(examples)
    while True:
        prompt = build_prompt(item, examples, cloze)
        ids = chat_prompt_ids(tokenizer, prompt) if chat else tokenizer.encode(prompt)
        if len(ids) <= budget:
            return prompt, ids, len(examples), False
        if not examples:
            return prompt, ids[-budget:], 0, True
        examples = examples[1:]


def log_softmax(logits):
    """log p = z - max z - log sum exp(z - max z), over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def loglikelihoods(model, requests, vocab_size=None, batch_size=16, pad_id=0):
    """Sum of log p(continuation | context) for each (context ids, continuation ids) request.

    The model sees context + continuation[:-1]; the continuation's j-th token is predicted at the
    position before it. Identical inputs are run once (the four letter continuations of a
    prompt share one input). Inputs are batched, left-padded, with an attention mask."""
    inputs = [tuple(context) + tuple(cont[:-1]) for context, cont in requests]
    keep = {}
    for x, (_, cont) in zip(inputs, requests):
        keep[x] = max(keep.get(x, 0), len(cont))
    unique = sorted(keep, key=len)                       # similar lengths together: less padding
    logprobs = {}
    for start in range(0, len(unique), batch_size):
        batch = unique[start:start + batch_size]
        T, k = max(map(len, batch)), max(keep[x] for x in batch)
        ids = np.full((len(batch), T), pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), T), dtype=np.int64)
        for row, x in enumerate(batch):                  # left padding: tokens at the end
            ids[row, T - len(x):], mask[row, T - len(x):] = x, 1
        logits = model(ids, attention_mask=mask, logits_to_keep=k)  # [B, T] -> [B, k, V]
        logits = logits[..., :vocab_size] if vocab_size else logits
        for row, x in enumerate(batch):
            logprobs[x] = log_softmax(logits[row, k - keep[x]:])     # [keep[x], V]
    scores = []
    for x, (_, cont) in zip(inputs, requests):
        # the positions before each token
        rows = logprobs[x][len(logprobs[x]) - len(cont):]
        scores.append(float(sum(rows[j, t] for j, t in enumerate(cont))))
    return np.array(scores)


def generate_answer(model, tokenizer, prompt_ids, max_new_tokens=80) -> str:
    """Greedy continuation of the prompt up to the end of its first line (or 'Question:', an end
    token, max_new_tokens): the model's chain of thought."""
    out, text = [], ""
    for token in generate(model, prompt_ids, max_new_tokens=max_new_tokens, temperature=0.0,
                          tokenizer=tokenizer):
        out.append(token)
        text = tokenizer.decode(out, skip_special_tokens=True).lstrip()
        if "\n" in text or "Question:" in text:
            break
    return _first_line(text)


def generate_answers(model, tokenizer, prompts, max_new_tokens=80, batch_size=16) -> list:
    """generate_answer for many prompts, `batch_size` greedy continuations at a time
    (tinyphi3.inference.generate.greedy_replies). A continuation runs on past the first line
    (to a stop token or max_new_tokens) and is cut there afterwards: the same answer."""
    return [_first_line(tokenizer.decode(out, skip_special_tokens=True).lstrip())
            for out, _ in greedy_replies(model, prompts, max_new_tokens, tokenizer=tokenizer,
                                         batch_size=batch_size)]


def _first_line(text: str) -> str:
    return text.split("\n")[0].split("Question:")[0].strip()


def evaluate(model, tokenizer, task, shots=None, n=200, seed=0, batch_size=16,
             max_new_tokens=None, progress=None, chat=False, cloze=False) -> dict:
    """Accuracy of a model on n held-out items of a task, with `shots` solved train examples each
    (the task's default when None). `progress(k)` is called as k more items are done.

    Returns {"task", "shots", "n", "correct", "accuracy", "chance", "metric", "fewer_shots" (items
    whose prompt kept fewer examples to fit the context), "mean_shots", "truncated" (items cut
    even with no example), "seconds", "records" (one dict per item)}."""
    spec = get_task(task)
    shots = spec.default_shots if shots is None else shots
    start = time.perf_counter()
    items = task_items(task, "test", n, seed)
    context = model.config.max_position_embeddings
    if cloze and chat:
        raise ValueError("the cloze formulation scores raw completions: use it without chat")
    cloze = cloze and spec.metric == "choice"               # scored by the options' text
    letters = spec.metric == "choice" and not chat and not cloze   # by letter log-likelihood
    if max_new_tokens is None:                               # a chat reply checks the options
        max_new_tokens = 160 if spec.metric == "choice" else 80
    if letters:
        reserve = max(len(continuation_ids(tokenizer, "Answer:", f" {L}")[1]) for L in LETTERS) - 1
    elif cloze:
        reserve = max(len(continuation_ids(tokenizer, "Answer:", f" {option}")[1])
                      for item in items for option in item.options) - 1
    else:
        reserve = max_new_tokens
    budget = context - reserve
    prompts = []
    for i, item in enumerate(items):
        rng = np.random.default_rng(stable_hash("shots", task, seed, i))
        examples = few_shot_items(task, shots, rng, exclude=item.question)
        prompts.append(fit_prompt(tokenizer, item, examples, budget, chat, cloze))

    if letters or cloze:
        records = _score_choices(model, tokenizer, items, prompts, budget, batch_size, progress,
                                 cloze)
    else:
        records = []
        for first in range(0, len(items), batch_size):
            chunk = list(zip(items, prompts))[first:first + batch_size]
            outputs = generate_answers(model, tokenizer, [ids for _, (_, ids, _, _) in chunk],
                                       max_new_tokens, batch_size)
            for (item, _), output in zip(chunk, outputs):
                record = {"question": item.question, "answer": item.answer, "output": output}
                if item.is_choice:
                    record.update(options=item.options, prediction=parse_letter(output))
                    record["correct"] = record["prediction"] == item.answer
                else:
                    record["prediction"] = parse_final_number(output)
                    record["correct"] = record["prediction"] == int(item.answer)
                records.append(record)
            if progress:
                progress(len(chunk))
    for record, (_, _, used, _) in zip(records, prompts):
        record["shots"] = used
    correct = sum(r["correct"] for r in records)
    used = [p[2] for p in prompts]
    return {"task": task, "shots": shots, "n": len(items), "correct": correct,
            "accuracy": correct / max(len(items), 1), "chance": spec.chance,
            "metric": ("letter log-likelihood" if letters else "option log-likelihood (cloze)"
                       if cloze else "letter named in the reply" if spec.metric == "choice"
                       else "exact match (CoT)"),
            "format": "chat" if chat else "cloze" if cloze else "raw",
            "fewer_shots": sum(u < shots for u in used), "mean_shots": float(np.mean(used or [0])),
            "truncated": sum(p[3] for p in prompts),
            "seconds": time.perf_counter() - start, "records": records}


def _score_choices(model, tokenizer, items, prompts, budget, batch_size, progress, cloze=False):
    """Score each option: the log-likelihood of its letter after the prompt or, in the cloze
    formulation, of its own text."""
    records = []
    for start in range(0, len(items), batch_size):
        chunk = list(zip(items, prompts))[start:start + batch_size]
        requests = []
        for item, (prompt, _, _, _) in chunk:
            for letter, option in zip(LETTERS, item.options):
                context, cont = continuation_ids(tokenizer, prompt,
                                                 f" {option}" if cloze else f" {letter}")
                requests.append((context[-budget:], cont))           # cut only if truncated
        scores = loglikelihoods(model, requests, tokenizer.vocab_size, batch_size,
                                tokenizer.pad_token_id or 0)
        offset = 0
        for item, _ in chunk:
            k = len(item.options)
            item_scores = scores[offset:offset + k]
            offset += k
            predicted = LETTERS[int(np.argmax(item_scores))]
            records.append({"question": item.question, "options": item.options,
                            "answer": item.answer, "prediction": predicted,
                            "correct": predicted == item.answer,
                            "loglikelihoods": dict(zip(LETTERS, item_scores.round(4).tolist()))})
        if progress:
            progress(len(chunk))
    return records


def evaluate_all(model, tokenizer, tasks=None, shots=None, n=200, seed=0, progress=None,
                 **kw) -> dict:
    """evaluate() for several tasks (all by default): {task: result}."""
    return {task: evaluate(model, tokenizer, task, shots, n, seed, progress=progress, **kw)
            for task in (tasks or list(TASKS))}


def format_table(results_by_model: dict) -> str:
    """A table like the report's: rows = tasks with their shots, columns = models, accuracy in %.

    results_by_model: {model name: {task: evaluate() result}}."""
    models = list(results_by_model)
    tasks = list(dict.fromkeys(t for results in results_by_model.values() for t in results))
    first = {t: next(r[t] for r in results_by_model.values() if t in r) for t in tasks}
    labels = {t: f"{t} ({first[t]['shots']}-shot" + ("; CoT" if first[t]["metric"].startswith(
        "exact") else "")
        + {"chat": "; chat", "cloze": "; cloze"}.get(first[t].get("format"), "") + ")"
        for t in tasks}
    width = max([len(label) for label in labels.values()] + [4])
    columns = [max(len(m), 6) for m in models]
    lines = [" " * width + "".join(f"  {m:>{w}}" for m, w in zip(models, columns))]
    for t in tasks:
        cells = [f"{100 * results_by_model[m][t]['accuracy']:.1f}"
                 if t in results_by_model[m] else "-"
                 for m in models]
        lines.append(f"{labels[t]:<{width}}"
                     + "".join(f"  {c:>{w}}" for c, w in zip(cells, columns)))
    sizes = sorted({r["n"] for results in results_by_model.values() for r in results.values()})
    lines.append(f"accuracy in %; {'/'.join(map(str, sizes))} held-out items per task; chance: "
                 + ", ".join(f"{t} {100 * first[t]['chance']:.0f}%" for t in tasks))
    for m in models:
        for t, r in results_by_model[m].items():
            if r["fewer_shots"]:
                lines.append(f"{m}, {t}: {r['fewer_shots']} of {r['n']} prompts kept fewer shots "
                             f"to fit the context (mean {r['mean_shots']:.1f} of {r['shots']})")
    return "\n".join(lines)
