"""Pre-training the tower alone: supervised by what each picture shows (stage "vision_tower").

The published phi-3-vision starts from a CLIP ViT-L/14 that was trained before, and apart from,
the language model (Phi-3 report §6): the tower arrives knowing how to see. A tower trained here
from random weights learns to see only through the decoder's next-token loss, and every step of
that pays for a pass through the decoder. This stage trains the tower on its own instead, as a
classifier of the facts of the picture spec (tinyphi3.data.images): each picture's record keeps
the spec it was drawn from, so the targets come for free.

The tower reads the global view the image processor makes of each picture (crop 0: the whole
picture); its features are those the projector reads (hidden_states[layer_idx] without the
class token, F [N, P, C]). On top of them, a small
head per target (kept only for this stage; the checkpoint holds the tower, not the heads):

    h     = LayerNorm(F)                                       [N, P, C]
    a_t   = softmax_p(h q_t / sqrt(C))                         [N, P]   (a learned query per target)
    z_t   = sum_p a_t[p] h[p]  W_t^T + b_t                     [N, K_t] (logits over K_t classes)
    L     = mean over targets of cross_entropy(z_t, y_t)       (rows where y_t = -1 not counted)

The targets (TARGETS; -1 where a target does not apply to a picture's kind):

    kind                      colour, count, position, reading, chart
    colour, shape             the shape's (colour, count of one shape), the left or upper
                              shape's (position); no colour for a colour of no name, no
                              shape for one of EXTRA_SHAPES (counted only)
    colour2, shape2, axis     position: the right or lower shape; side by side or one above
    count                     1 to 5 (of any shapes: mixed count pictures too)
    char0 .. char5            reading: each character of the word, or "end" past its last
    bars, bar0_colour ...     chart: 3 or 4 bars; each bar's colour and height (2 to 10),
    bar3_height, tallest,     left to right; the colours of the tallest and shortest bars
    shortest

Which pictures label which targets (LABEL_RULES, `[vision] labels` of the recipe):

    "all"           every target a picture's kind has (the table above)
    "decorrelated"  as "all", but a shape is labelled only where its colour has no name, and
                    the characters only of a word no question's picture shows (a random
                    string: not a creature's name, a made-up word nor a number from 10 to 99).
                    The held-out rule makes a shape predictable from a named colour (no
                    training star is red) and a letter from the rest of a name (no training
                    "?ubi" starts with J); on these pictures neither holds, so the heads, and
                    the features they pull on, must go by the outline and the glyph.
    "unread"        as "all", but no word's characters: for a tower that already reads (one
                    trained through a decoder's captions and questions), so that its reading is
                    left to the decoder's loss while the other heads teach it the rest.
    "outlines"      as "unread", and a shape labelled only where its colour has no name (as
                    "decorrelated"): a reading tower taught shapes by their outline alone.

The measures (evaluate_heads, heads_on_pictures) always label every target.

Maps (`[vision] maps = true`): targets per patch as well, on the g x g grid the features lie on
(P = g^2, row-major as the patches are), for every shape of a colour, count or position picture
(a reading or chart picture shows none: its density is 0 everywhere, its centres unlabelled):

    density        d[p] = sum over shapes s of G(p, s) / sum_p' G(p', s), with G(p, s) =
                   exp(-|c_p - c_s|^2 / 2) in patch units (c_p the patch's centre, c_s the
                   shape's): each shape adds 1 in all, so sum_p d[p] is the number of shapes
    centre_shape   at the patch holding a shape's centre: its shape (SHAPES, then one class for
                   every shape of EXTRA_SHAPES); -1 at every other patch
    centre_colour  at that patch: its colour (-1 for a colour of no name)

read by one linear map per target from every patch of the shared LayerNorm's h:

    d_hat = h w_d + b_d                    [N, P]       z_t = h W_t^T + b_t   [N, P, K_t]
    L_density = 10 * mean_n sum_p (d_hat[n, p] - d[n, p])^2
    L_t       = cross_entropy over the patches labelled (as for the pooled targets)

each joining the mean over targets. A count is then a sum over places (round(sum_p d_hat)) that
holds for any shape in any number, and each shape's outline and colour are named where it is:
what a picture holds, learned where it holds it, so that no composition of shapes, counts and
colours is needed to learn it. Under "decorrelated" and "outlines" a shape's centre_shape is
unlabelled where its colour has a name, as for the pooled shape.

The pooled queries let a head look where its answer is (the second bar, the third letter), and
the features keep it afterwards: the projector turns them into the image tokens the decoder
reads. Only the tower and the heads train here; the decoder and projector stay as they are.
"""

import numpy as np

from tinyphi3.data import world
from tinyphi3.data.images import (QUESTION_KINDS, RANDOM_CHARACTERS, SHAPES, bar_colour,
                                  is_mixed, is_named, made_up_words)
from tinyphi3.models.vision.clip import clip_features
from tinyphi3.nn.autograd import Parameter, Tensor, enable_grad
from tinyphi3.nn.layers import cross_entropy, layer_norm, linear, softmax
from tinyphi3.train.conversations import ChatDataError, read_records
from tinyphi3.train.recipe import LABEL_RULES

CHARACTERS = RANDOM_CHARACTERS             # every character a written word can have
MAX_CHARS = 6
END = len(CHARACTERS)                       # the class of "no character here"
MAX_BARS = 4
HEIGHTS = range(2, 11)

TARGETS = {"kind": len(QUESTION_KINDS), "colour": len(world.COLOURS), "shape": len(SHAPES),
           "colour2": len(world.COLOURS), "shape2": len(SHAPES), "axis": 2, "count": 5,
           **{f"char{i}": END + 1 for i in range(MAX_CHARS)}, "bars": 2,
           **{f"bar{i}_{what}": n for i in range(MAX_BARS)
              for what, n in (("colour", len(world.COLOURS)), ("height", len(HEIGHTS)))},
           "tallest": len(world.COLOURS), "shortest": len(world.COLOURS)}
MAP_TARGETS = {"centre_shape": len(SHAPES) + 1, "centre_colour": len(world.COLOURS)}
DENSITY_WEIGHT = 10.0
GROUPS = {"kind": ("kind",), "colour": ("colour", "shape"),
          "count": ("count",), "position": ("colour", "shape", "colour2", "shape2", "axis"),
          "reading": tuple(f"char{i}" for i in range(MAX_CHARS)),
          "chart": ("tallest", "shortest", "bars",
                    *(f"bar{i}_{w}" for i in range(MAX_BARS) for w in ("colour", "height")))}


def _colour(shape: dict) -> int:
    """The class of a shape's colour; -1 (not counted) for a colour of no name."""
    return world.COLOURS.index(shape["colour"]) if is_named(shape["colour"]) else -1


_NAMES = frozenset(e.name for e in world.ENTITIES)


def _shape_class(shape: dict) -> int:
    """The class of a shape among SHAPES; -1 (not counted) for one of EXTRA_SHAPES."""
    return SHAPES.index(shape["shape"]) if shape["shape"] in SHAPES else -1


def _question_word(word: str) -> bool:
    """A word a question's picture shows: a creature's name, a made-up word, 10 to 99."""
    return (word in _NAMES or word in made_up_words()
            or (word.isdigit() and 10 <= int(word) <= 99 and word[0] != "0"))


def picture_targets(spec: dict, labels: str = "all") -> dict:
    """{target: class} of a picture spec, -1 for the targets its kind does not have (and, by
    the rules "decorrelated", "unread" and "outlines", for those they leave unlabelled:
    LABEL_RULES)."""
    y = _all_targets(spec)
    if labels not in LABEL_RULES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_RULES)}, got {labels!r}")
    if labels in ("decorrelated", "outlines") and spec["kind"] in ("colour", "count", "position"):
        for suffix in ("", "2"):
            if y["colour" + suffix] >= 0:              # a named colour: its shape unlabelled
                y["shape" + suffix] = -1
    if labels == "decorrelated" and spec["kind"] == "reading" and _question_word(spec["word"]):
        y.update(dict.fromkeys(GROUPS["reading"], -1))
    if labels in ("unread", "outlines"):
        y.update(dict.fromkeys(GROUPS["reading"], -1))
    return y


def _all_targets(spec: dict) -> dict:
    y = dict.fromkeys(TARGETS, -1)
    kind = spec["kind"]
    y["kind"] = QUESTION_KINDS.index(kind)
    if kind in ("colour", "count"):
        s = spec["shapes"][0]
        if not is_mixed(spec):           # a mixed count picture has no one colour and shape
            y["colour"], y["shape"] = _colour(s), _shape_class(s)
        if kind == "count":
            y["count"] = len(spec["shapes"]) - 1
    elif kind == "position":
        across = spec["relation"] in ("left of", "right of")
        key = "x" if across else "y"
        first, second = sorted(spec["shapes"], key=lambda s: s[key])     # left/upper first
        y["axis"] = 0 if across else 1
        for s, suffix in ((first, ""), (second, "2")):
            y["colour" + suffix] = _colour(s)
            y["shape" + suffix] = SHAPES.index(s["shape"])
    elif kind == "reading":
        word = spec["word"]
        for i in range(MAX_CHARS):
            y[f"char{i}"] = CHARACTERS.index(word[i]) if i < len(word) else END
    else:
        colours, heights = spec["colours"], spec["heights"]
        y["bars"] = len(colours) - 3
        for i, (c, h) in enumerate(zip(colours, heights)):
            y[f"bar{i}_colour"], y[f"bar{i}_height"] = world.COLOURS.index(c), h - HEIGHTS[0]
        y["tallest"] = world.COLOURS.index(bar_colour(spec, "tallest"))
        y["shortest"] = world.COLOURS.index(bar_colour(spec, "shortest"))
    return y


def map_targets(spec: dict, grid: int, labels: str = "all") -> dict:
    """The maps of a picture spec on a grid x grid of patches (the module docstring): {"density":
    float32 [P], "centre_shape": int64 [P], "centre_colour": int64 [P]}, P = grid^2 row-major."""
    P = grid * grid
    density = np.zeros(P, np.float32)
    centres = {t: np.full(P, -1, np.int64) for t in MAP_TARGETS}
    if spec["kind"] not in ("colour", "count", "position"):
        return {"density": density, **centres}
    rows, cols = np.divmod(np.arange(P), grid)
    for s in spec["shapes"]:
        x, y = s["x"] * grid, s["y"] * grid                       # in patch units
        g = np.exp(-((cols + 0.5 - x) ** 2 + (rows + 0.5 - y) ** 2) / 2)
        density += (g / g.sum()).astype(np.float32)
        at = min(int(y), grid - 1) * grid + min(int(x), grid - 1)
        shape = SHAPES.index(s["shape"]) if s["shape"] in SHAPES else len(SHAPES)
        colour = _colour(s)
        if labels in ("decorrelated", "outlines") and colour >= 0:  # a named colour: no shape
            shape = -1
        centres["centre_shape"][at], centres["centre_colour"][at] = shape, colour
    return {"density": density, **centres}


def init_heads(width: int, seed: int, maps: bool = False) -> dict:
    """The heads' parameters by name: a shared LayerNorm, then per target t a query q_t [C] (the
    columns of queries [C, T]), W_t [K_t, C] and b_t [K_t]; with maps, also density.weight
    [1, C], density.bias [1] and W_t, b_t of each of MAP_TARGETS."""
    rng = np.random.default_rng(seed)
    heads = {"norm.weight": np.ones(width, np.float32), "norm.bias": np.zeros(width, np.float32),
             "queries": (rng.standard_normal((width, len(TARGETS))) * 0.02).astype(np.float32)}
    for t, k in (TARGETS | ({"density": 1} | MAP_TARGETS if maps else {})).items():
        heads[f"{t}.weight"] = (rng.standard_normal((k, width)) * 0.02).astype(np.float32)
        heads[f"{t}.bias"] = np.zeros(k, np.float32)
    return {name: Parameter(w) for name, w in heads.items()}


def has_maps(heads: dict) -> bool:
    """Whether the heads read maps (init_heads(maps=True))."""
    return "density.weight" in heads


def head_logits(features, heads: dict, eps: float = 1e-5) -> dict:
    """{target: logits [N, K_t]} from tower features [N, P, C] (the formulas of the docstring)."""
    N, P, C = features.shape
    h = layer_norm(features, heads["norm.weight"], heads["norm.bias"], eps)       # [N, P, C]
    scores = (h @ heads["queries"]) * C ** -0.5                                   # [N, P, T]
    weights = softmax(scores, axis=1).transpose(0, 2, 1)                          # [N, T, P]
    pooled = weights @ h                                                          # [N, T, C]
    logits = {t: linear(pooled[:, i], heads[f"{t}.weight"], heads[f"{t}.bias"])   # [N, K_t]
              for i, t in enumerate(TARGETS)}
    if has_maps(heads):
        logits["density"] = linear(h, heads["density.weight"],
                                   heads["density.bias"]).reshape(N, P)           # [N, P]
        for t in MAP_TARGETS:
            logits[t] = linear(h, heads[f"{t}.weight"], heads[f"{t}.bias"])       # [N, P, K_t]
    return logits


def tower_features(model, pixel_values):
    """The tower's features of each picture's global view (crop 0, the whole picture; at the
    pictures' own size, 1 crop, it equals the one sub-image): [B, crops, 3, S, S] -> [B, P, C]."""
    vision = model.config.vision
    weights = model._weights(model._tower)
    return clip_features(pixel_values[:, 0], weights, vision.clip, vision.layer_idx,
                         crops_per_pass=max(len(pixel_values), 1))


def targets_of_batch(specs, labels: str = "all", grid: int | None = None) -> dict:
    """{target: labels [B]}: each picture's targets (by the rule `labels`); with a grid, the maps
    too ({"density": [B, P] float32, "centre_shape": [B, P], "centre_colour": [B, P]})."""
    rows = [picture_targets(spec, labels) for spec in specs]
    out = {t: np.array([r[t] for r in rows], dtype=np.int64) for t in TARGETS}
    if grid is not None:
        maps = [map_targets(spec, grid, labels) for spec in specs]
        out |= {t: np.stack([m[t] for m in maps]) for t in ("density", *MAP_TARGETS)}
    return out


def _grid_of(model, heads) -> int | None:
    return model.config.vision.clip.grid if has_maps(heads) else None


def tower_loss(model, heads, pixel_values, specs, labels: str = "all"):
    """(loss, {target: (correct, counted)}): the mean over targets (those present in the batch)
    of the heads' losses, and how many of each target's rows the heads got right."""
    logits = head_logits(tower_features(model, pixel_values), heads)
    return heads_loss(logits, targets_of_batch(specs, labels, _grid_of(model, heads)))


def heads_loss(logits: dict, labels: dict):
    """tower_loss from the heads' logits and the batch's labels ({target: [B]} each, the maps
    [B, P]). The density's "right" counts the pictures whose rounded sum is their count."""
    losses, right = [], {}
    for t, y in labels.items():
        z = logits[t].data if isinstance(logits[t], Tensor) else logits[t]
        if t == "density":
            error = logits[t] - y                                                 # [B, P]
            losses.append((error * error).sum() * (DENSITY_WEIGHT / len(y)))
            right[t] = (int((np.rint(z.sum(-1)) == np.rint(y.sum(-1))).sum()), len(y))
            continue
        counted = int((y >= 0).sum())
        if not counted:
            continue
        if y.ndim == 2:                                    # a map: every patch is a row
            B, P, K = z.shape
            losses.append(cross_entropy(logits[t].reshape(B * P, K), y.reshape(-1)))
        else:
            losses.append(cross_entropy(logits[t], y))
        right[t] = (int((z.argmax(axis=-1) == y)[y >= 0].sum()), counted)
    return sum(losses[1:], losses[0]) * (1.0 / len(losses)), right


def group_accuracy(right: dict) -> dict:
    """{kind: share of pictures' targets right} per GROUPS entry, from tower_loss's counts."""
    out = {}
    for group, targets in GROUPS.items():
        hits = [right[t] for t in targets if t in right]
        if hits:
            out[group] = sum(h for h, _ in hits) / sum(n for _, n in hits)
    return out


def load_picture_specs(directory, processor):
    """[(picture, spec)] of every record of DIR/examples.jsonl (questions or captions: both keep
    the spec they were drawn from)."""
    from pathlib import Path

    from tinyphi3.errors import InvalidInputError
    from tinyphi3.models.vision.image_file import open_image
    from tinyphi3.train.images import EXAMPLES

    directory, examples = Path(directory), []
    for number, record in read_records(directory / EXAMPLES):
        where = f"{directory / EXAMPLES}:{number}"
        spec = record.get("spec")
        if not isinstance(record.get("image"), str) or not isinstance(spec, dict):
            raise ChatDataError(f"{where}: a tower's record needs 'image' (the picture's path) "
                                f"and 'spec' (what it shows), as `tinyphi3 data images` writes")
        try:
            picture = open_image(directory / record["image"])
            picture_targets(spec)
        except InvalidInputError as e:
            raise ChatDataError(f"{where}: {e}") from None
        except (KeyError, ValueError, TypeError, IndexError):
            raise ChatDataError(f"{where}: 'spec' is not a picture spec of "
                                f"tinyphi3.data.images") from None
        examples.append((picture, spec))
    if not examples:
        raise ChatDataError(f"{directory / EXAMPLES}: no pictures")
    return examples


def evaluate_heads(model, heads, pairs, processor, batch_size: int = 32) -> tuple:
    """(mean loss, accuracy) of the heads on [(picture, spec)], without recording. accuracy:
    {kind: share of that kind's pictures whose every target of GROUPS[kind] is right} (a word
    read letter for letter, a chart's every bar), and {target: share right} for each target;
    with maps, also "map_count" (count pictures whose round(sum_p d_hat) is their count) and
    each of MAP_TARGETS (share of the shapes' centres named right)."""
    losses, hits = [], {t: [] for t in TARGETS | MAP_TARGETS}
    hits["map_count"] = []
    whole = {kind: [] for kind in QUESTION_KINDS}
    frozen = {n: p.data if isinstance(p, Tensor) else p for n, p in heads.items()}
    grid = _grid_of(model, heads)
    with enable_grad(False):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            pixels = processor([p for p, _ in chunk])["pixel_values"]
            specs = [s for _, s in chunk]
            logits = head_logits(tower_features(model, pixels), frozen)    # one tower pass
            labels = targets_of_batch(specs, grid=grid)
            losses.append(float(heads_loss(logits, labels)[0]))
            if grid is not None:
                said = np.rint(logits.pop("density").sum(-1))
                density = labels.pop("density")
                hits["map_count"] += [bool(n == np.rint(d.sum())) for n, d, s
                                      in zip(said, density, specs) if s["kind"] == "count"]
            right = {t: logits[t].argmax(axis=-1) == y for t, y in labels.items()}
            for t, y in labels.items():
                hits[t] += right[t][y >= 0].tolist()
            for i, spec in enumerate(specs):
                whole[spec["kind"]].append(all(right[t][i] for t in GROUPS[spec["kind"]]
                                               if labels[t][i] >= 0))
    accuracy = {kind: float(np.mean(v)) for kind, v in whole.items() if v}
    accuracy |= {t: float(np.mean(v)) for t, v in hits.items() if v}
    return float(np.mean(losses)), accuracy


class TowerPretraining:
    """Stage "vision_tower": the tower and its heads learn the pictures' specs (the module
    docstring); the decoder and projector are frozen. [data] images: a directory of `tinyphi3
    data images` (its records' specs are the targets; questions and captions are not read), the
    last val_count pictures held out."""

    def __init__(self, recipe, tokenizer, model, val_count: int):
        from tinyphi3.train.conversations import ExampleBatches
        from tinyphi3.train.images import image_processor_for

        t = recipe.train
        self.recipe = recipe
        model.freeze(("decoder", "projector"))
        self.image_processor = image_processor_for(model, recipe)
        examples = load_picture_specs(recipe.data_file, self.image_processor)
        self.batches = ExampleBatches(examples, t.batch_size, t.seed, val_count)
        maps = recipe.vision.maps
        self.heads = init_heads(model.config.vision.clip.hidden_size, t.seed + 3, maps)
        self.labels = recipe.vision.labels
        targets = f"{len(TARGETS)} targets" + (f" and {1 + len(MAP_TARGETS)} maps" if maps else "")
        self.notes = [f"{len(self.batches.train):,} pictures to train the tower on, "
                      f"{len(self.batches.val):,} held out; {targets}; the decoder "
                      f"and projector frozen"]

    def named_parameters(self):
        """The heads' parameters, trained beside the model's and kept in the checkpoints."""
        return [(f"heads/{n}", p) for n, p in self.heads.items()]

    def next_loss(self, model):
        chunk = self.batches.next_examples()
        pixels = self.image_processor([p for p, _ in chunk])["pixel_values"]
        with enable_grad():
            loss, right = tower_loss(model, self.heads, pixels, [s for _, s in chunk],
                                     self.labels)
        stats = {f"accuracy_{k}": v for k, v in group_accuracy(right).items()}
        return loss, stats, len(chunk)

    def validate(self, model):
        loss, accuracy = evaluate_heads(model, self.heads, self.batches.val,
                                        self.image_processor)
        return {"loss": loss, **{f"accuracy_{k}": accuracy[k]
                                 for k in (*QUESTION_KINDS, "map_count") if k in accuracy}}

    def state_dict(self):
        return self.batches.state_dict()

    def load_state_dict(self, state):
        self.batches.load_state_dict(state)


def heads_on_pictures(run_dir, split: str = "test", n: int = 200, seed: int = 0) -> dict:
    """evaluate_heads's accuracy of a vision_tower run's heads (its last checkpoint) on n
    freshly drawn pictures of each kind of `split` ("test": the held-out compositions), at the
    tower's crop size: whether what the tower learned to see reaches compositions it never saw."""
    import json
    from pathlib import Path

    from tinyphi3.data.images import draw, picture_spec
    from tinyphi3.data.world import stable_hash
    from tinyphi3.models.model import Phi3
    from tinyphi3.models.vision.hd_transform import ImageProcessor
    from tinyphi3.models.vision.processor import PREPROCESSOR_CONFIG

    checkpoint = Path(run_dir) / "checkpoint"
    model = Phi3.from_pretrained(checkpoint)
    saved = np.load(checkpoint / "objective_parameters.npz")
    heads = {n.removeprefix("heads/"): saved[n] for n in saved.files}
    config = json.loads((checkpoint / PREPROCESSOR_CONFIG).read_text(encoding="utf-8"))
    processor = ImageProcessor.from_dict(config)
    rng = np.random.default_rng(stable_hash("tower heads", split, seed))
    size = model.config.vision.clip.image_size
    pairs = []
    for kind in QUESTION_KINDS:
        for _ in range(n):
            spec = picture_spec(kind, split, rng)
            pairs.append((draw(spec, size), spec))
    return evaluate_heads(model, heads, pairs, processor)[1]
