"""Training recipes: TOML files in configs/ that say what to train, on what, and how.

    [model]   preset = "tiny", any Phi3Config field to override, tokenizer = "DIR"
              init_from = "DIR"            (optional: start from a checkpoint, e.g. phase 1's)
    [vision]  clip = {CLIPVisionConfig fields}, layer_idx, num_crops, freeze = ["tower", ...]
                                           (stages "vision_sft": tinyphi3.train.images, and
                                           "vision_tower": tinyphi3.train.tower, which freezes
                                           the decoder and projector itself and takes no text)
    [data]    shards = "DIR"               (pre-training: written by `tinyphi3 data tokenize`)
              conversations = "FILE.jsonl" (stage "sft": written by `tinyphi3 data sft`)
              replay = "DIR", replay_share  (stages "sft" and "vision_sft", optional: token
                                           shards of the pre-training text, read on that share
                                           of the steps)
              preferences = "FILE.jsonl"   (stage "dpo": written by `tinyphi3 data dpo`)
              conversations = "FILE.jsonl", conversations_share  (stage "dpo", optional: the
                                           SFT's conversations, trained on that share of the
                                           steps (default 0.25) with the next-token loss)
              images = "DIR"               (stages "vision_sft", "vision_tower": by `tinyphi3
                                           data images`)
              conversations = "FILE.jsonl" (stage "distill": the replies whose next-token
                                           distributions the student learns from the teacher)
              images = "DIR", images_share (stage "distill" of a phi3_v student, optional:
                                           pictures with questions, trained on that share of
                                           the steps (default 0.25) with the next-token loss of
                                           stage "vision_sft", so that the distillation keeps
                                           what the picture SFT taught; [vision] may then give
                                           num_crops and freeze)
    [train]   stage = "pretrain" | "sft" | "dpo" | "distill" | "vision_sft" | "vision_tower",
              steps, batch_size,
              seq_len,
              grad_accum, lr,
              min_lr, warmup_steps, weight_decay, beta1, beta2, clip, seed,
              stop_at (end at this step, the schedule still planned for `steps`; 0: at `steps`),
              beta, label_smoothing, sft_weight (DPO; the reference model is init_from),
              teacher = "DIR" (stage "distill": the frozen checkpoint learnt from),
              attention = "auto" | "dense" | "flash" (tiled: no [T, S] matrix per head; "auto"
              tiles sequences of 1,024 tokens or more),
              length_groups (stages "sft" and "dpo": 0, the default, batches in plain random
              order; G > 0, each batch from G * batch_size random examples sorted by length, a
              pair's length its longer side, so that little of a batch is padding:
              tinyphi3.train.conversations.ExampleBatches)
    [log]     eval_every, eval_batches, save_every
    [output]  dir, dtype                   (dtype of the exported final model)

SFT, DPO and vision SFT batches hold whole examples (batch_size conversations, pairs or pictures
with their questions, padded), not seq_len-token windows; seq_len is then the longest example
kept (image slots count).

Unknown sections or keys are errors, so a typo never silently falls back to a default.
"""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tinyphi3.config import ClipConfig, Phi3Config, VisionConfig, preset
from tinyphi3.errors import TinyPhi3Error
from tinyphi3.models.vision.clip import POSITION_INITS
from tinyphi3.models.vision.weights import PARTS

# stage "vision_tower": which pictures label which targets (tinyphi3.train.tower)
LABEL_RULES = ("all", "decorrelated", "unread", "outlines")


class RecipeError(TinyPhi3Error):
    """A recipe file is missing, not TOML, or has unknown or invalid keys."""


@dataclass
class TrainSettings:
    steps: int = 1000
    batch_size: int = 8
    seq_len: int = 256
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    clip: float = 1.0
    seed: int = 0
    stop_at: int = 0
    beta: float = 0.1
    label_smoothing: float = 0.0
    sft_weight: float = 0.0
    attention: str = "auto"
    length_groups: int = 0
    teacher: str = ""


@dataclass
class LogSettings:
    eval_every: int = 100
    eval_batches: int = 8
    save_every: int = 100


@dataclass
class VisionSettings:
    """[vision] of stage "vision_sft". clip (CLIPVisionConfig's fields, all of them) and layer_idx:
    the tower to make when init_from is a text checkpoint (or absent); num_crops: the image
    processor's crop budget (absent: init_from's preprocessor_config.json, else 1); freeze: the
    parts kept constant, of "tower", "projector", "decoder" (tinyphi3.models.vision.weights);
    text: a file of text conversations (as stage "sft" reads) mixed in so that the decoder keeps
    its text skills, text_share: the fraction of steps that take a text batch (default 0.25);
    positions: how a new tower's position embeddings start, "random" (normal, as every other
    weight) or "sincos" (2-D sine-cosine positions of the patch grid: clip.grid_positions);
    labels (stage "vision_tower"): which pictures label which targets, "all", "decorrelated",
    "unread" or "outlines" (tinyphi3.train.tower.LABEL_RULES); maps (stage "vision_tower"):
    whether the tower also learns targets per patch (a shape density and each shape's outline
    and colour at its centre: tinyphi3.train.tower)."""
    clip: dict | None = None
    layer_idx: int = -2
    num_crops: int | None = None
    freeze: list = field(default_factory=list)
    text: str | None = None
    text_share: float | None = None
    positions: str = "random"
    labels: str = "all"
    maps: bool = False

    def vision_config(self) -> VisionConfig:
        """The image side of a new phi3_v model (its tower: `clip`)."""
        clip = ClipConfig(**self.clip)
        return VisionConfig(clip=clip, layer_idx=self.layer_idx, image_dim_out=clip.hidden_size,
                            num_img_tokens=(clip.grid // 2) ** 2)


@dataclass
class Recipe:
    model: dict
    data_shards: str
    train: TrainSettings = field(default_factory=TrainSettings)
    log: LogSettings = field(default_factory=LogSettings)
    output_dir: str = "runs/out"
    output_dtype: str = "bfloat16"
    source: str = ""
    stage: str = "pretrain"
    data_file: str | None = None          # conversations, preferences, images (sft, dpo, vision)
    replay: str | None = None             # "sft", "vision_sft": pre-training shards, some steps
    replay_share: float = 0.0             # the share of steps that read them
    rehearsal: str | None = None          # stage "dpo": SFT conversations trained on some steps
    rehearsal_share: float = 0.0          # the share of DPO steps that train on them
    pictures: str | None = None           # stage "distill": pictures with questions, some steps
    pictures_share: float = 0.0           # the share of distillation steps that train on them
    vision: VisionSettings | None = None  # "vision_sft", "vision_tower"; "distill" with pictures

    @property
    def tokenizer(self) -> str:
        return self.model["tokenizer"]

    @property
    def init_from(self) -> str | None:
        return self.model.get("init_from") or None

    def model_config(self, vocab_size: int) -> Phi3Config:
        """The architecture: a preset with overrides; vocab_size defaults to the tokenizer's,
        rounded up to a multiple of 64 as Phi-3 pads its embedding."""
        overrides = {k: v for k, v in self.model.items()
                     if k not in ("preset", "tokenizer", "init_from")}
        overrides.setdefault("vocab_size", -(-vocab_size // 64) * 64)
        try:                                  # by field name, whatever the variant's file layout
            config = preset(self.model.get("preset", "tiny")).replace(**overrides)
            if self.vision is not None and self.vision.clip is not None:   # phi-3-vision
                config = config.replace(model_type="phi3_v", vision=self.vision.vision_config())
            return config
        except (TypeError, ValueError, TinyPhi3Error) as e:
            raise RecipeError(f"{self.source}: [model] {e}") from None

    def to_dict(self) -> dict:
        data = {DATA_KEYS[self.stage]: self.data_file or self.data_shards}
        if self.replay is not None:
            data.update(replay=self.replay, replay_share=self.replay_share)
        if self.rehearsal is not None:
            data.update(conversations=self.rehearsal, conversations_share=self.rehearsal_share)
        if self.pictures is not None:
            data.update(images=self.pictures, images_share=self.pictures_share)
        vision = {} if self.vision is None else {"vision": {
            k: v for k, v in dataclasses.asdict(self.vision).items() if v is not None}}
        return {"model": self.model, **vision, "data": data,
                "train": {"stage": self.stage, **dataclasses.asdict(self.train)},
                "log": dataclasses.asdict(self.log),
                "output": {"dir": self.output_dir, "dtype": self.output_dtype}}


DATA_KEYS = {"pretrain": "shards", "sft": "conversations", "dpo": "preferences",
             "distill": "conversations", "vision_sft": "images", "vision_tower": "images"}
VISION_STAGES = ("vision_sft", "vision_tower")
SECTIONS = ("model", "vision", "data", "train", "log", "output")


def _fill(cls, section: dict, where: str):
    known = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(known)}")
    values = {}
    for key, value in section.items():
        if known[key] in (str, "str"):
            if not isinstance(value, str):
                raise RecipeError(f"{where}.{key}: expected a string, got {value!r}")
            values[key] = value
            continue
        kind = int if known[key] in (int, "int") else float
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                kind is int and not isinstance(value, int)):
            raise RecipeError(f"{where}.{key}: expected a number ({kind.__name__}), got {value!r}")
        values[key] = kind(value)
    return cls(**values)


def _replay(data: dict, stage: str, source: str):
    """(replay, replay_share) popped from [data]: pre-training shards that stage "sft" or
    "vision_sft" reads on a share of its steps (rehearsal, so that fine-tuning does not wear away
    what pre-training taught), or (None, 0.0)."""
    if "replay" not in data and "replay_share" not in data:
        return None, 0.0
    if stage not in ("sft", "vision_sft"):
        raise RecipeError(f"{source}: [data] replay is for stages 'sft' and 'vision_sft' only")
    replay, share = data.pop("replay", None), data.pop("replay_share", None)
    if not isinstance(replay, str):
        raise RecipeError(f"{source}: [data] replay_share needs replay = \"DIR\" (token shards "
                          f"written by `tinyphi3 data tokenize`)")
    return replay, _share_of_steps(share, "replay_share", source)


def _rehearsal(data: dict, stage: str, source: str):
    """(conversations, share) popped from the [data] of stage "dpo": the SFT's conversations,
    trained on a share of the DPO's steps with the next-token loss, so that the replies the pairs
    do not mention stay where SFT put them; or (None, 0.0)."""
    return _side_data(data, stage, source, "dpo", "conversations",
                      '"FILE.jsonl" (the SFT\'s conversations)', "a conversations file")


def _pictures(data: dict, stage: str, source: str):
    """(images, share) popped from the [data] of stage "distill": pictures with questions that a
    share of the distillation's steps trains on with the next-token loss, so that distilling the
    text skills back does not undo the picture SFT; or (None, 0.0)."""
    return _side_data(data, stage, source, "distill", "images",
                      '"DIR" (pictures written by `tinyphi3 data images`)',
                      "a directory of pictures")


def _side_data(data: dict, stage: str, source: str, owner: str, key: str, needs: str,
               what: str):
    """(path, share) popped from [data]: `key` = path and `key`_share (default 0.25), the data
    that stage `owner` trains on a share of its steps; or (None, 0.0) where they are absent."""
    share_key = f"{key}_share"
    if stage != owner:
        if share_key in data:
            raise RecipeError(f"{source}: [data] {share_key} is for stage '{owner}' only")
        return None, 0.0
    if key not in data:
        if share_key in data:
            raise RecipeError(f"{source}: [data] {share_key} needs {key} = {needs}")
        return None, 0.0
    path, share = data.pop(key), data.pop(share_key, 0.25)
    if not isinstance(path, str) or not path:
        raise RecipeError(f"{source}: [data] {key} must be the path of {what}, got {path!r}")
    return path, _share_of_steps(share, share_key, source)


def _share_of_steps(share, key: str, source: str) -> float:
    """[data] key's value, checked: a share of the steps strictly between 0 and 1."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise RecipeError(f"{source}: [data] {key} must be a share of the steps between 0 and 1, "
                          f"got {share!r}")
    return float(share)


def load_recipe(path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe not found")
    try:
        d = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: not valid TOML ({e})") from None
    return recipe_from_dict(d, str(path))


def recipe_from_dict(d: dict, source: str = "recipe") -> Recipe:
    unknown = sorted(set(d) - set(SECTIONS))
    if unknown:
        raise RecipeError(f"{source}: unknown section(s) {', '.join(unknown)}; "
                          f"known: {', '.join(SECTIONS)}")
    model = dict(d.get("model", {}))
    if "tokenizer" not in model:
        raise RecipeError(f"{source}: [model] needs tokenizer = \"DIR\"")
    config_keys = {f.name for f in dataclasses.fields(Phi3Config)} - {"extra"}
    bad = sorted(set(model) - config_keys - {"preset", "tokenizer", "init_from"})
    if bad:
        raise RecipeError(f"{source}: [model] unknown key(s) {', '.join(bad)}")
    train = dict(d.get("train", {}))
    stage = train.pop("stage", "pretrain")
    if not isinstance(stage, str) or stage not in DATA_KEYS:
        raise RecipeError(f"{source}: [train] stage must be one of {', '.join(DATA_KEYS)}, "
                          f"got {stage!r}")
    data, key = dict(d.get("data", {})), DATA_KEYS[stage]
    replay, replay_share = _replay(data, stage, source)
    rehearsal, rehearsal_share = _rehearsal(data, stage, source)
    pictures, pictures_share = _pictures(data, stage, source)
    if set(data) != {key}:
        raise RecipeError(f"{source}: [data] of stage {stage!r} needs exactly one key, "
                          f"{key} = \"...\" (got {', '.join(sorted(data)) or 'none'})")
    if stage == "dpo" and not model.get("init_from"):
        raise RecipeError(f"{source}: DPO starts from the SFT model, which is also its frozen "
                          f"reference: set [model] init_from = \"DIR\"")
    output = dict(d.get("output", {}))
    if set(output) - {"dir", "dtype"}:
        raise RecipeError(f"{source}: [output] unknown key(s) "
                          f"{', '.join(sorted(set(output) - {'dir', 'dtype'}))}")
    recipe = Recipe(model=model, data_shards=data[key] if stage == "pretrain" else "",
                    stage=stage, data_file=None if stage == "pretrain" else data[key],
                    train=_fill(TrainSettings, train, f"{source} [train]"),
                    log=_fill(LogSettings, d.get("log", {}), f"{source} [log]"),
                    output_dir=output.get("dir", "runs/out"),
                    output_dtype=output.get("dtype", "bfloat16"), source=source,
                    replay=replay, replay_share=replay_share,
                    rehearsal=rehearsal, rehearsal_share=rehearsal_share,
                    pictures=pictures, pictures_share=pictures_share,
                    vision=_vision(d.get("vision"), stage, model, source, pictures is not None))
    t = recipe.train
    if (stage == "distill") != bool(t.teacher):
        raise RecipeError(f"{source}: " + ("stage \"distill\" learns from a frozen checkpoint: "
                                           "set [train] teacher = \"DIR\"" if t.teacher == ""
                                           else "[train] teacher is for stage \"distill\" only"))
    if min(t.steps, t.batch_size, t.seq_len, t.grad_accum) < 1 or t.lr <= 0:
        raise RecipeError(f"{source}: steps, batch_size, seq_len, grad_accum and lr must be "
                          f"positive")
    if t.length_groups < 0 or (t.length_groups and stage not in ("sft", "dpo", "distill")):
        raise RecipeError(f"{source}: length_groups must be 0 or, for stages \"sft\", \"dpo\" "
                          f"and \"distill\", a positive number of batches per group, got "
                          f"{t.length_groups}")
    if not 0 <= t.stop_at <= t.steps:
        raise RecipeError(f"{source}: stop_at must be between 0 (run to steps) and "
                          f"steps ({t.steps}), got {t.stop_at}")
    if not 0.0 <= t.label_smoothing < 0.5 or t.beta <= 0 or t.sft_weight < 0:
        raise RecipeError(f"{source}: beta must be positive, label_smoothing in [0, 0.5) and "
                          f"sft_weight >= 0")
    if t.attention not in ("auto", "dense", "flash"):
        raise RecipeError(f"{source}: [train] attention must be \"auto\", \"dense\" or "
                          f"\"flash\", got {t.attention!r}")
    if not isinstance(recipe.output_dir, str) or not (recipe.data_file is None
                                                      or isinstance(recipe.data_file, str)):
        raise RecipeError(f"{source}: [output] dir and the [data] path must be strings")
    if recipe.output_dtype not in ("float32", "bfloat16", "float16"):
        raise RecipeError(f"{source}: [output] dtype must be float32, bfloat16 or float16")
    return recipe


def _vision(section, stage: str, model: dict, source: str,
            pictures: bool = False) -> VisionSettings | None:
    """[vision], checked: only in stages vision_sft and vision_tower, which need a tower
    (init_from's or clip), and in a distillation with pictures (num_crops and freeze only; the
    student is init_from's phi3_v model)."""
    where = f"{source}: [vision]"
    if stage == "distill" and pictures:
        section = dict(section or {})
        extra = sorted(set(section) - {"num_crops", "freeze"})
        if extra:
            raise RecipeError(f"{where} of a distillation with pictures takes num_crops and "
                              f"freeze only (the student is init_from's phi3_v model), got "
                              f"{', '.join(extra)}")
        if not model.get("init_from"):
            raise RecipeError(f"{source}: a distillation with pictures needs [model] init_from, "
                              f"a phi3_v model")
    elif stage not in VISION_STAGES:
        if section is not None:
            raise RecipeError(f"{source}: [vision] belongs to stages \"vision_sft\" and "
                              f"\"vision_tower\" (and \"distill\" with [data] images), not "
                              f"{stage!r}")
        return None
    section = dict(section or {})
    known = [f.name for f in dataclasses.fields(VisionSettings)]
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise RecipeError(f"{where} unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    settings = VisionSettings(**section)
    if settings.clip is None:
        if not model.get("init_from"):
            raise RecipeError(f"{where} a new phi-3-vision needs its tower: clip = {{hidden_size "
                              f"= ..., ...}} (CLIPVisionConfig's fields), or [model] init_from")
        if "layer_idx" in section or "positions" in section:
            raise RecipeError(f"{where} layer_idx and positions describe a new tower: give them "
                              f"with clip")
    else:
        if not isinstance(settings.clip, dict):
            raise RecipeError(f"{where} clip must be a table of CLIPVisionConfig's fields")
        try:
            settings.vision_config()
        except (TypeError, TinyPhi3Error) as e:
            raise RecipeError(f"{where} clip: {e}") from None
    if settings.positions not in POSITION_INITS:
        raise RecipeError(f"{where} positions must be one of {', '.join(POSITION_INITS)}, got "
                          f"{settings.positions!r}")
    if settings.labels not in LABEL_RULES:
        raise RecipeError(f"{where} labels must be one of {', '.join(LABEL_RULES)}, got "
                          f"{settings.labels!r}")
    if type(settings.maps) is not bool:
        raise RecipeError(f"{where} maps must be true or false, got {settings.maps!r}")
    if stage != "vision_tower" and settings.maps:
        raise RecipeError(f"{where} maps are targets of the tower's own stage: stage "
                          f"\"vision_tower\" only")
    if stage != "vision_tower" and settings.labels != "all":
        raise RecipeError(f"{where} labels choose the tower's targets in stage \"vision_tower\" "
                          f"only")
    if stage == "vision_tower" and (settings.text is not None or settings.freeze):
        raise RecipeError(f"{where} stage \"vision_tower\" trains the tower alone (the decoder "
                          f"and projector frozen, no text): leave out text and freeze")
    crops = settings.num_crops
    if crops is not None and (type(crops) is not int or crops < 1):
        raise RecipeError(f"{where} num_crops must be a positive integer, got {crops!r}")
    freeze = settings.freeze
    if not isinstance(freeze, list) or not set(freeze) <= set(PARTS) or set(freeze) == set(PARTS):
        raise RecipeError(f"{where} freeze must list some of {', '.join(PARTS)} (not all), got "
                          f"{freeze!r}")
    if settings.text is not None and (not isinstance(settings.text, str) or not settings.text):
        raise RecipeError(f"{where} text must be the path of a conversations file, got "
                          f"{settings.text!r}")
    share = settings.text_share
    if share is not None:
        if settings.text is None:
            raise RecipeError(f"{where} text_share needs text = \"FILE\" (the conversations)")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
            raise RecipeError(f"{where} text_share must be a number between 0 and 1 (the "
                              f"fraction of steps on text), got {share!r}")
    elif settings.text is not None:
        settings.text_share = 0.25
    return settings
