"""A conversation with pictures -> Phi-3-vision's inputs, the way its model card builds them.

    message   {"role": "user", "content": text, "images": [image, ...]}     (images: optional)
    content   "<|image_k|>\\n" for each of its images, numbered 1..N over the whole chat, then text
    text      the chat template over those contents, e.g.
              "<|user|>\\n<|image_1|>\\nWhat is this?<|end|>\\n<|assistant|>\\n"
    input_ids the processor's reading of that text: the chunks between tags tokenised one by one
              (each with BOS if the tokenizer adds one), tag k -> n_k copies of -k   [1, T]

(REFERENCE-vision §2 "Text side" and §4.2.) One difference from rendering the text and handing it
to Phi3VProcessor: message contents stay text, as `Tokenizer.apply_chat_template(...,
tokenize=True)` keeps them (tinyphi3/tokenizers/chat_template.py). A user who types `<|end|>` or
`<|image_2|>` writes those characters, not a control token or a tag; only the template's own
control tokens and the tags added here are read as such. For contents free of such strings the
ids are exactly the processor's.
"""

import re

import numpy as np

from tinyphi3.errors import InvalidInputError, TokenizerError
from tinyphi3.models.vision.processor import image_tag
from tinyphi3.tokenizers.chat_template import compile_chat_template, render_with_placeholders


class Slot(int):
    """Where image k's slots go among the parts of a rendered chat (k, 1-based)."""


def tagged(message: dict, first: int) -> dict:
    """The message whose content starts with the tags of its images, numbered from `first`."""
    count = len(message.get("images") or ()) if isinstance(message, dict) else 0
    if not count or not isinstance(message.get("content"), str):
        return message                   # nothing to tag, or not a message: the template says so
    tags = "".join(image_tag(k) + "\n" for k in range(first, first + count))
    return {**message, "content": tags + message["content"]}


def check_message_list(messages) -> list:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TokenizerError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, "
                             f"got {messages!r}")
    return list(messages)


def chat_parts(tokenizer, messages: list, add_generation_prompt: bool = True):
    """The rendered chat as a list of parts: str (text), int (a control token's id) and Slot(k)
    (image k's place), plus the rendered text (tags written out) that they spell."""
    messages = check_message_list(messages)
    counts = [len(m.get("images") or ()) if isinstance(m, dict) else 0 for m in messages]
    for m, n in zip(messages, counts):
        if n and m.get("role") != "user":
            raise InvalidInputError(f"only user messages carry images, not a {m.get('role')!r} "
                                    f"one")
    firsts = np.cumsum([1] + counts[:-1]).tolist()            # the number of each one's first tag
    shown = [tagged(m, k) for m, k in zip(messages, firsts)]
    text = tokenizer.apply_chat_template(shown, add_generation_prompt, tokenize=False)
    template = compile_chat_template(tokenizer.chat_template)
    skeleton, _, mark = render_with_placeholders(template, shown, add_generation_prompt,
                                                 tokenizer.template_variables())
    # placeholder i stands for the i-th non-empty content: its message's tags, then its text
    with_content = [j for j, m in enumerate(shown) if m["content"]]
    placeholder = re.compile(f"{re.escape(mark)}(\\d+){re.escape(mark)}")
    parts = []

    def add_text(piece):
        if parts and type(parts[-1]) is str:
            parts[-1] += piece
        elif piece:
            parts.append(piece)

    for part in tokenizer.split_control_tokens(skeleton):
        if isinstance(part, int):
            parts.append(part)
            continue
        for i, piece in enumerate(placeholder.split(part)):     # text, index, text, index, ...
            if i % 2 == 0:
                add_text(piece)
                continue
            j = with_content[int(piece)]
            for k in range(firsts[j], firsts[j] + counts[j]):
                parts.append(Slot(k))
                add_text("\n")
            add_text(messages[j]["content"])
    spelled = "".join(image_tag(p) if type(p) is Slot else
                      tokenizer.control_token_text(p) if isinstance(p, int) else p for p in parts)
    if spelled != text or sum(type(p) is Slot for p in parts) != sum(counts):
        raise TokenizerError("the chat template changes message contents, so its control tokens "
                             "and image tags cannot be told apart from the users' text")
    return parts, text


def chunk_ids(tokenizer, parts: list) -> list:
    """Ids of one chunk (text and control ids between two tags), as `tokenizer(chunk).input_ids`
    gives them: BOS/EOS as the tokenizer's config adds them (Phi3VProcessor.encode_chunk)."""
    ids = tokenizer.encode_parts([p for p in parts if p != ""])
    if tokenizer.add_bos_token and tokenizer.bos_token is not None:
        ids = [tokenizer.bos_token_id] + ids
    if tokenizer.add_eos_token and tokenizer.eos_token is not None:
        ids = ids + [tokenizer.eos_token_id]
    return ids


def chat_ids(tokenizer, messages: list, num_img_tokens: list,
             add_generation_prompt: bool = True) -> list:
    """Token ids of a chat whose user messages may carry images ("images": a list, one entry per
    image; only their number is read here): image k, k = 1..N in order of appearance, takes
    num_img_tokens[k - 1] slots of id -k."""
    parts, _ = chat_parts(tokenizer, messages, add_generation_prompt)
    slots = [p for p in parts if type(p) is Slot]
    if len(slots) != len(num_img_tokens):
        raise InvalidInputError(f"the chat carries {len(slots)} image(s) but "
                                f"{len(num_img_tokens)} token counts were given")
    ids, chunk = [], []
    for part in parts + [None]:                         # None closes the last chunk
        if part is None or type(part) is Slot:
            ids += chunk_ids(tokenizer, chunk)
            chunk = []
            if part is not None:
                ids += [-int(part)] * num_img_tokens[part - 1]
        else:
            chunk.append(part)
    return ids


def chat_inputs(processor, messages: list, add_generation_prompt: bool = True) -> dict:
    """The model's inputs for a chat whose user messages may carry Pillow images ("images"):
    {"input_ids" int64 [1, T], "pixel_values" [N, K+1, 3, S, S] or None, "image_sizes" [N, 2] or
    None, "num_img_tokens" [n_1, ..., n_N]}, as Phi3VProcessor returns them."""
    messages = check_message_list(messages)
    images = [image for m in messages if isinstance(m, dict) for image in m.get("images") or ()]
    pixels = (processor.image_processor(images) if images else
              {"pixel_values": None, "image_sizes": None, "num_img_tokens": []})
    ids = chat_ids(processor.tokenizer, messages, pixels["num_img_tokens"], add_generation_prompt)
    return {"input_ids": np.array([ids], dtype=np.int64), **pixels}
