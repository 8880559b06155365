"""Stage "vision_tower" (tinyphi3.train.tower): the targets read from picture specs, the heads
and their loss against an independent torch version (values and every gradient), the recipe's
checks, and `Trainer` end to end: the decoder and projector stay, the tower learns, the heads
travel with the checkpoint and a resumed run equals the uninterrupted one."""

import numpy as np
import pytest
import torch
from test_train import interrupt_after
from test_vision_train import CLIP, recipe, workspace  # noqa: F401  (the module's fixture)

from tinyphi3.data import world
from tinyphi3.data.images import (QUESTION_KINDS, SHAPES, has_extra_shapes, is_mixed, is_unnamed,
                                  picture_spec)
from tinyphi3.models.model import Phi3
from tinyphi3.models.vision.phi3v import Phi3V
from tinyphi3.nn.autograd import enable_grad
from tinyphi3.train.loop import Trainer
from tinyphi3.train.recipe import RecipeError
from tinyphi3.train.tower import (CHARACTERS, END, GROUPS, MAP_TARGETS, TARGETS, head_logits,
                                  heads_loss, init_heads, map_targets, picture_targets,
                                  targets_of_batch)


def tower_recipe(workspace, out, **train):  # noqa: F811
    settings = dict(stage="vision_tower", steps=6, batch_size=4)
    settings.update(train)
    return recipe(workspace, out, **settings)


# ---- targets ------------------------------------------------------------------------------------

def test_the_targets_say_what_the_spec_shows():
    index = world.COLOURS.index
    y = picture_targets({"kind": "position", "relation": "right of", "shapes": [
        {"shape": "star", "colour": "red", "x": 0.8, "y": 0.5, "r": 0.14},
        {"shape": "circle", "colour": "blue", "x": 0.2, "y": 0.45, "r": 0.14}]})
    assert (y["colour"], y["shape"]) == (index("blue"), SHAPES.index("circle"))   # the left one
    assert (y["colour2"], y["shape2"], y["axis"]) == (index("red"), SHAPES.index("star"), 0)
    assert y["count"] == y["char0"] == y["tallest"] == -1
    y = picture_targets({"kind": "position", "relation": "below", "shapes": [
        {"shape": "star", "colour": "red", "x": 0.5, "y": 0.8, "r": 0.14},
        {"shape": "circle", "colour": "blue", "x": 0.45, "y": 0.2, "r": 0.14}]})
    assert (y["colour"], y["colour2"], y["axis"]) == (index("blue"), index("red"), 1)  # upper
    y = picture_targets({"kind": "reading", "word": "Veska"})
    assert [y[f"char{i}"] for i in range(6)] == [CHARACTERS.index(c) for c in "Veska"] + [END]
    y = picture_targets({"kind": "chart", "colours": ["green", "pink", "black"],
                         "heights": [4, 9, 2]})
    assert (y["tallest"], y["shortest"], y["bars"]) == (index("pink"), index("black"), 0)
    assert (y["bar1_colour"], y["bar1_height"], y["bar3_colour"]) == (index("pink"), 7, -1)
    y = picture_targets({"kind": "count", "shapes": [
        {"shape": "triangle", "colour": "grey", "x": 0.2, "y": 0.2, "r": 0.09}] * 4})
    assert (y["count"], y["shape"], y["kind"]) == (3, 2, QUESTION_KINDS.index("count"))
    y = picture_targets({"kind": "count", "shapes": [       # mixed: counted, no one colour/shape
        {"shape": "triangle", "colour": "grey", "x": 0.2, "y": 0.2, "r": 0.09},
        {"shape": "star", "colour": "red", "x": 0.5, "y": 0.2, "r": 0.09},
        {"shape": "triangle", "colour": "blue", "x": 0.8, "y": 0.2, "r": 0.09}]})
    assert (y["count"], y["colour"], y["shape"]) == (2, -1, -1)
    y = picture_targets({"kind": "position", "relation": "left of", "shapes": [  # no name
        {"shape": "star", "colour": "#5a2e9c", "x": 0.2, "y": 0.5, "r": 0.14},
        {"shape": "circle", "colour": "blue", "x": 0.8, "y": 0.45, "r": 0.14}]})
    assert (y["colour"], y["shape"], y["colour2"]) == (-1, SHAPES.index("star"), index("blue"))
    y = picture_targets({"kind": "reading", "word": "k7Q"})
    assert [y[f"char{i}"] for i in range(4)] == [CHARACTERS.index(c) for c in "k7Q"] + [END]


def test_every_drawn_spec_has_targets_in_range_and_its_kind_s_group():
    rng = np.random.default_rng(0)
    for kind in QUESTION_KINDS:
        for split in ("train", "test"):
            shares = (dict(random_strings=0.5, mixed_counts=0.5, unnamed_colours=0.5,
                           extra_shapes=0.3)
                      if split == "train" else {})
            for _ in range(30):
                spec = picture_spec(kind, split, rng, **shares)
                y = picture_targets(spec)
                assert all(-1 <= y[t] < k for t, k in TARGETS.items())
                present = {t for t, v in y.items() if v >= 0}
                optional = {"bar3_colour", "bar3_height"}        # 3 bars
                if is_unnamed(spec):
                    optional |= {"colour", "colour2"}
                if is_mixed(spec) or has_extra_shapes(spec):
                    optional |= {"colour", "shape"}
                if has_extra_shapes(spec):                       # counted, no shape class
                    assert y["shape"] == -1 and y["count"] == len(spec["shapes"]) - 1
                assert set(GROUPS[kind]) - optional <= present
                if is_unnamed(spec) or is_mixed(spec):           # no colour class to learn
                    assert y["colour"] == y["colour2"] == -1


def test_the_maps_put_each_shape_where_it_is_and_its_density_sums_to_the_count():
    index = world.COLOURS.index
    spec = {"kind": "position", "relation": "left of", "shapes": [
        {"shape": "star", "colour": "#5a2e9c", "x": 0.2, "y": 0.9, "r": 0.14},
        {"shape": "circle", "colour": "blue", "x": 0.7, "y": 0.3, "r": 0.14}]}
    m = map_targets(spec, grid=4)                     # x 0.2 -> column 0, y 0.9 -> row 3
    assert np.flatnonzero(m["centre_shape"] >= 0).tolist() == [1 * 4 + 2, 3 * 4 + 0]
    assert m["centre_shape"][12] == SHAPES.index("star") and m["centre_colour"][12] == -1
    assert (m["centre_shape"][6], m["centre_colour"][6]) == (SHAPES.index("circle"), index("blue"))
    np.testing.assert_allclose(m["density"].sum(), 2.0, rtol=1e-6)
    assert m["density"].argmax() in (6, 12) and m["density"][15] < m["density"][12] / 10
    rng = np.random.default_rng(4)
    for kind in QUESTION_KINDS:
        for _ in range(20):
            spec = picture_spec(kind, "train", rng, mixed_counts=0.5, extra_shapes=0.5)
            m = map_targets(spec, grid=14)
            shapes = spec.get("shapes", [])            # reading and chart pictures show none
            np.testing.assert_allclose(m["density"].sum(), len(shapes), atol=1e-4)
            assert (m["centre_shape"] >= 0).sum() == len(shapes)        # one patch each
            assert all(-1 <= m[t].min() and m[t].max() < k for t, k in MAP_TARGETS.items())
            if has_extra_shapes(spec):
                assert (m["centre_shape"] == len(SHAPES)).sum() >= 1
            labelled = map_targets(spec, 14, "decorrelated")["centre_shape"]
            assert ((labelled >= 0) == ((m["centre_shape"] >= 0) & (m["centre_colour"] < 0))).all()
    batch = targets_of_batch([spec, spec], grid=14)
    assert batch["density"].shape == (2, 196) and batch["centre_colour"].shape == (2, 196)
    assert "density" not in targets_of_batch([spec])


# ---- the heads against torch --------------------------------------------------------------------

def torch_heads_loss(features, heads, labels):
    """The module docstring's formulas, written with torch's own layers."""
    C = features.shape[-1]
    h = torch.nn.functional.layer_norm(features, (C,), heads["norm.weight"], heads["norm.bias"],
                                       1e-5)
    weights = torch.softmax(h @ heads["queries"] / C ** 0.5, dim=1)        # [N, P, T]
    pooled = torch.einsum("npt,npc->ntc", weights, h)
    losses = []
    for i, t in enumerate(TARGETS):
        logits = pooled[:, i] @ heads[f"{t}.weight"].T + heads[f"{t}.bias"]
        y = torch.tensor(labels[t])
        if (y >= 0).any():
            losses.append(torch.nn.functional.cross_entropy(logits, y, ignore_index=-1))
    return sum(losses) / len(losses)


def torch_maps_losses(features, heads, labels):
    """The maps' losses of the module docstring, with torch's layers."""
    C = features.shape[-1]
    h = torch.nn.functional.layer_norm(features, (C,), heads["norm.weight"], heads["norm.bias"],
                                       1e-5)
    density = (h @ heads["density.weight"].T + heads["density.bias"])[..., 0]
    d = torch.tensor(labels["density"], dtype=density.dtype)
    losses = [10 * ((density - d) ** 2).sum(dim=1).mean()]
    for t in MAP_TARGETS:
        logits = h @ heads[f"{t}.weight"].T + heads[f"{t}.bias"]
        losses.append(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), torch.tensor(labels[t].reshape(-1)),
            ignore_index=-1))
    return losses


@pytest.mark.parametrize("maps", [False, True])
def test_the_heads_loss_and_every_gradient_equal_torch(maps):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((5, 9, 8))                  # 9 patches: a 3 x 3 grid
    heads = init_heads(8, seed=2, maps=maps)
    for p in heads.values():
        p.data = (p.data + rng.standard_normal(p.data.shape) * 0.3).astype(np.float64)
    specs = [picture_spec(kind, "train", rng) for kind in QUESTION_KINDS]
    labels = targets_of_batch(specs, grid=3 if maps else None)
    assert set(labels) == set(TARGETS) | ({"density", *MAP_TARGETS} if maps else set())
    from tinyphi3.nn.autograd import Parameter
    x = Parameter(features.copy())
    with enable_grad():
        loss, _ = heads_loss(head_logits(x, heads), labels)
        loss.backward()
    tx = torch.tensor(features, requires_grad=True)
    theads = {n: torch.tensor(p.data, requires_grad=True) for n, p in heads.items()}
    expected = torch_heads_loss(tx, theads, labels)
    if maps:                            # the mean over targets: the pooled ones and the maps
        pooled = sum(1 for t in TARGETS if (labels[t] >= 0).any())
        expected = (expected * pooled + sum(torch_maps_losses(tx, theads, labels))) / (pooled + 3)
    expected.backward()
    np.testing.assert_allclose(float(loss.data), expected.item(), rtol=1e-10)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-8, atol=1e-12)
    for n, p in heads.items():
        want = theads[n].grad                  # None: a target no picture of the batch has
        want = np.zeros_like(p.data) if want is None else want.numpy()
        got = np.zeros_like(p.data) if p.grad is None else p.grad
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12, err_msg=n)


# ---- the stage ----------------------------------------------------------------------------------

@pytest.mark.parametrize("vision, message", [
    ({"clip": CLIP, "text": "x.jsonl"}, "trains the tower alone"),
    ({"clip": CLIP, "freeze": ["tower"]}, "trains the tower alone"),
    ({"clip": CLIP, "labels": "some"}, "labels must be one of all, decorrelated"),
    ({"clip": CLIP, "maps": "yes"}, "maps must be true or false"),
])
def test_tower_recipes_are_checked(workspace, tmp_path, vision, message):  # noqa: F811
    with pytest.raises(RecipeError, match=message):
        tower_recipe(workspace, tmp_path / "x", vision=vision)
    with pytest.raises(RecipeError, match="\"vision_tower\" only"):
        recipe(workspace, tmp_path / "y", vision={"clip": CLIP, "labels": "decorrelated"})
    with pytest.raises(RecipeError, match="\"vision_tower\" only"):
        recipe(workspace, tmp_path / "z", vision={"clip": CLIP, "maps": True})


def test_decorrelated_labels_leave_out_what_the_held_out_rule_makes_predictable():
    def labelled(spec):
        return {t for t, y in picture_targets(spec, "decorrelated").items() if y >= 0}

    def shape(colour, x=0.5):
        return {"shape": "star", "colour": colour, "x": x, "y": 0.5, "r": 0.14}

    assert labelled({"kind": "colour", "shapes": [shape("blue")]}) == {"kind", "colour"}
    assert labelled({"kind": "colour", "shapes": [shape("#5a2e9c")]}) == {"kind", "shape"}
    both = labelled({"kind": "position", "relation": "left of",
                     "shapes": [shape("#5a2e9c", 0.2), shape("blue", 0.8)]})
    assert both == {"kind", "shape", "colour2", "axis"}
    for word in ("Veska", world.ENTITIES[3].name, "42", "Tabi"):     # a question's words
        assert labelled({"kind": "reading", "word": word}) == {"kind"}, word
    for word in ("k7Qa", "7", "042", "veska", "123"):                  # random strings
        assert f"char{len(word) - 1}" in labelled({"kind": "reading", "word": word}), word
    chart = {"kind": "chart", "colours": ["green", "pink", "black"], "heights": [4, 9, 2]}
    assert picture_targets(chart, "decorrelated") == picture_targets(chart)
    count = {"kind": "count", "shapes": [shape("#5a2e9c")] * 2}
    assert labelled(count) == {"kind", "count", "shape"}
    with pytest.raises(ValueError, match="labels must be one of"):
        picture_targets(chart, "none")


def test_unread_labels_leave_out_the_characters_and_nothing_else():
    specs = [{"kind": "reading", "word": w} for w in ("Veska", "k7Qa", "42")]
    specs += [{"kind": "chart", "colours": ["green", "pink", "black"], "heights": [4, 9, 2]},
              {"kind": "count", "shapes": [{"shape": "star", "colour": "blue", "x": 0.5,
                                            "y": 0.5, "r": 0.09}] * 3}]
    for spec in specs:
        every, unread = picture_targets(spec), picture_targets(spec, "unread")
        changed = {t for t in every if every[t] != unread[t]}
        if spec["kind"] == "reading":
            assert changed == {t for t in every if t.startswith("char") and every[t] >= 0}
            assert changed and all(unread[t] == -1 for t in changed)
        else:
            assert not changed


def test_outlines_labels_are_unread_ones_with_shapes_only_where_colours_have_no_name():
    rng = np.random.default_rng(6)
    for kind in QUESTION_KINDS:
        for _ in range(30):
            spec = picture_spec(kind, "train", rng, unnamed_colours=0.5, random_strings=0.5)
            unread, outlines = picture_targets(spec, "unread"), picture_targets(spec, "outlines")
            for t in unread:
                named = t in ("shape", "shape2") and unread["colour" + t[5:]] >= 0
                assert outlines[t] == (-1 if named else unread[t]), (spec, t)
            for suffix in ("", "2"):                    # as "decorrelated" does for shapes
                t = "shape" + suffix
                assert outlines[t] == picture_targets(spec, "decorrelated")[t]
            m, o = map_targets(spec, 14, "unread"), map_targets(spec, 14, "outlines")
            keep = m["centre_colour"] < 0
            assert (o["centre_shape"] == np.where(keep, m["centre_shape"], -1)).all()


def test_a_decorrelated_tower_run_trains_on_those_labels_and_measures_all(
        workspace, tmp_path, monkeypatch):  # noqa: F811
    import tinyphi3.train.tower as tower
    seen = []
    real = tower.targets_of_batch
    monkeypatch.setattr(tower, "targets_of_batch",
                        lambda specs, labels="all", grid=None: seen.append(labels)
                        or real(specs, labels, grid))
    trainer = Trainer(tower_recipe(workspace, tmp_path / "d", steps=2, seed=3,
                                   vision={"clip": CLIP, "num_crops": 1,
                                           "labels": "decorrelated"}))
    assert trainer.run(progress=False)
    assert seen[:2] == ["decorrelated", "decorrelated"]            # the two training steps
    assert "all" in seen[2:]                                       # the measure labels all


def test_a_tower_run_with_maps_trains_and_measures_them(workspace, tmp_path):  # noqa: F811
    from tinyphi3.train.tower import heads_on_pictures
    trainer = Trainer(tower_recipe(workspace, tmp_path / "m", steps=2, seed=3,
                                   vision={"clip": CLIP, "num_crops": 1, "maps": True}))
    before = {n: p.data.copy() for n, p in trainer.objective.named_parameters()}
    assert trainer.run(progress=False)
    for t in ("density", *MAP_TARGETS):
        assert not np.array_equal(dict(trainer.objective.named_parameters())[f"heads/{t}.weight"]
                                  .data, before[f"heads/{t}.weight"]), t
    assert any("accuracy_map_count" in stats for _, stats in trainer.state["val_stats"])
    accuracy = heads_on_pictures(tmp_path / "m", n=4)
    assert {"map_count", *MAP_TARGETS} <= set(accuracy) and 0 <= accuracy["map_count"] <= 1


def test_only_the_tower_learns_and_resume_equals_the_uninterrupted_run(
        workspace, tmp_path, monkeypatch):  # noqa: F811
    full = Trainer(tower_recipe(workspace, tmp_path / "full", seed=3))
    start = Phi3V.from_decoder(Phi3.from_pretrained(workspace / "text"),
                               full.recipe.vision.vision_config(), seed=3).params
    heads_before = {n: p.data.copy() for n, p in full.objective.named_parameters()}
    assert full.run(progress=False)
    tower = [n for n, _ in full.model.named_parameters() if ".img_processor." in n]
    for name, p in full.model.named_parameters():
        if name not in tower:                                    # decoder, projector, separators
            np.testing.assert_array_equal(p.data, start[name], err_msg=name)
    changed = {n for n, p in full.model.named_parameters()
               if n in tower and not np.array_equal(p.data, start[n])}
    # the layers up to the features' (layer_idx -2 of 3: layers 0 and 1) learn; the last layer
    # and post_layernorm compute nothing the features hold, so they keep their start
    assert {n for n in tower if "layers.2." not in n and "post_layernorm" not in n} == changed
    assert all(not np.array_equal(p.data, heads_before[n])
               for n, p in full.objective.named_parameters())
    assert any(k.startswith("accuracy_") for _, stats in full.state["val_stats"] for k in stats)
    interrupt_after(monkeypatch, 3)
    first = Trainer(tower_recipe(workspace, tmp_path / "cut", seed=3))
    assert not first.run(progress=False)
    monkeypatch.undo()
    resumed = Trainer(tower_recipe(workspace, tmp_path / "cut", seed=3), resume=True)
    assert resumed.run(progress=False)
    assert resumed.state["losses"] == full.state["losses"]
    for (n, a), (_, b) in zip(resumed.objective.named_parameters(),
                              full.objective.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
    final = full.export()
    assert isinstance(Phi3.from_pretrained(final), Phi3V)


# ---- sin-cos positions for a new tower --------------------------------------------------------

def test_sincos_positions_encode_the_row_in_one_half_and_the_column_in_the_other():
    from tinyphi3.models.vision.clip import grid_positions
    G, C = 5, 16
    table = grid_positions(G, C)
    assert table.shape == (G * G, C) and table.dtype == np.float32
    rows, cols = np.divmod(np.arange(G * G), G)
    for i in range(G * G):
        for j in range(G * G):
            assert np.array_equal(table[i, :C // 2], table[j, :C // 2]) == (rows[i] == rows[j])
            assert np.array_equal(table[i, C // 2:], table[j, C // 2:]) == (cols[i] == cols[j])
    np.testing.assert_allclose(table[G + 2, C // 2], 0.2 * np.sin(2.0), rtol=1e-6)  # column 2, k=0
    np.testing.assert_allclose(table[G + 2, 0], 0.2 * np.sin(1.0), rtol=1e-6)       # row 1, k=0


def test_a_recipe_s_sincos_tower_starts_from_them(workspace, tmp_path):  # noqa: F811
    from tinyphi3.models.vision.clip import grid_positions
    vision = {"clip": CLIP, "num_crops": 1, "positions": "sincos"}
    trainer = Trainer(tower_recipe(workspace, tmp_path / "s", vision=vision))
    table = trainer.model.params["model.vision_embed_tokens.img_processor.vision_model."
                                 "embeddings.position_embedding.weight"]
    assert not table[0].any()                                          # the class token's
    np.testing.assert_array_equal(table[1:], grid_positions(4, 16))   # 28 / 7 = 4, width 16
    with pytest.raises(RecipeError, match="positions must be"):
        tower_recipe(workspace, tmp_path / "x", vision=vision | {"positions": "learned"})
