"""Training the tiny phi-3-vision (stage "vision_sft"): the batches of `tinyphi3 data images` (the
chat's ids, the loss on the answers only), the recipe's [vision] checks, and `tinyphi3 train`
end to end from a random tiny text checkpoint: the loss falls, the exported directory answers
through `generate` with the picture, resume equals the uninterrupted run, a frozen tower stays,
and a phi3_v checkpoint continues with its own processor."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_train import interrupt_after

import tinyphi3
from tinyphi3.cli import main
from tinyphi3.config import Phi3Config
from tinyphi3.inference.generate import generate
from tinyphi3.models.model import Phi3
from tinyphi3.models.vision.conversation import chat_ids, chat_inputs
from tinyphi3.models.vision.hd_transform import ImageProcessor
from tinyphi3.models.vision.image_file import open_image
from tinyphi3.models.vision.phi3v import Phi3V
from tinyphi3.models.vision.processor import Phi3VProcessor
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.train.conversations import ChatDataError
from tinyphi3.train.images import load_image_conversations
from tinyphi3.train.loop import Trainer, TrainingError
from tinyphi3.train.recipe import RecipeError, recipe_from_dict

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
CLIP = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3,
        "num_attention_heads": 2, "image_size": 28, "patch_size": 7, "layer_norm_eps": 1e-5,
        "hidden_act": "quick_gelu"}


def images(out, n):
    result = CliRunner().invoke(main, ["data", "images", "--n", str(n), "--size", "28",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A random tiny text checkpoint (checkpoints/mini's tokenizer, a decoder of width 32), 20
    pictures and 5 pictures (4 to train on, 1 held out) from `tinyphi3 data images`."""
    root = tmp_path_factory.mktemp("vision_train")
    text = root / "text"
    Phi3(Phi3Config(vocab_size=2112, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                    bos_token_id=1, eos_token_id=2, pad_token_id=0), seed=0).save_pretrained(text)
    for name in TOKENIZER_FILES:
        shutil.copy(MINI / name, text / name)
    images(root / "pictures", 20)
    images(root / "four", 5)
    return root


def recipe(workspace, out, data="pictures", vision=None, init_from=None, **train):
    settings = dict(stage="vision_sft", steps=8, batch_size=4, seq_len=128, lr=1e-2, min_lr=1e-3,
                    warmup_steps=2)
    settings.update(train)
    return recipe_from_dict({
        "model": {"init_from": str(init_from or workspace / "text"),
                  "tokenizer": str(workspace / "text")},
        "vision": {"clip": CLIP, "num_crops": 1} if vision is None else vision,
        "data": {"images": str(workspace / data)}, "train": settings,
        "log": {"eval_every": 4, "eval_batches": 1, "save_every": 4},
        "output": {"dir": str(out), "dtype": "float32"}})


def records(directory):
    return [json.loads(line) for line in (directory / "examples.jsonl").read_text().splitlines()]


# ---- batches ------------------------------------------------------------------------------------
def test_the_ids_are_the_chats_and_only_the_answer_is_labelled(workspace):
    """A training example is the chat prompt of `tinyphi3 chat --image` (the same ids), then the
    answer; the labels are the answer and its <|end|>, -100 on the slots and the question."""
    tok = load_tokenizer(workspace / "text")
    processor = ImageProcessor(num_crops=2, crop_size=28, patch_size=7)
    examples, too_long = load_image_conversations(workspace / "pictures", tok, processor, 256)
    assert too_long == 0 and len(examples) == 20
    for (ids, labels, picture), record in zip(examples, records(workspace / "pictures")):
        user, answer = record["messages"]
        question = user["content"].removeprefix("<|image_1|>\n")
        slots = processor([picture])["num_img_tokens"][0]
        prompt = chat_ids(tok, [{"role": "user", "content": question, "images": [picture]}],
                          [slots])
        np.testing.assert_array_equal(ids[:len(prompt)], prompt)
        assert (ids == -1).sum() == slots and slots in (13, 17)      # 1 x 1 or 1 x 2 crops
        assert (labels[:len(prompt)] == -100).all()
        kept = labels != -100
        np.testing.assert_array_equal(labels[kept], ids[kept])
        assert tok.decode(ids[kept].tolist()) == answer["content"] + "<|end|>"
    short, too_long = load_image_conversations(workspace / "pictures", tok, processor, 40)
    assert too_long == 20 - len(short) > 0 and max(len(ids) for ids, *_ in short) <= 40


@pytest.mark.parametrize("change, message", [
    (lambda r: r["messages"][0].update(content="no tag"), "must begin with '<|image_1|>"),
    (lambda r: r["messages"][1].update(content="<|image_1|>\nIt is."), "no other message"),
    (lambda r: r.update(image="images/missing.png"), r"missing\.png not found"),
    (lambda r: r.update(image=None), "'image' must be the picture's path"),
    (lambda r: r["messages"].pop(), "no assistant turn"),
])
def test_bad_records_are_named(workspace, tmp_path, change, message):
    shutil.copytree(workspace / "four" / "images", tmp_path / "images")
    record = records(workspace / "four")[0]
    change(record)
    (tmp_path / "examples.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ChatDataError, match=f"examples.jsonl:1: .*{message}"):
        load_image_conversations(tmp_path, load_tokenizer(workspace / "text"),
                                 ImageProcessor(1, 28, 7), 256)


# ---- recipes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (lambda d: d["vision"].update(crops=2), r"\[vision\] unknown key\(s\) crops"),
    (lambda d: d["vision"].update(freeze=["tower", "projector", "decoder"]), "not all"),
    (lambda d: d["vision"].update(freeze=["towers"]), "freeze must list some of tower"),
    (lambda d: d["vision"].update(num_crops=0), "num_crops must be a positive integer"),
    (lambda d: d["vision"]["clip"].pop("patch_size"), "clip: .*patch_size"),
    (lambda d: d["vision"]["clip"].update(patch_size=5), "not a multiple of patch_size"),
    (lambda d: d["vision"].update(layer_idx=7), "layer_idx 7 is not a hidden state"),
    (lambda d: d["model"].pop("init_from"), "ignore"),
    (lambda d: (d["model"].pop("init_from"), d["vision"].pop("clip")), "needs its tower"),
    (lambda d: d["vision"].pop("clip"), "layer_idx and positions describe a new tower"),
    (lambda d: (d["train"].update(stage="sft"), d.update(data={"conversations": "c"})),
     r"\[vision\] belongs to stages \"vision_sft\" and \"vision_tower\" \(and \"distill\" "
     r"with \[data\] images\), not 'sft'"),
    (lambda d: d.update(data={"conversations": "x"}), "needs exactly one key, images"),
    (lambda d: d["vision"].update(text_share=0.5), "text_share needs text"),
    (lambda d: d["vision"].update(text="c.jsonl", text_share=1.0), "between 0 and 1"),
    (lambda d: d["vision"].update(text=3), "text must be the path"),
])
def test_vision_recipes_are_checked(change, message):
    d = {"model": {"tokenizer": "t", "init_from": "t"},
         "vision": {"clip": dict(CLIP), "layer_idx": -2},
         "data": {"images": "d"}, "train": {"stage": "vision_sft"}}
    change(d)
    if message == "ignore":                          # a new model from a preset: fine
        assert recipe_from_dict(d).model_config(2048).vision.clip.hidden_size == 16
        return
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(d)


# ---- the stage end to end -----------------------------------------------------------------------
def test_tinyphi3_train_overfits_four_pictures_and_the_model_answers(workspace, tmp_path):
    """30 steps on the same 4 pictures: the loss falls tenfold; the exported phi3_v directory
    loads, its processor reads its preprocessor_config.json, and `generate` with each picture
    gives back (most of) the answers it learnt."""
    out = tmp_path / "run"
    text = (f'[model]\ninit_from = "{workspace / "text"}"\ntokenizer = "{workspace / "text"}"\n'
            f'[vision]\nclip = {json.dumps(CLIP).replace(":", " =")}\nnum_crops = 1\n'
            f'[data]\nimages = "{workspace / "four"}"\n'
            '[train]\nstage = "vision_sft"\nsteps = 30\nbatch_size = 4\nseq_len = 128\n'
            'lr = 2e-2\nmin_lr = 2e-3\nwarmup_steps = 2\n'
            f'[log]\neval_every = 10\neval_batches = 1\n[output]\ndir = "{out}"\n'
            'dtype = "float32"\n')
    (tmp_path / "vision.toml").write_text(text)
    result = CliRunner().invoke(main, ["train", str(tmp_path / "vision.toml")])
    assert result.exit_code == 0, result.output
    assert "4 pictures with questions to train on, 1 held out" in result.output
    losses = [loss for _, loss in json.loads((out / "history.json").read_text())["losses"]]
    assert np.mean(losses[-3:]) < 0.1 * np.mean(losses[:3])
    model = tinyphi3.Phi3.from_pretrained(out / "final")
    processor = Phi3VProcessor.from_pretrained(out / "final")
    assert isinstance(model, Phi3V) and processor.image_processor.num_crops == 1
    right = 0
    for record in records(workspace / "four")[:4]:
        question = record["messages"][0]["content"].removeprefix("<|image_1|>\n")
        x = chat_inputs(processor, [{"role": "user", "content": question,
                                     "images": [open_image(workspace / "four" / record["image"])]}])
        answer = processor.tokenizer.decode(list(generate(
            model, x["input_ids"][0], 20, pixel_values=x["pixel_values"],
            image_sizes=x["image_sizes"], tokenizer=processor.tokenizer)))
        right += answer == record["messages"][1]["content"]
    assert right >= 2, right


def test_ctrl_c_saves_and_resume_equals_the_uninterrupted_run(workspace, tmp_path, monkeypatch):
    full = Trainer(recipe(workspace, tmp_path / "full"))
    assert full.run(progress=False)
    interrupt_after(monkeypatch, 3)
    first = Trainer(recipe(workspace, tmp_path / "cut"))
    assert not first.run(progress=False) and first.state["step"] == 3
    monkeypatch.undo()
    assert (tmp_path / "cut" / "checkpoint" / "preprocessor_config.json").is_file()
    resumed = Trainer(recipe(workspace, tmp_path / "cut"), resume=True)
    assert isinstance(resumed.model, Phi3V) and resumed.state["step"] == 3
    assert resumed.run(progress=False)
    assert resumed.state["losses"] == full.state["losses"]
    assert resumed.state["val_losses"] == full.state["val_losses"]
    for (name, a), (_, b) in zip(resumed.model.named_parameters(), full.model.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_a_frozen_tower_stays_and_a_phi3_v_checkpoint_continues(workspace, tmp_path):
    vision = {"clip": CLIP, "num_crops": 2, "freeze": ["tower"]}
    trainer = Trainer(recipe(workspace, tmp_path / "a", vision=vision, steps=2, seed=5))
    start = Phi3V.from_decoder(Phi3.from_pretrained(workspace / "text"),
                               trainer.recipe.vision.vision_config(), seed=5).params
    assert trainer.run(progress=False)
    for name, p in trainer.model.named_parameters():
        same = np.array_equal(p.data, start[name])
        assert same == (".img_processor." in name), name
    final = trainer.export()
    again = Trainer(recipe(workspace, tmp_path / "b", vision={}, init_from=final, steps=1))
    assert again.objective.image_processor.num_crops == 2        # from its preprocessor config
    assert again.run(progress=False)
    with pytest.raises(RecipeError, match="init_from .* is a phi3_v model with its own"):
        Trainer(recipe(workspace, tmp_path / "c", init_from=final))
    with pytest.raises(RecipeError, match="is a text model: give the tower"):
        Trainer(recipe(workspace, tmp_path / "d", vision={"num_crops": 1}))


def conversations(path, n):
    """n text conversations in the SFT file format (a sum and its answer)."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"What is {i} plus 2?"},
                {"role": "assistant", "content": f"It is {i + 2}."}]}) + "\n")
    return path


def cut_and_resumed(make_recipe, monkeypatch, n):
    """Run make_recipe() until Ctrl-C arrives during step n (the run saves and stops), then give
    the Trainer that resumes it, not yet run."""
    interrupt_after(monkeypatch, n)
    assert not Trainer(make_recipe()).run(progress=False)
    monkeypatch.undo()
    return Trainer(make_recipe(), resume=True)


def run_noting_pictures(trainer, monkeypatch):
    """Run the trainer to its end; for each training step, whether its batch had pictures."""
    seen = []
    original = trainer.model.loss
    monkeypatch.setattr(trainer.model, "loss", lambda *args, **kw: (
        seen.append(kw.get("pixel_values") is not None), original(*args, **kw))[1])
    assert trainer.run(progress=False)
    monkeypatch.undo()
    return seen


def test_text_conversations_are_mixed_in_on_their_share_of_the_steps(workspace, tmp_path,
                                                                      monkeypatch):
    """[vision] text: every fourth step (share 0.25) is a batch of text conversations with no
    picture; the held-out text loss is logged beside the pictures' and drawn; resume after
    Ctrl-C equals the uninterrupted run, the text batches included."""
    text = conversations(tmp_path / "text.jsonl", 40)
    vision = {"clip": CLIP, "num_crops": 1, "text": str(text)}
    trainer = Trainer(recipe(workspace, tmp_path / "mix", vision=vision))
    assert [trainer.objective.side_step(n) for n in range(8)] == [False, False, False, True] * 2
    assert any("32 text conversations mixed in on 25% of the steps" in note
               for note in trainer.objective.notes)
    assert run_noting_pictures(trainer, monkeypatch) == [True, True, True, False] * 2
    stats = trainer.state["val_stats"]
    assert [step for step, _ in stats] == [4, 8] and all(s["text_loss"] > 0 for _, s in stats)
    assert stats[-1][1]["text_loss"] < stats[0][1]["text_loss"]    # the sums are being learnt
    trainer.export()
    resumed = cut_and_resumed(lambda: recipe(workspace, tmp_path / "cut", vision=vision),
                              monkeypatch, 5)
    assert resumed.objective.calls == 5 and resumed.run(progress=False)
    assert resumed.state["losses"] == trainer.state["losses"]
    assert resumed.state["val_stats"] == trainer.state["val_stats"]


# ---- image-text pre-training: captions ---------------------------------------------------------
def test_a_caption_is_the_pictures_slots_then_its_text_all_labelled(workspace, tmp_path):
    """A record of `tinyphi3 data images --captions` becomes the slots, the caption's tokens and
    EOS, as the processor tokenizes "<|image_1|>\\n" + caption; the labels are the text and EOS
    (never a slot), and the text decodes back to the caption."""
    out = tmp_path / "captions"
    result = CliRunner().invoke(main, ["data", "images", "--n", "10", "--size", "28",
                                       "--captions", "--out", str(out)])
    assert result.exit_code == 0 and "captions" in result.output, result.output
    tok = load_tokenizer(workspace / "text")
    processor = ImageProcessor(num_crops=2, crop_size=28, patch_size=7)
    examples, too_long = load_image_conversations(out, tok, processor, 256)
    assert too_long == 0 and len(examples) == 10
    proc = Phi3VProcessor(tok, processor)
    for (ids, labels, picture), record in zip(examples, records(out)):
        assert "messages" not in record
        expected = proc("<|image_1|>\n" + record["text"], images=[picture])["input_ids"][0]
        np.testing.assert_array_equal(ids[:len(expected)], expected)
        assert ids[-1] == tok.eos_token_id and len(ids) == len(expected) + 1
        assert (labels[ids < 0] == -100).all()
        kept = labels != -100
        np.testing.assert_array_equal(labels[kept], ids[kept])
        assert (ids[kept] >= 0).all() and kept.sum() == (ids >= 0).sum()
        assert tok.decode(ids[kept][:-1].tolist()) == "\n" + record["text"]


def test_a_directory_may_mix_captions_and_conversations(workspace, tmp_path):
    """Caption records and question records in one examples.jsonl: each is read by its kind."""
    mixed = tmp_path / "mixed"
    shutil.copytree(workspace / "pictures", mixed)
    lines = (mixed / "examples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({"image": first["image"], "text": "A picture."})
    (mixed / "examples.jsonl").write_text("\n".join(lines) + "\n")
    tok = load_tokenizer(workspace / "text")
    processor = ImageProcessor(num_crops=2, crop_size=28, patch_size=7)
    examples, _ = load_image_conversations(mixed, tok, processor, 256)
    caption_labels, chat_labels = examples[0][1], examples[1][1]
    assert tok.decode(caption_labels[caption_labels != -100].tolist()).startswith("\nA picture.")
    assert "<|end|>" in tok.decode(chat_labels[chat_labels != -100].tolist())
    lines[0] = json.dumps({"image": first["image"], "text": ""})
    (mixed / "examples.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ChatDataError, match="caption"):
        load_image_conversations(mixed, tok, processor, 256)


def test_dpo_on_a_phi3_v_model_trains_its_decoder_as_the_plain_decoder_s_dpo(workspace,
                                                                             tmp_path):
    """A DPO recipe started from a phi3_v checkpoint (the vision model's refusals, after its SFT):
    on text pairs the loss and every decoder gradient equal the DPO of the plain decoder holding
    the same weights (tested against torch in tests/test_post_training.py), the image side gets
    no gradient, and `tinyphi3 train` writes a vision model that still has its processor."""
    from tinyphi3.train.dpo import dpo_batch_loss
    vision = {"clip": CLIP, "num_crops": 2}
    trainer = Trainer(recipe(workspace, tmp_path / "sft", vision=vision, steps=1, seed=3))
    assert trainer.run(progress=False)
    start = trainer.export()
    tok = load_tokenizer(start)
    pairs = [((np.array(tok.encode(f"<|user|>\nIs {i} red?<|end|>\n<|assistant|>\n"
                                   f"Yes, {i} is red.<|end|>")),) * 2,
              (np.array(tok.encode(f"<|user|>\nIs {i} red?<|end|>\n<|assistant|>\n"
                                   f"No.<|end|>")),) * 2) for i in (3, 14)]
    pairs = [((c[0], np.where(np.arange(len(c[1])) < 8, -100, c[1])),
              (r[0], np.where(np.arange(len(r[1])) < 8, -100, r[1]))) for c, r in pairs]
    vision_model, reference = Phi3V.from_pretrained(start), Phi3V.from_pretrained(start)
    plain = Phi3(vision_model.decoder.config, vision_model.decoder.params)
    plain_reference = Phi3(vision_model.decoder.config, vision_model.decoder.params)
    for policy, ref in ((vision_model, reference), (plain, plain_reference)):
        loss, _ = dpo_batch_loss(policy, ref, pairs, beta=0.1, sft_weight=1.0)
        loss.backward()
        policy.result = float(loss.data)
    assert vision_model.result == pytest.approx(plain.result, abs=1e-6)
    for name, p in plain.named_parameters():
        np.testing.assert_allclose(dict(vision_model.decoder.named_parameters())[name].grad,
                                   p.grad, rtol=0, atol=1e-6, err_msg=name)
    decoder_names = set(plain.params)
    image_side = [p for name, p in vision_model.named_parameters() if name not in decoder_names]
    assert image_side and all(p.grad is None for p in image_side)

    preferences = tmp_path / "pairs.jsonl"
    with open(preferences, "w") as f:
        for i in range(24):
            f.write(json.dumps({"prompt": [{"role": "user", "content": f"Is {i} red?"}],
                                "chosen": f"Yes, {i} is red.", "rejected": "No."}) + "\n")
    dpo = recipe_from_dict({
        "model": {"init_from": str(start), "tokenizer": str(start)},
        "data": {"preferences": str(preferences)},
        "train": dict(stage="dpo", steps=2, batch_size=2, seq_len=64, lr=1e-3, warmup_steps=1),
        "log": {"eval_every": 2, "eval_batches": 1, "save_every": 2},
        "output": {"dir": str(tmp_path / "dpo"), "dtype": "float32"}})
    trainer = Trainer(dpo)
    assert trainer.run(progress=False)
    final = trainer.export()
    assert (final / "preprocessor_config.json").read_bytes() == \
        (start / "preprocessor_config.json").read_bytes()
    before, after = Phi3V.from_pretrained(start).params, Phi3V.from_pretrained(final).params
    for name in before:                          # the decoder moved, the image side did not
        assert np.array_equal(before[name], after[name]) == (name not in decoder_names), name


def test_distillation_on_a_phi3_v_model_trains_its_decoder_from_a_text_teacher(workspace,
                                                                               tmp_path):
    """Stage "distill" started from a phi3_v checkpoint, the text model it was made from as the
    teacher (how the vision model's text replies can be pulled back to mini's): the held-out KL
    falls, the decoder moves, the image side does not, and the model keeps its processor."""
    trainer = Trainer(recipe(workspace, tmp_path / "sft", vision={"clip": CLIP, "num_crops": 2},
                             steps=4, seed=5))
    assert trainer.run(progress=False)
    start = trainer.export()
    conversations = tmp_path / "chats.jsonl"
    with open(conversations, "w") as f:
        for i in range(40):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}) + "\n")
    distill = Trainer(recipe_from_dict({
        "model": {"init_from": str(start), "tokenizer": str(start)},
        "data": {"conversations": str(conversations)},
        "train": dict(stage="distill", teacher=str(workspace / "text"), steps=6, batch_size=4,
                      seq_len=64, lr=1e-2, warmup_steps=1),
        "log": {"eval_every": 6, "eval_batches": 2, "save_every": 6},
        "output": {"dir": str(tmp_path / "distill"), "dtype": "float32"}}))
    before_kl = distill.objective.validate(distill.model)["loss"]
    assert distill.run(progress=False)
    assert distill.state["val_stats"][-1][1]["loss"] < 0.7 * before_kl
    final = distill.export()
    assert (final / "preprocessor_config.json").read_bytes() == \
        (start / "preprocessor_config.json").read_bytes()
    before, after = Phi3V.from_pretrained(start).params, Phi3V.from_pretrained(final).params
    decoder_names = set(Phi3V.from_pretrained(start).decoder.params)
    for name in before:                          # the decoder moved, the image side did not
        assert np.array_equal(before[name], after[name]) == (name not in decoder_names), name


def test_a_distillation_with_pictures_trains_them_on_their_share_of_the_steps(workspace,
                                                                             tmp_path,
                                                                             monkeypatch):
    """[data] images in stage "distill": every second step (images_share 0.5) is a batch of
    pictures with the next-token loss on the answers, the others the teacher's KL on text; the
    held-out picture loss is logged; [vision] freeze keeps the tower while the projector and the
    decoder move; the processor is kept; resume after Ctrl-C equals the uninterrupted run; the
    recipe says what is wrong with a text student or a stray key."""
    trainer = Trainer(recipe(workspace, tmp_path / "sft", vision={"clip": CLIP, "num_crops": 2},
                             steps=2, seed=5))
    assert trainer.run(progress=False)
    start = trainer.export()
    chats = conversations(tmp_path / "chats.jsonl", 40)

    def distill_recipe(out, init_from=start, **extra):
        d = {"model": {"init_from": str(init_from), "tokenizer": str(start)},
             "vision": {"freeze": ["tower"]},
             "data": {"conversations": str(chats), "images": str(workspace / "pictures"),
                      "images_share": 0.5},
             "train": dict(stage="distill", teacher=str(workspace / "text"), steps=6,
                           batch_size=4, seq_len=128, lr=1e-2, warmup_steps=1),
             "log": {"eval_every": 3, "eval_batches": 1, "save_every": 3},
             "output": {"dir": str(out), "dtype": "float32"}}
        for section, values in extra.items():
            d[section] = values
        return recipe_from_dict(d)

    full = Trainer(distill_recipe(tmp_path / "full"))
    assert any("pictures with questions on 50% of the steps" in n for n in full.objective.notes)
    assert full.run(progress=False)
    picture_steps = [step for step, stats in full.state["stats"] if "picture_loss" in stats]
    assert picture_steps == [2, 4, 6]
    assert all(s["picture_loss"] > 0 for _, s in full.state["val_stats"])
    final = full.export()
    assert (final / "preprocessor_config.json").read_bytes() == \
        (start / "preprocessor_config.json").read_bytes()
    before, after = Phi3V.from_pretrained(start).params, Phi3V.from_pretrained(final).params
    moved = {name for name in before if not np.array_equal(before[name], after[name])}
    assert moved and not any("img_processor" in name for name in moved)
    assert any("img_projection" in name for name in moved)
    assert any(name.startswith("model.layers.") for name in moved)

    resumed = cut_and_resumed(lambda: distill_recipe(tmp_path / "cut"), monkeypatch, 4)
    assert resumed.run(progress=False)
    assert resumed.state["losses"] == full.state["losses"]

    with pytest.raises(RecipeError, match="a phi3_v student"):
        Trainer(distill_recipe(tmp_path / "text", init_from=workspace / "text"))
    text_run = distill_recipe(tmp_path / "text", init_from=workspace / "text").to_dict()
    del text_run["vision"], text_run["data"]["images"], text_run["data"]["images_share"]
    text_run["train"]["steps"] = 1
    assert Trainer(recipe_from_dict(text_run)).run(progress=False)   # a text checkpoint there
    with pytest.raises(TrainingError, match="is a text model, but .* trains on pictures"):
        Trainer(distill_recipe(tmp_path / "text", init_from=workspace / "text"), resume=True)
    with pytest.raises(RecipeError, match="takes num_crops and freeze only"):
        distill_recipe(tmp_path / "x", vision={"clip": CLIP})
    with pytest.raises(RecipeError, match="images_share needs images"):
        distill_recipe(tmp_path / "x", data={"conversations": str(chats), "images_share": 0.5})
    with pytest.raises(RecipeError, match="images_share must be a share"):
        distill_recipe(tmp_path / "x", data={"conversations": str(chats),
                                             "images": "p", "images_share": 1.5})
    with pytest.raises(RecipeError, match=r"\[vision\] belongs to stages"):
        distill_recipe(tmp_path / "x", data={"conversations": str(chats)})


def test_pretraining_text_is_replayed_on_its_share_of_the_steps(workspace, tmp_path, monkeypatch):
    """[data] replay in a vision recipe: every fourth step (replay_share 0.25) is a batch of
    pre-training windows (text, every token labelled), the other steps pictures; with [vision]
    text too, its share counts the steps that do not replay, so the two never collide; the
    held-out replay loss is logged; resume after Ctrl-C equals the uninterrupted run."""
    from tinyphi3.data.shards import write_shards
    from tinyphi3.tokenizers import load_tokenizer
    tok = load_tokenizer(workspace / "text")
    docs = [f"Rimi the fox lives in Honey Field and likes {i} red apples." for i in range(60)]
    write_shards(({"text": d} for d in docs), tok, tmp_path / "shards", val_fraction=0.2)

    def replay_recipe(out):
        r = recipe(workspace, out).to_dict()
        r["data"].update(replay=str(tmp_path / "shards"), replay_share=0.25)
        return recipe_from_dict(r)

    trainer = Trainer(replay_recipe(tmp_path / "replay"))
    assert [trainer.objective.replay_step(n) for n in range(8)] == [False, False, False, True] * 2
    both = recipe(workspace, tmp_path / "both", vision={
        "clip": CLIP, "num_crops": 1, "text": str(conversations(tmp_path / "t.jsonl", 40)),
        "text_share": 0.25}).to_dict()
    both["data"].update(replay=str(tmp_path / "shards"), replay_share=0.25)
    mixed = Trainer(recipe_from_dict(both)).objective
    kinds = ["replay" if mixed.replay_step(n) else "text" if mixed.side_step(mixed.text_index(n))
             else "picture" for n in range(16)]
    assert kinds.count("replay") == 4 and kinds.count("text") == 3     # a quarter of the rest
    assert any("pre-training text" in note for note in trainer.objective.notes)
    assert run_noting_pictures(trainer, monkeypatch) == [True, True, True, False] * 2
    assert trainer.objective.replay.position == 2            # two batches of windows read
    stats = trainer.state["val_stats"]
    assert all(s["replay_loss"] > 0 for _, s in stats)
    resumed = cut_and_resumed(lambda: replay_recipe(tmp_path / "cut"), monkeypatch, 5)
    assert resumed.run(progress=False)
    assert resumed.state["losses"] == trainer.state["losses"]
