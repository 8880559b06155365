"""Safety evaluation in the manner of the report's Figure 4, in miniature.

The model answers, as a chat assistant (greedy, one user turn), two held-out sets from
`tinyphi3.data.safety`: harmful requests (categories and wordings that post-training never saw)
and benign requests (some of which look like harmful ones). An answer is a refusal when
`safety.is_refusal` recognises it. Reported:

    harmful compliance   share of harmful requests NOT refused (lower is better)
    benign refusal       share of benign requests refused (lower is better: over-refusal)
    ends with <|end|>    share of all answers that the model closed itself with <|end|>
                         (rather than running to the limit of 160 tokens, about twice the
                         longest reply in the post-training data)
"""

import time

from tinyphi3.data import safety
from tinyphi3.inference.generate import greedy_replies, greedy_reply
from tinyphi3.evaluation.harness import chat_prompt_ids


def chat_answer(model, tokenizer, request, max_new_tokens=160):
    """(answer text, whether the model ended it with <|end|>) for one user message."""
    out, stop = greedy_reply(model, chat_prompt_ids(tokenizer, request), max_new_tokens,
                             set(tokenizer.stop_token_ids), tokenizer.vocab_size)
    return (tokenizer.decode(out, skip_special_tokens=True).strip(),
            stop == tokenizer.token_to_id("<|end|>"))


def chat_answers(model, tokenizer, requests, max_new_tokens=160, batch_size=16):
    """chat_answer for many requests, `batch_size` greedy replies at a time
    (tinyphi3.inference.generate.greedy_replies): [(answer text, ended with <|end|>)]."""
    end_id = tokenizer.token_to_id("<|end|>")
    prompts = [chat_prompt_ids(tokenizer, request) for request in requests]
    replies = greedy_replies(model, prompts, max_new_tokens, tokenizer=tokenizer,
                             batch_size=batch_size)
    return [(tokenizer.decode(out, skip_special_tokens=True).strip(), stop == end_id)
            for out, stop in replies]


def evaluate_safety(model, tokenizer, n=100, seed=0, max_new_tokens=160, progress=None,
                    batch_size=16) -> dict:
    """Rates over n held-out harmful and n benign requests; `progress(k)` as k more are done.
    Requests are answered `batch_size` at a time (chat_answers)."""
    start = time.perf_counter()
    records = []
    for kind, requests in (("harmful", safety.harmful_requests("test", n, seed)),
                           ("benign", safety.benign_requests("test", n, seed))):
        for first in range(0, len(requests), batch_size):
            asked = requests[first:first + batch_size]
            answers = chat_answers(model, tokenizer, asked, max_new_tokens, batch_size)
            for request, (answer, ended) in zip(asked, answers):
                records.append({"kind": kind, "request": request, "answer": answer,
                                "refused": safety.is_refusal(answer), "ended": ended})
            if progress:
                progress(len(asked))

    def rate(kind, key):
        chosen = [r[key] for r in records if r["kind"] == kind]
        return sum(chosen) / max(len(chosen), 1)

    return {"task": "safety", "n": n, "harmful_compliance": 1.0 - rate("harmful", "refused"),
            "benign_refusal": rate("benign", "refused"),
            "ends_with_end": sum(r["ended"] for r in records) / max(len(records), 1),
            "seconds": time.perf_counter() - start, "records": records}


ROWS = {"harmful_compliance": "harmful compliance: not refused (lower is better)",
        "benign_refusal": "benign refusal (lower is better)",
        "ends_with_end": "answers ending with <|end|>"}


def format_safety_table(results_by_model: dict) -> str:
    """Rows = the three rates, columns = models, in %."""
    models = list(results_by_model)
    width = max(len(label) for label in ROWS.values())
    columns = [max(len(m), 6) for m in models]
    lines = [" " * width + "".join(f"  {m:>{w}}" for m, w in zip(models, columns))]
    for key, label in ROWS.items():
        cells = [f"{100 * results_by_model[m][key]:.1f}" for m in models]
        lines.append(f"{label:<{width}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, columns)))
    n = next(iter(results_by_model.values()))["n"]
    lines.append(f"in %; {n} held-out harmful and {n} benign requests (categories and wordings not "
                 f"in post-training), greedy chat answers")
    return "\n".join(lines)
