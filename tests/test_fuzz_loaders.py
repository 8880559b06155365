"""Every loader fuzzed: a valid file or directory, mutated at random, either loads into something
that still runs or raises a TinyPhi3Error, never another exception and never a memory blow-up.

Each test draws FUZZ_EXAMPLES mutations (1,000 by default; TINYPHI3_FUZZ_EXAMPLES changes it) of
one loader's input: values of the wrong type, out of range, missing and extra keys, truncated or
flipped bytes, lying lengths. Loading and running happen under a memory cap (MEMORY_CAP above what
the process already holds): an allocation a configuration asks for beyond it is a MemoryError,
which fails the test like any raw exception. A sample goes through the command line too: one
error line, a non-zero exit, no traceback.
"""

import contextlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from tinyphi3 import Phi3, TinyPhi3Error, load_tokenizer, preset
from tinyphi3.cli.info import init_checkpoint

ROOT = Path(__file__).resolve().parent.parent
FUZZ_EXAMPLES = int(os.environ.get("TINYPHI3_FUZZ_EXAMPLES", "1000"))
MEMORY_CAP = 2 << 30                       # bytes of address space a load may add
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@contextlib.contextmanager
def memory_cap(extra=MEMORY_CAP):
    """Run the block with the process's address space capped at what it holds now plus `extra`."""
    with open("/proc/self/status") as status:
        used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + extra if hard == resource.RLIM_INFINITY else min(used + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def outcome(load):
    """Run `load` under the memory cap: 'ok', or the TinyPhi3Error's class name. Any other
    exception (MemoryError included) propagates and fails the test."""
    with memory_cap():
        try:
            load()
        except TinyPhi3Error as e:
            assert str(e), "an error must say what is wrong"
            result = type(e).__name__
        else:
            result = "ok"
    if currently_in_test_context():   # --hypothesis-show-statistics lists how often each happened
        event(result)
    return result


# ---- mutations ------------------------------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63),
                    st.sampled_from([0, -1, 1, 2, 3, 7, 64, 10**6, 10**9, 10**12, 2**31, 2**64]),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["", "x", "longrope", "su", "phi3", "phi3small", "silu",
                                     "model.safetensors", "../config.json", "<|end|>"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=6)


@st.composite
def mutated_json(draw, original):
    """A JSON object with some of its keys (at any depth) set to other values, deleted or added."""
    data = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 3))):
        path, node = [], data
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict)
                                       else list(range(len(node)))))
            path.append(key)
            node = node[key]
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["set", "set", "delete", "add"]))
        if not path or action == "add":
            target = parent if not path else node
            if isinstance(target, dict):
                target[draw(st.text(max_size=8))] = draw(json_values)
            elif isinstance(target, list):
                target.append(draw(json_values))
            continue
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return data


@st.composite
def mutated_bytes(draw, original: bytes):
    """Bytes flipped, cut short, inserted or overwritten with a lying number."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "u64", "head"]))
        head_bias = draw(st.booleans())                   # most structure sits at the start
        limit = min(len(data) - 1, 600) if head_bias else len(data) - 1
        at = draw(st.integers(0, max(limit, 0)))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "u64" and at + 8 <= len(data):
            data[at:at + 8] = struct.pack("<Q", draw(st.sampled_from(
                [0, 1, 2**31, 2**40, 2**63, 2**64 - 1, len(data)])))
        else:
            data[:8] = struct.pack("<Q", draw(st.integers(0, 2**64 - 1)))
    return bytes(data)


@contextlib.contextmanager
def scratch_copy(source):
    """A copy of a directory to mutate, removed afterwards."""
    target = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        shutil.copytree(source, target, dirs_exist_ok=True)
        yield target
    finally:
        shutil.rmtree(target)


def mutate_json_file(path, data):
    """Rewrite a JSON file as a drawn mutation of itself."""
    path.write_text(json.dumps(data.draw(mutated_json(json.loads(path.read_text())))))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz") / "tiny"
    init_checkpoint("tiny", directory)
    return directory


@pytest.fixture(scope="module")
def sharded(tiny, tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz") / "sharded"
    model = Phi3.from_pretrained(tiny)
    model.save_pretrained(directory, max_shard_bytes=200_000)
    for f in tiny.iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith("tokens.json") or \
                f.name == "special_tokens_map.json":
            shutil.copy(f, directory / f.name)
    assert (directory / "model.safetensors.index.json").is_file()
    return directory


@pytest.fixture(scope="module")
def quantized(tiny, tmp_path_factory):
    from tinyphi3.models.quantize import quantize_checkpoint
    directory = tmp_path_factory.mktemp("fuzz") / "q4"
    quantize_checkpoint(tiny, directory, 32, progress=False)
    return directory


def run_model(directory):
    model = Phi3.from_pretrained(directory)
    logits = model(np.array([[1, 2, 3]]) % model.config.vocab_size)
    assert logits.shape[-1] == model.config.vocab_size
    assert np.isfinite(logits).all(), "a checkpoint that loads must not give NaN logits"


def run_tokenizer(directory):
    tok = load_tokenizer(directory)
    ids = tok.encode("Hi  there,\n    x = 1 <|end|> café")
    tok.decode(ids)
    tok.apply_chat_template([{"role": "user", "content": "Hi\n  there"}], tokenize=True)


# ---- checkpoints ------------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_config_json(tiny, data):
    with scratch_copy(tiny) as directory:
        mutate_json_file(directory / "config.json", data)
        outcome(lambda: run_model(directory))


@FUZZ
@given(data=st.data())
def test_safetensors_file(tiny, data):
    with scratch_copy(tiny) as directory:
        original = (directory / "model.safetensors").read_bytes()
        (directory / "model.safetensors").write_bytes(data.draw(mutated_bytes(original)))
        outcome(lambda: run_model(directory))


@FUZZ
@given(data=st.data())
def test_safetensors_header(tiny, data):
    """The header is JSON after an 8-byte length: lying shapes, offsets, dtypes and names."""
    with scratch_copy(tiny) as directory:
        raw = (directory / "model.safetensors").read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        text = json.dumps(data.draw(mutated_json(header))).encode()
        (directory / "model.safetensors").write_bytes(
            struct.pack("<Q", len(text)) + text + raw[8 + n:])
        outcome(lambda: run_model(directory))


@FUZZ
@given(data=st.data())
def test_sharded_index(sharded, data):
    with scratch_copy(sharded) as directory:
        mutate_json_file(directory / "model.safetensors.index.json", data)
        outcome(lambda: run_model(directory))


@FUZZ
@given(data=st.data())
def test_quantized_checkpoint(quantized, data):
    with scratch_copy(quantized) as directory:
        if data.draw(st.booleans()):
            config = json.loads((directory / "config.json").read_text())
            qc = data.draw(mutated_json(config["quantization_config"]))
            config["quantization_config"] = qc
            (directory / "config.json").write_text(json.dumps(config))
        else:
            original = (directory / "model.safetensors").read_bytes()
            (directory / "model.safetensors").write_bytes(data.draw(mutated_bytes(original)))
        outcome(lambda: run_model(directory))


# ---- tokenizers -------------------------------------------------------------------------------------
TOKENIZER_JSON_FILES = ["tokenizer_config.json", "added_tokens.json", "special_tokens_map.json"]


@FUZZ
@given(data=st.data())
def test_sentencepiece_tokenizer_directory(tiny, data):
    with scratch_copy(tiny) as directory:
        name = data.draw(st.sampled_from(TOKENIZER_JSON_FILES + ["tokenizer.model"]))
        path = directory / name
        if name == "tokenizer.model":
            path.write_bytes(data.draw(mutated_bytes(path.read_bytes())))
        else:
            mutate_json_file(path, data)
        outcome(lambda: run_tokenizer(directory))


@FUZZ
@given(data=st.data())
def test_tiktoken_tokenizer_directory(data):
    with scratch_copy(ROOT / "checkpoints" / "small") as directory:
        for f in directory.iterdir():
            if f.name.startswith("model") or f.suffix in (".png", ".md"):
                f.unlink()
        name = data.draw(st.sampled_from(["tokenizer_config.json", "tokenizer.tiktoken"]))
        path = directory / name
        if name == "tokenizer.tiktoken":
            lines = path.read_bytes().split(b"\n")
            kind = data.draw(st.sampled_from(["bytes", "line", "drop"]))
            if kind == "bytes":
                path.write_bytes(data.draw(mutated_bytes(path.read_bytes())))
            else:
                at = data.draw(st.integers(0, len(lines) - 1))
                if kind == "drop":
                    del lines[at]
                else:
                    lines[at] = data.draw(st.sampled_from(
                        [b"", b"AA== x", b"AA== -1", b"AA==", b"!!!! 3", b"AA== 99999999999",
                         b"QQ== 0", b"AA== 1 2", lines[0]]))
                path.write_bytes(b"\n".join(lines))
        else:
            mutate_json_file(path, data)
        outcome(lambda: run_tokenizer(directory))


# ---- recipes and data files -------------------------------------------------------------------------
RECIPE = ROOT / "configs" / "mini-sft.toml"


def toml_text(value):
    """A TOML rendering of a mutated recipe (or garbage where it cannot be one)."""
    lines = []
    for section, table in value.items() if isinstance(value, dict) else []:
        lines.append(f"[{json.dumps(str(section))}]")
        for key, item in (table.items() if isinstance(table, dict) else []):
            lines.append(f"{json.dumps(str(key))} = {toml_value(item)}")
    return "\n".join(lines) + "\n"


def toml_value(item):
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return repr(item) if item == item and abs(item) != float("inf") else "nan"
    if isinstance(item, list):
        return "[" + ", ".join(toml_value(i) for i in item if i is not None) + "]"
    if isinstance(item, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in item.items()
                               if v is not None) + "}"
    return json.dumps("" if item is None else str(item))


@FUZZ
@given(data=st.data())
def test_training_recipe(tmp_path_factory, data):
    import tomllib

    from tinyphi3.train.recipe import load_recipe
    recipe = tomllib.loads(RECIPE.read_text())
    directory = tmp_path_factory.mktemp("recipe")
    path = directory / "recipe.toml"
    if data.draw(st.integers(0, 4)) == 0:
        path.write_bytes(data.draw(mutated_bytes(RECIPE.read_bytes())))
    else:
        path.write_text(toml_text(data.draw(mutated_json(recipe))))

    def load():
        r = load_recipe(path)
        r.model_config(vocab_size=100)
    outcome(load)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    from tinyphi3.data.post_training import generate_dpo, generate_sft
    directory = tmp_path_factory.mktemp("data")
    sft = [c for c in generate_sft(6, seed=0)]
    dpo = [p for p in generate_dpo(6, seed=0)]
    return directory, sft, dpo


@FUZZ
@given(data=st.data())
def test_jsonl_data_files(tiny, data_files, data):
    from tinyphi3.data.documents import read_documents
    from tinyphi3.train.conversations import load_conversations, load_preferences
    directory, sft, dpo = data_files
    tok = load_tokenizer(tiny)
    kind = data.draw(st.sampled_from(["sft", "dpo", "documents"]))
    records = {"sft": sft, "dpo": dpo,
               "documents": [{"text": "A page.", "kind": "textbook"}, {"text": "Another."}]}[kind]
    lines = [json.dumps(data.draw(mutated_json(r))) if data.draw(st.booleans()) else json.dumps(r)
             for r in records]
    text = "\n".join(lines) + "\n"
    if data.draw(st.integers(0, 4)) == 0:
        text = data.draw(mutated_bytes(text.encode())).decode("utf-8", "replace")
    path = directory / f"{kind}-{data.draw(st.integers(0, 10**9))}.jsonl"
    path.write_text(text, encoding="utf-8")
    load = {"sft": lambda: load_conversations(path, tok, 256),
            "dpo": lambda: load_preferences(path, tok, 256),
            "documents": lambda: read_documents(path)}[kind]
    try:
        outcome(load)
    finally:
        path.unlink()


# ---- the same through the command line ----------------------------------------------------------------
CLI_CASES = {
    "rope_scaling is a string": ("config.json", lambda c: {**c, "rope_scaling": "x"}),
    "a billion layers": ("config.json", lambda c: {**c, "num_hidden_layers": 1_000_000_000}),
    "hidden_size is a list": ("config.json", lambda c: {**c, "hidden_size": [64]}),
    "added token id is not a number": ("tokenizer_config.json", lambda c: {
        **c, "added_tokens_decoder": {"x": {"content": "<|end|>"}}}),
    "bos_token is a list": ("tokenizer_config.json", lambda c: {**c, "bos_token": ["<s>"]}),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_the_command_line_says_one_line(tiny, tmp_path, case):
    directory = tmp_path / "ckpt"
    shutil.copytree(tiny, directory)
    name, change = CLI_CASES[case]
    path = directory / name
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    result = subprocess.run([sys.executable, "-m", "tinyphi3.cli", "generate", "--ckpt",
                             str(directory), "--prompt", "Hi", "--max-new-tokens", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


# The cases found by hand before this suite existed, each named (config.json, tokenizer_config.json)
NAMED_CASES = {
    "rope_scaling 'x'": ("config.json", "rope_scaling", "x"),
    "rope_scaling 5": ("config.json", "rope_scaling", 5),
    "rope_scaling [1]": ("config.json", "rope_scaling", [1]),
    "a billion layers": ("config.json", "num_hidden_layers", 1_000_000_000),
    "a huge hidden size": ("config.json", "hidden_size", 2**40),
    "added token id 'x'": ("tokenizer_config.json", "added_tokens_decoder",
                           {"x": {"content": "<|end|>"}}),
    "added token id past the vocabulary": ("tokenizer_config.json", "added_tokens_decoder",
                                           {"100000": {"content": "<|end|>"}}),
    "added token id -1": ("tokenizer_config.json", "added_tokens_decoder",
                          {"-1": {"content": "<|end|>"}}),
    "bos_token a number": ("tokenizer_config.json", "bos_token", 7),
    "eos_token a list": ("tokenizer_config.json", "eos_token", ["<|end|>"]),
    "pad_token a boolean": ("tokenizer_config.json", "pad_token", True),
}


@pytest.mark.parametrize("case", NAMED_CASES)
def test_named_cases_raise_a_tinyphi3_error(tiny, tmp_path, case):
    name, key, value = NAMED_CASES[case]
    directory = tmp_path / "d"
    shutil.copytree(tiny, directory)
    data = json.loads((directory / name).read_text())
    data[key] = value
    (directory / name).write_text(json.dumps(data))
    load = run_model if name == "config.json" else run_tokenizer
    assert outcome(lambda: load(directory)) != "ok"


def test_finite_but_absurd_weights_give_an_error_not_nan_logits(tiny, tmp_path):
    """A flipped exponent bit can make a weight 1e37: finite, so it loads, but the forward pass
    overflows. The model says so instead of returning NaN logits."""
    from tinyphi3.errors import NonFiniteError
    model = Phi3.from_pretrained(tiny)
    model.params["lm_head.weight"][0] = 3e38                 # finite, but a dot product overflows
    with pytest.raises(NonFiniteError, match="NaN or infinite logits"):
        model(np.array([[1, 2, 3]]))


def test_the_cap_catches_a_blow_up():
    """Negative control: an allocation past the cap fails inside `outcome`, as a raw MemoryError."""
    with pytest.raises(MemoryError):
        outcome(lambda: np.ones(MEMORY_CAP // 4 + (1 << 28), np.float64))


def test_a_raw_exception_is_not_an_outcome():
    """Negative control: a loader's bare ValueError fails the test."""
    def broken():
        raise ValueError("invalid literal for int()")
    with pytest.raises(ValueError):
        outcome(broken)


def test_the_valid_inputs_load(tiny, sharded, quantized):
    for directory in (tiny, sharded, quantized):
        assert outcome(lambda: run_model(directory)) == "ok"
    assert outcome(lambda: run_tokenizer(tiny)) == "ok"
    assert outcome(lambda: run_tokenizer(ROOT / "checkpoints" / "small")) == "ok"
    assert preset("tiny").num_hidden_layers == 2
