# %% [markdown]
# # Lesson 22: training a tiny phi-3-vision
#
# Lessons 20 and 21 built phi-3-vision's parts: the CLIP tower, the HD crops, the image tokens.
# This one trains one. §6.2 of the Phi-3 report: phi-3-vision is pre-trained on "a combination
# of interleaved image-text documents, image-text pairs from FLD-5B, synthetic data derived from
# OCR of PDF files, datasets for chart/table comprehension, and text-only data", with the loss
# on the text tokens only; then it is fine-tuned (SFT, then DPO) on questions about images,
# mixed with text-only conversations so that the language skills stay.
#
# In miniature (tinyphi3.data.images): pictures of shapes, counts, positions, written words and
# bar charts, drawn with Pillow; each comes with a caption (for pre-training) or a question and
# its answer (for SFT).
#
# 1. the pictures, their captions and questions, and the held-out rule;
# 2. what the loss reads: the labels of a caption and of a question;
# 3. stage 1, captions, with the decoder frozen; stage 2, questions, with text mixed in;
# 4. asking the trained model, with its picture and with a blank one;
# 5. the full-size runs and their commands.
#
# The decoder is `checkpoints/mini`'s; the tower is tiny (3 layers of width 16, pictures of 28
# pixels) so that the lesson runs in seconds. It learns a handful of pictures by heart, which is
# enough to see every mechanism work. Pictures go to `lesson_outputs/`.

# %%
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import _plot
from tinyphi3.data.images import (caption, contact_sheet, draw, generate_caption_examples,
                                  generate_image_examples, picture_spec, write_image_examples)
from tinyphi3.inference.generate import generate
from tinyphi3.models.model import Phi3
from tinyphi3.models.vision.conversation import chat_inputs
from tinyphi3.models.vision.hd_transform import ImageProcessor
from tinyphi3.models.vision.phi3v import Phi3V
from tinyphi3.models.vision.processor import Phi3VProcessor
from tinyphi3.pictures.charts import _save
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.train.images import load_image_conversations
from tinyphi3.train.loop import Trainer
from tinyphi3.train.recipe import recipe_from_dict

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"
WORK = Path(tempfile.mkdtemp(prefix="lesson22_"))
SIZE = 28                                      # picture side; the tower's crop is 28, patch 7

# %% [markdown]
# ## 1. The pictures
#
# Five kinds, one question each. `tinyphi3 data images` draws them with their questions;
# `--captions` draws them with a caption that says everything the picture shows instead. A
# written word is also spelled out in its caption ("V, e, p, a"), so that pre-training teaches
# the characters and not only whole names; a chart's caption gives every bar's height.

# %%
questions = list(generate_image_examples(5, "train", seed=0, size=56))
for _, q in questions:                       # each picture's caption, made from the same spec
    print(f"{q['kind']:9s} Q: {q['messages'][0]['content'].split(chr(10))[1]:42s} "
          f"A: {q['messages'][1]['content']}")
    print(f"{'':9s} caption: {caption(q['spec'])}")
print("picture:", _save(contact_sheet(questions, columns=5, zoom=3), "22_questions.png"))
print("picture:", _save(contact_sheet([(im, caption(r["spec"])) for im, r in questions],
                                      columns=5, zoom=3), "22_captions.png"))

# %% [markdown]
# The held-out pictures are new *compositions*: a test picture shows, say, a red star, a colour
# with a shape that no training picture pairs, or a creature's name no training picture writes.
# Each part is trained; the combination is not. So a score on test pictures measures whether
# the model reads the picture, not whether it remembers it.

# %%
test = list(generate_image_examples(5, "test", seed=0, size=56))
print("picture:", _save(contact_sheet(test, columns=5, zoom=3), "22_held_out.png"))
for _, record in test:
    print(f"{record['kind']:9s} held out: {json.dumps(record['spec'])[:90]}")

# %% [markdown]
# ## 2. What the loss reads
#
# The loss is on text tokens only. A caption record is image-text pre-training: the picture's
# slots (id -1, one per image token), then the caption and the end of the text, all of the
# caption labelled. A question record is a chat: the labels are the assistant's answer and its
# `<|end|>`; the slots, the question and the chat's headers are -100.

# %%
tok = load_tokenizer(MINI)
processor = ImageProcessor(num_crops=1, crop_size=SIZE, patch_size=7)

# eight one-shape pictures of eight different colours: the same question has eight answers, so
# only the picture can tell which
rng = np.random.default_rng(0)
specs, seen = [], set()
while len(specs) < 8:
    spec = picture_spec("colour", "train", rng)
    if spec["shapes"][0]["colour"] not in seen:
        seen.add(spec["shapes"][0]["colour"])
        specs.append(spec)
QUESTION = "What colour is the shape?"
write_image_examples([(draw(spec, SIZE), {"image": f"images/{i:05d}.png", "text": caption(spec)})
                      for i, spec in enumerate(specs)], WORK / "captions")
write_image_examples([(draw(spec, SIZE), {
    "image": f"images/{i:05d}.png",
    "messages": [{"role": "user", "content": "<|image_1|>\n" + QUESTION},
                 {"role": "assistant", "content": f"It is {spec['shapes'][0]['colour']}."}]})
    for i, spec in enumerate(specs)], WORK / "questions")
caption_examples, _ = load_image_conversations(WORK / "captions", tok, processor, 192)
question_examples, _ = load_image_conversations(WORK / "questions", tok, processor, 192)


def strip(name, example, title):
    ids, labels, _ = example
    # a token that decodes to nothing is the tokenizer's word-start piece: shown as "▁"
    shown = [("<img>" if i < 0 else tok.decode([int(i)]).replace("\n", "\\n") or "▁")
             for i in ids]
    # the slots are many: keep the first two and the last one, and say how many
    slots = np.flatnonzero(ids < 0)
    keep = [i for i in range(len(ids)) if ids[i] >= 0 or i in slots[:2] or i == slots[-1]]
    tokens = [shown[i] if i != slots[1] else f"... {len(slots) - 2} more ..." for i in keep]
    kinds = [int(labels[i] != -100) + 2 * int(ids[i] < 0) for i in keep]
    return _plot.token_strip(name, tokens, kinds, ["label -100", "labelled", "image slot"],
                             title)


print("picture:", strip("22_caption_labels.png", caption_examples[0],
                        "A caption: the image slots, then text that is all labelled"))
print("picture:", strip("22_question_labels.png", question_examples[0],
                        "A question: only the answer and <|end|> are labelled"))
ids, labels, _ = caption_examples[0]
print(f"caption example: {len(ids)} ids, {(ids < 0).sum()} image slots, "
      f"{(labels != -100).sum()} labelled")
assert (labels[ids < 0] == -100).all() and (labels[ids >= 0] != -100).all()

# %% [markdown]
# ## 3. Two stages
#
# Both stages are `tinyphi3 train` with stage "vision_sft"; what differs is the data and what
# is frozen.
#
# - **Stage 1, captions, decoder frozen.** The tower is new (random), and so is the projector
#   that turns its features into the decoder's embeddings. With the decoder fixed, the only way
#   to lower the caption loss is for the tower and projector to say, in the decoder's own
#   embedding space, what the picture shows. The decoder's text skills cannot change.
# - **Stage 2, questions, everything trained**, with text conversations on a quarter of the
#   steps (`[vision] text`, `text_share = 0.25`), so that the decoder learns to answer about the
#   picture without forgetting its chat.
#
# The decoder is `checkpoints/mini`'s, as in the real run; the tower is tiny.

# %%
CLIP = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3,
        "num_attention_heads": 2, "image_size": SIZE, "patch_size": 7, "layer_norm_eps": 1e-5,
        "hidden_act": "quick_gelu"}
with open(WORK / "text.jsonl", "w") as f:                 # text conversations to mix in
    for i in range(40):
        f.write(json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus 2?"},
                                         {"role": "assistant", "content": f"It is {i + 2}."}]})
                + "\n")


def stage(out, data, init_from, vision, steps, lr):
    return Trainer(recipe_from_dict({
        "model": {"init_from": str(init_from), "tokenizer": str(MINI)},
        "vision": vision, "data": {"images": str(data)},
        "train": {"stage": "vision_sft", "steps": steps, "batch_size": 8, "seq_len": 64,
                  "lr": lr, "min_lr": lr / 10, "warmup_steps": 2},
        "log": {"eval_every": 10, "eval_batches": 1, "save_every": 1000},
        "output": {"dir": str(out), "dtype": "float32"}}))


first = stage(WORK / "stage1", WORK / "captions", MINI,
              {"clip": CLIP, "num_crops": 1, "freeze": ["decoder"]}, steps=80, lr=1e-2)
VISION = "model.vision_embed_tokens."            # the tower, the projector, sub_GN and glb_GN
decoder_before = {n: p.data.copy() for n, p in first.model.named_parameters()
                  if not n.startswith(VISION)}
first.run(progress=False)
changed = sorted({n.removeprefix(VISION).split(".")[0] if n.startswith(VISION) else "decoder"
                  for n, p in first.model.named_parameters()
                  if n not in decoder_before or not np.array_equal(p.data, decoder_before[n])})
unchanged = all(np.array_equal(p.data, decoder_before[n])
                for n, p in first.model.named_parameters() if n in decoder_before)
print("stage 1 changed:", changed, "| decoder unchanged:", unchanged)
assert unchanged
stage1 = first.export()

second = stage(WORK / "stage2", WORK / "questions", stage1,
               {"num_crops": 1, "text": str(WORK / "text.jsonl"), "text_share": 0.25},
               steps=80, lr=1e-2)
second.run(progress=False)
final = second.export()

l1 = [loss for _, loss in first.state["losses"]]
l2 = [loss for _, loss in second.state["losses"]]
print(f"stage 1 (captions):  loss {np.mean(l1[:3]):.2f} -> {np.mean(l1[-3:]):.2f}")
print(f"stage 2 (questions): loss {np.mean(l2[:3]):.2f} -> {np.mean(l2[-3:]):.2f}")
print("picture:", _plot.line_plot(
    "22_loss.png", {"stage 1: captions, decoder frozen": (list(range(1, len(l1) + 1)), l1),
                    "stage 2: questions, text mixed in": (list(range(len(l1) + 1,
                                                                    len(l1) + len(l2) + 1)),
                                                          l2)},
    "Two stages of the tiny phi-3-vision", "step", "training loss", log_y=True))

# %% [markdown]
# Stage 1's loss falls although the decoder never changes: the tower and the projector learn to
# hand the decoder embeddings it can turn into the caption. In stage 2 every fourth step is a
# batch of text conversations (the spikes: sums the model has not learnt yet), the other steps
# the pictures' questions.

# %% [markdown]
# ### Or: the tower alone first, on what the picture shows
#
# Stage 1 teaches the tower only through the frozen decoder's caption loss: every step pays
# for a pass through the decoder, and a caption says a picture's facts in words the tower can
# only reach through the projector. The published tower was trained before it met the
# language model (CLIP's own pre-training). Stage "vision_tower" (tinyphi3.train.tower) does
# that in miniature: every record of `tinyphi3 data images` keeps the spec it was drawn from,
# so each picture comes with its facts as class labels (its kind, the shape's colour and shape,
# the count, which shape is left of or above the other, each letter of the word, each bar's
# colour and height, the tallest and shortest bars). A small head per fact pools the tower's
# features with a learned query (attention pooling) and classifies; the loss is the mean
# cross-entropy of the heads. Only the tower and the heads train; the heads stay behind, the
# tower goes on to the picture SFT.
#
# A classifier learns whatever predicts its labels, and the held-out rule makes some things
# predictable that should not be: no training star is red, so a shape head may learn "red,
# therefore not a star"; no training number ending in 1 starts with an odd digit. Three
# training-only options draw pictures in which those correlations fail, without ever showing
# a held-out composition: random strings of digits and letters to read (`--random-strings`),
# count pictures that mix shapes (`--mixed-counts`), count pictures of shapes the world does
# not have, a cross or a hexagon, in every number from 1 to 5 (`--extra-shapes`: the world's
# stars never come in fours), and shapes in colours of no name, at least as far from every
# named colour as those are from each other (`--unnamed-colours`, captions only, as no
# question can ask their colour). The tower here learns from such pictures.
#
# A pooled head gives one answer per picture, and may give it from what goes with it in
# training: 5 triangles, never drawn, look most like the 4 it has seen. Maps (`[vision] maps =
# true`) teach the tower per patch too: a density of shapes, a small Gaussian per shape that
# sums to 1, so that the whole map sums to the count; and at the patch holding each shape's
# centre, the shape's outline and colour. A count becomes adding up places, and a shape is named
# where it is, whatever else the picture holds. The picture below shows the density targets on
# the grid of a 56-pixel tower (patches of 4: 14 x 14).

# %%
from tinyphi3.train.tower import (TARGETS, evaluate_heads, map_targets,  # noqa: E402
                                  picture_targets)

rng = np.random.default_rng(3)
spec_ = picture_spec("count", "train", rng, mixed_counts=1.0)        # shapes of several kinds
maps = map_targets(spec_, grid=14)                 # the targets on a 56-pixel tower's 14 x 14
centres = (maps["centre_shape"] >= 0).astype(float)
print(caption(spec_), "| the density sums to", round(float(maps["density"].sum()), 3))
print("picture:", _plot.attention_over_patches(
    "22_density_maps.png", np.asarray(draw(spec_, 56)),
    [("density: a Gaussian per shape", maps["density"], None),
     ("centre patches: outline and colour", centres, None)], 14,
    "What the maps teach, per patch", note=caption(spec_),
    footers=[f"sums to {maps['density'].sum():.2f}, the count",
             f"{int(centres.sum())} patches labelled"]))

facts = list(generate_caption_examples(400, seed=5, size=SIZE, random_strings=0.5,
                                       mixed_counts=0.5, unnamed_colours=0.3, extra_shapes=0.5))
print("picture:", _save(contact_sheet([(im, r["text"]) for im, r in facts[:20:2]], columns=5,
                                      zoom=3), "22_tower_pictures.png"))
write_image_examples(facts, WORK / "facts")
spec = json.loads((WORK / "facts" / "examples.jsonl").read_text().splitlines()[4])["spec"]
print("a chart's spec:", spec)
print("its targets:", {t: y for t, y in picture_targets(spec).items() if y >= 0})
print(f"{len(TARGETS)} targets in all")

tower = Trainer(recipe_from_dict({
    "model": {"init_from": str(MINI), "tokenizer": str(MINI)},
    "vision": {"clip": CLIP, "num_crops": 1, "maps": True},
    "data": {"images": str(WORK / "facts")},
    "train": {"stage": "vision_tower", "steps": 150, "batch_size": 32, "lr": 3e-3,
              "min_lr": 3e-4, "warmup_steps": 10},
    "log": {"eval_every": 0, "save_every": 1000},
    "output": {"dir": str(WORK / "tower"), "dtype": "float32"}}))
pairs, heads = tower.objective.batches.train[:160], tower.objective.heads
_, before = evaluate_heads(tower.model, heads, pairs, tower.objective.image_processor)
tower.run(progress=False)
_, after = evaluate_heads(tower.model, heads, pairs, tower.objective.image_processor)
for t in ("kind", "colour", "shape", "count", "axis", "char0", "bar0_height", "tallest",
          "map_count", "centre_colour", "centre_shape"):
    print(f"{t:12s} right before: {before[t]:5.0%}   after 150 steps: {after[t]:5.0%}")
lt = [loss for _, loss in tower.state["losses"]]
print("picture:", _plot.line_plot(
    "22_tower_loss.png", {"the heads' mean cross-entropy": (list(range(1, len(lt) + 1)), lt)},
    "The tower alone, on the pictures' facts", "step", "training loss"))
assert after["kind"] > before["kind"]

# %% [markdown]
# Each step here costs the tower's pass alone, not the decoder's; the full-size run
# (`configs/mini-vision-tower.toml`, 60,000 pictures) shows the tower 128,000 pictures in under
# an hour. The kind and the colour come first; heights, letters and the tallest bar need many
# more pictures than this lesson has: `docs/vision.md` ("An eighth trial") has the held-out
# accuracies of the full run and what the picture SFT made of them.

# %% [markdown]
# ## 4. Asking it
#
# The exported directory is a phi-3-vision checkpoint in the published layout: `tinyphi3 chat
# --ckpt DIR --image picture.png` talks to it. Here each training picture is asked the question,
# once with the picture and once with a blank picture of the background's colour. All eight
# share one question, so the words alone cannot give the answer: a model that reads the
# picture answers with it, and at most one of eight without it.

# %%
model = Phi3.from_pretrained(final)                          # a phi3_v directory: Phi3V
proc = Phi3VProcessor.from_pretrained(final)
assert isinstance(model, Phi3V)
records = [json.loads(line) for line in (WORK / "questions" / "examples.jsonl").read_text()
           .splitlines()]
blank = Image.new("RGB", (SIZE, SIZE), (90, 200, 210))
right = {"picture": 0, "blank": 0}
for record in records:
    question = record["messages"][0]["content"].split("\n", 1)[1]
    truth = record["messages"][1]["content"]
    picture = Image.open(WORK / "questions" / record["image"])
    for name, image in (("picture", picture), ("blank", blank)):
        x = chat_inputs(proc, [{"role": "user", "content": question, "images": [image]}])
        reply = proc.tokenizer.decode(list(generate(
            model, x["input_ids"][0], 16, pixel_values=x["pixel_values"],
            image_sizes=x["image_sizes"], tokenizer=proc.tokenizer)))
        right[name] += reply == truth
        if name == "picture":
            print(f"{question:42s} -> {reply!r:28s} (answer: {truth!r})")
print(f"right with the picture: {right['picture']} of {len(records)}; "
      f"with a blank picture: {right['blank']} of {len(records)}")
assert right["picture"] > right["blank"]

# %% [markdown]
# Eight pictures learnt by heart prove only that the mechanics work. The held-out measure is
# `tinyphi3 eval --ckpt DIR --task vision`: 200 held-out pictures per kind, in held-out question
# wordings, each asked again with the blank picture as the control.
#
# ## 5. The full-size runs
#
# `docs/vision.md` has each trial's commands, wall times and held-out scores. The data:
#
#     tinyphi3 data images --n 20000 --split train --seed 0 --out data/images-train
#     tinyphi3 data images --n 8000 --captions --seed 1 --out data/images-captions
#
# and each stage is `tinyphi3 train RECIPE.toml`, starting from `checkpoints/mini`'s decoder
# with a new tower (crops of 56 pixels, patches of 4). The seventh trial pre-trained a tower of
# width 128 and 5 layers on captions with the decoder frozen
# (`configs/mini-vision-captions-wide.toml`), then trained on questions with a quarter captions,
# made-up words to read and textbook text replayed (`configs/mini-vision-mix-replay-sft.toml`),
# then distilled the decoder from mini (`configs/mini-vision-mix-distill.toml`): it reads well
# but answers charts at chance. The eighth and ninth trials trained a new tower alone by the
# stage above (`configs/mini-vision-tower.toml`, `configs/mini-vision-tower9.toml`): charts 87.5
# held out, but reading far worse. The shipped `checkpoints/vision` is the twenty-sixth trial: the
# seventh's model, its tower taught every fact of the pictures but the letters of words by the
# stage above (`labels = "unread"`, `configs/mini-vision-tower11.toml` carried on by
# `configs/mini-vision-tower12.toml` and `-tower13.toml`), then its projector and decoder taught
# to read that tower (`configs/mini-vision-tower13-sft.toml`, carried on by `-tower14-sft.toml`),
# then more positions (`configs/mini-vision-tower15-sft.toml`) and distilled again with a
# quarter of the steps on those pictures (`configs/mini-vision-tower18-distill.toml`, carried on
# by `-tower21-distill.toml`), its tower taught again with counts of shapes the world does not
# have (`configs/mini-vision-tower22.toml`) and the decoder distilled with pictures to read it
# (`-tower22-distill.toml`, `-tower24-distill.toml`, `-tower26-distill.toml`): charts 86.0,
# count 75.0, reading 70.5, position 60.0 held out.
# The shipped model's card
# says what it can do and what it cannot yet: ask it yourself,
#
#     tinyphi3 data images --n 10 --split test --out pictures
#     tinyphi3 chat --ckpt checkpoints/vision --image pictures/images/00000.png

# %%
shutil.rmtree(WORK)
