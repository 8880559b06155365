"""Long chats: does the chat model use what was said thousands of tokens before the question?

For each kind of tinyphi3.data.longdocs' long chats and each length, n held-out chats (the test
split: held-out facts, calculations, pass keys and wordings, which no training chat holds) are
asked as the chat would ask them: every message but the last reply, in the chat template, then
the model's greedy reply up to <|end|>, 96 new tokens or the end of the context. The reply is
judged against the record's "answer" (what the data's own last reply holds), case aside, as a
whole word:

    story    a story pasted into the chat and a question about a fact told in its first third:
             the reply names the fact's value ("marsh", "blue");
    passkey  a passkey document in the chat, "What is the pass key?": the first number of the
             reply is the key, digit for digit;
    memory   a name or a number given in the first turn, many short exchanges, then the name
             asked for or the number used: the reply names the name, or ends on the number the
             calculation gives ("The answer is 75.", tinyphi3.evaluation.wording.final_number).

The control (`alone=True`): the same final question with what came before it taken away (the
story, the filler with its key, the earlier turns): what the model gets right then, it did not
need the long context for. Pass keys and names are drawn at random (chance is about 0); a
story's facts are the world's, so a model that learned them in pre-training can answer from
memory, which the control measures.

    grid = longchat_recall(model, tokenizer, lengths=(1024, 2048, 3584), n_per_cell=10)
    grid["accuracy"]["memory"][2]      # 0.0-1.0, or None where the chat is past the context
"""

import re

import numpy as np

from tinyphi3.data.longdocs import LONG_CHAT_KINDS, long_chat
from tinyphi3.data.world import stable_hash
from tinyphi3.evaluation.passkey import first_number, past_context_view
from tinyphi3.evaluation.wording import final_number
from tinyphi3.inference.generate import generate

MAX_NEW_TOKENS = 96          # the column method's reply to a sum is some 60 tokens


def judge(kind: str, answer: str, text: str) -> bool:
    """Whether a reply holds the answer, by the rule of the module docstring."""
    if kind == "passkey":
        return first_number(text) == answer
    if answer.lstrip("-").isdigit():                         # memory: a number used
        return final_number(text) == answer
    return re.search(rf"\b{re.escape(answer)}\b", text, re.IGNORECASE) is not None


def question_alone(kind: str, messages: list) -> list:
    """The chat's final question with the long context before it taken away: the last user turn
    only; for a story the question after it (the user's text after its last blank line), for a
    passkey document the ask after its last line."""
    last = messages[-2]["content"]
    if kind == "story":
        last = last.rsplit("\n\n", 1)[-1]
    elif kind == "passkey":
        last = last.rsplit("\n", 1)[-1]
    return [{"role": "user", "content": last}]


def held_out_chats(tokenizer, kind: str, length: int, n: int, seed: int = 0) -> list:
    """The n held-out chats of one cell: the same for every model that shares the tokenizer."""
    rng = np.random.default_rng(stable_hash("longchat-eval", seed, kind, int(length)))
    return [long_chat(rng, kind, int(length), "test", tokenizer) for _ in range(n)]


def chat_reply(model, tokenizer, messages) -> str:
    """The greedy reply to a chat ending with a user turn, up to <|end|>, MAX_NEW_TOKENS or the
    end of the context; None when the prompt leaves no room for a reply."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    room = model.config.max_position_embeddings - len(ids)
    if room < 1:
        return None
    out = list(generate(model, ids, max_new_tokens=min(MAX_NEW_TOKENS, room), temperature=0.0,
                        tokenizer=tokenizer))
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def longchat_recall(model, tokenizer, lengths=(1024, 2048, 3584), kinds=LONG_CHAT_KINDS,
                    n_per_cell: int = 10, seed: int = 0, alone: bool = False,
                    allow_past_context: bool = False, progress=None) -> dict:
    """Share of right replies per (kind, length). A cell whose chats are longer than the model's
    context is None, unless allow_past_context (then the model is asked as
    passkey.past_context_view); a chat whose prompt fills the context is wrong. Returns
    {"lengths", "kinds", "accuracy" ({kind: [per length]}), "n_per_cell", "context", "alone",
    "past_context" (whether chats past the context were run), "records" (kind, length, answer,
    reply, right)}. `progress(k)` is called as k more chats are done or skipped."""
    context = model.config.max_position_embeddings
    ran_past = allow_past_context and max(lengths) > context
    asked = past_context_view(model, max(lengths) + MAX_NEW_TOKENS) if ran_past else model
    accuracy, records = {}, []
    for kind in kinds:
        accuracy[kind] = []
        for length in lengths:
            if length > context and not allow_past_context:
                accuracy[kind].append(None)
                if progress:
                    progress(n_per_cell)
                continue
            right = 0
            for chat in held_out_chats(tokenizer, kind, length, n_per_cell, seed):
                messages = (question_alone(kind, chat["messages"]) if alone
                            else chat["messages"][:-1])
                text = chat_reply(asked, tokenizer, messages)
                ok = text is not None and judge(kind, chat["answer"], text)
                right += ok
                records.append({"kind": kind, "length": int(length), "answer": chat["answer"],
                                "reply": text, "right": ok})
                if progress:
                    progress(1)
            accuracy[kind].append(right / n_per_cell)
    return {"lengths": [int(v) for v in lengths], "kinds": list(kinds), "accuracy": accuracy,
            "n_per_cell": n_per_cell, "context": context, "alone": alone,
            "past_context": bool(ran_past), "records": records}


def format_longchat_table(results: dict) -> str:
    """One table per model: % right, rows = kind of chat, columns = length in tokens, each cell
    'in the chat / question alone'; 'past' past the model's context."""
    blocks = []
    for name, both in results.items():
        chat, alone = both["chat"], both["alone"]
        past = ", run past it" if chat["past_context"] else ""
        lines = [f"long chats, % right of {chat['n_per_cell']} per cell (with the chat / the "
                 f"question alone): {name} (context {chat['context']}{past})",
                 "kind \\ tokens" + "".join(f"{v:>14}" for v in chat["lengths"])]
        for kind in chat["kinds"]:
            cells = []
            for a, b in zip(chat["accuracy"][kind], alone["accuracy"][kind]):
                cells.append("past" if a is None else f"{100 * a:.0f} / {100 * b:.0f}")
            lines.append(f"{kind:<13}" + "".join(c.rjust(14) for c in cells))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
