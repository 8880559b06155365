"""Pictures with questions as the vision SFT stage sees them: read, tokenized, loss-masked, batched.

A record of `tinyphi3 data images` (DIR/examples.jsonl, the pictures under DIR/images/):

    {"image": "images/00000.png", "messages": [{"role": "user", "content": "<|image_1|>\\nWhat
     colour is the shape?"}, {"role": "assistant", "content": "It is blue."}], ...}

becomes the ids that `tinyphi3 chat --image` gives the model (tinyphi3.models.vision.conversation):
the tag leaves the text and the picture joins its message ({"role": "user", "content": "What
colour is the shape?", "images": [picture]}), the chat template renders the conversation, each
chunk between image slots is tokenized on its own, and the picture takes n slots of id -1, n its
token count at the tower's crop size and the run's num_crops:

    <|user|> \\n [-1] * n \\n What colour is the shape? <|end|> \\n <|assistant|> \\n It is blue.
    <|end|> \\n            (BOS before each chunk only if the tokenizer adds one; mini's does not)

Loss mask: phi-3-vision is trained on text tokens only (Phi-3 report §6; REFERENCE-vision §4.1:
image positions and the prompt set to -100). The labels are the ids of each assistant reply and
its `<|end|>` (tinyphi3.train.conversations.assistant_labels), -100 everywhere else: the image
slots, the question, the template's headers.

A caption record of `tinyphi3 data images --captions` ({"image": ..., "text": "A blue circle."})
is image-text pre-training (report §6) rather than a chat: the picture's slots, then the text and
EOS, all of the text labelled (`caption_ids`). One directory may hold both kinds.

A batch: ids and labels right-padded as SFT pads them, and the pictures in the order of the rows,
pixel_values [B, num_crops + 1, 3, S, S] and image_sizes [B, 2], made by the image processor when
the batch is drawn (so memory holds the decoded pictures, not their crops).
"""

import json
import shutil
from pathlib import Path

import numpy as np

from tinyphi3.errors import InvalidInputError
from tinyphi3.models.vision.conversation import chat_ids, chunk_ids
from tinyphi3.models.vision.hd_transform import ImageProcessor, num_image_tokens
from tinyphi3.models.vision.image_file import open_image
from tinyphi3.models.vision.phi3v import Phi3V
from tinyphi3.models.vision.processor import PREPROCESSOR_CONFIG, image_tag
from tinyphi3.train.conversations import (ChatDataError, ChatEncoder, assistant_labels,
                                          check_messages, pad_batch, read_records)
from tinyphi3.train.recipe import RecipeError

EXAMPLES = "examples.jsonl"
TAG = image_tag(1) + "\n"          # how a record's user message begins: its picture, then text


def with_image_side(model, recipe):
    """The model a vision_sft run starts from: a phi3_v init_from as it is, a text one (phi3) as
    the decoder of a new phi3_v model whose tower is [vision] clip (Phi3V.from_decoder, seeded
    with [train] seed)."""
    vision = recipe.vision
    if isinstance(model, Phi3V):
        if vision.clip is not None:
            raise RecipeError(f"{recipe.source}: [vision] clip describes a new tower, but "
                              f"init_from {recipe.init_from} is a phi3_v model with its own")
        return model
    if recipe.stage == "distill":
        raise RecipeError(f"{recipe.source}: [data] images: init_from {recipe.init_from} is a "
                          f"text model; a distillation with pictures needs a phi3_v student")
    if vision.clip is None:
        raise RecipeError(f"{recipe.source}: init_from {recipe.init_from} is a text model: give "
                          f"the tower to add in [vision] clip = {{...}}")
    try:
        return Phi3V.from_decoder(model, vision.vision_config(), recipe.train.seed,
                                  vision.positions)
    except InvalidInputError as e:
        raise RecipeError(f"{recipe.source}: init_from {recipe.init_from}: {e}") from None


def image_processor_for(model, recipe) -> ImageProcessor:
    """Crops at the tower's size and patch; num_crops from [vision], else from init_from's
    preprocessor_config.json, else 1 (the class default)."""
    crops = recipe.vision.num_crops
    file = Path(recipe.init_from or "") / PREPROCESSOR_CONFIG
    if crops is None and recipe.init_from and file.is_file():
        try:
            crops = ImageProcessor.from_dict(json.loads(file.read_text("utf-8"))).num_crops
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise RecipeError(f"{recipe.source}: cannot read {file} for num_crops ({e}); "
                              f"set [vision] num_crops") from None
    clip = model.config.vision.clip
    return ImageProcessor(num_crops=crops or 1, crop_size=clip.image_size,
                          patch_size=clip.patch_size)


def carry_preprocessor_config(source, directory) -> None:
    """Copy `source`'s preprocessor_config.json into `directory`, if it has one: a vision model
    written from another (merged, or trained by a text objective) keeps its crops."""
    path = Path(source) / PREPROCESSOR_CONFIG
    if path.is_file():
        shutil.copyfile(path, Path(directory) / PREPROCESSOR_CONFIG)


def write_preprocessor_config(directory, processor: ImageProcessor):
    """preprocessor_config.json, as Phi3VProcessor.from_pretrained (and `tinyphi3 chat`) reads
    it: the published file's keys, and crop_size and patch_size (ours: a tiny tower's)."""
    config = {"image_processor_type": "Phi3VImageProcessor", "processor_class": "Phi3VProcessor",
              "num_crops": processor.num_crops, "crop_size": processor.crop_size,
              "patch_size": processor.patch_size, "image_mean": list(processor.image_mean),
              "image_std": list(processor.image_std)}
    path = Path(directory) / PREPROCESSOR_CONFIG
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def picture_messages(messages, picture, where):
    """The messages with the picture attached to the user message whose content begins with
    `<|image_1|>\\n` (the tag taken out), as a chat passes pictures; exactly one such tag."""
    check_messages(messages, where)
    tagged = [i for i, m in enumerate(messages) if m["content"].startswith(TAG)]
    tags = sum(m["content"].count(image_tag(1)) for m in messages)
    if len(tagged) != 1 or tags != 1 or messages[tagged[0]]["role"] != "user":
        raise ChatDataError(f"{where}: one user message must begin with {TAG!r} (the picture's "
                            f"place), and no other message may hold the tag")
    if not any(m["role"] == "assistant" for m in messages):
        raise ChatDataError(f"{where}: the conversation has no assistant turn to learn from")
    out = [dict(m) for m in messages]
    out[tagged[0]].update(content=out[tagged[0]]["content"][len(TAG):], images=[picture])
    return out


def caption_ids(tokenizer, text, slots: int, where: str):
    """(ids, labels) of a caption record: the picture's slots, then its text and the end of the
    text (EOS), as in image-text pre-training (Phi-3 report §6): the labels are the text's ids
    and the EOS, -100 on the slots.

        ids     [-1] * slots  + ids("\n" + text) + [eos]
        labels  [-100] * slots + ids("\n" + text) + [eos]

    (a BOS first when the tokenizer adds one: the tokens of "<|image_1|>\n" + text as the
    processor makes them, one chunk on each side of the tag)."""
    if not isinstance(text, str) or not text.strip():
        raise ChatDataError(f"{where}: 'text' must be the picture's caption, a non-empty string")
    if tokenizer.eos_token_id is None:
        raise ChatDataError(f"{where}: the tokenizer has no end-of-text token to end a caption")
    head = chunk_ids(tokenizer, [])                  # the empty chunk before the tag: BOS or none
    words = chunk_ids(tokenizer, ["\n" + text])
    if not words or words[-1] != tokenizer.eos_token_id:
        words = words + [tokenizer.eos_token_id]
    ids = np.array(head + [-1] * slots + words, dtype=np.int64)
    labels = np.array([-100] * (len(head) + slots) + words, dtype=np.int64)
    return ids, labels


def load_image_conversations(directory, tokenizer, processor: ImageProcessor, seq_len: int):
    """[(ids, labels, picture)] of every record of DIR/examples.jsonl that fits seq_len (image
    slots included), and how many did not fit. Pictures are opened (decoded) here, once."""
    directory = Path(directory)
    encoder, examples, too_long = ChatEncoder(tokenizer), [], 0
    for number, record in read_records(directory / EXAMPLES):
        where = f"{directory / EXAMPLES}:{number}"
        if not isinstance(record.get("image"), str):
            raise ChatDataError(f"{where}: 'image' must be the picture's path in {directory}")
        try:
            picture = open_image(directory / record["image"])
        except InvalidInputError as e:
            raise ChatDataError(f"{where}: {e}") from None
        slots = num_image_tokens(picture.width, picture.height, processor.num_crops,
                                 processor.crop_size, processor.patch_size)
        if "text" in record:                                   # a caption: pre-training
            ids, labels = caption_ids(tokenizer, record["text"], slots, where)
        else:                                                  # a conversation: SFT
            messages = picture_messages(record.get("messages"), picture, where)
            ids = chat_ids(tokenizer, messages, [slots], add_generation_prompt=False)
            labels = None
        if len(ids) > seq_len:
            too_long += 1
            continue
        if labels is None:
            labels = assistant_labels(ids, encoder.assistant_id, encoder.end_id)
        examples.append((np.array(ids, dtype=np.int64), labels, picture))
    if not examples:
        raise ChatDataError(f"{directory / EXAMPLES}: no conversation fits in {seq_len} tokens")
    return examples, too_long


def image_batch(examples, processor: ImageProcessor, pad_id: int) -> dict:
    """model.loss's arguments for [(ids, labels, picture)]: input_ids and labels [B, T]
    (right-padded, pads labelled -100), pixel_values [B, num_crops + 1, 3, S, S], image_sizes
    [B, 2]; row k's slots take picture k."""
    ids, labels = pad_batch([(x, y) for x, y, _ in examples], pad_id)
    pixels = processor([picture for *_, picture in examples])
    return {"input_ids": ids, "labels": labels, "pixel_values": pixels["pixel_values"],
            "image_sizes": pixels["image_sizes"]}

