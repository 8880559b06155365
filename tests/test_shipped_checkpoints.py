"""The checkpoints this repository ships: small, in the Hugging Face layout, and read by
transformers with the same logits and the same token ids as tinyphi3."""

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from tinyphi3 import Phi3, Tokenizer
from tinyphi3.io.safetensors import SafetensorsFile

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["mini-base", "mini", "mini8-base", "wide-base", "mini-long"]
MAX_BYTES = {"wide-base": 60e6}     # 27.5 M parameters in bf16; the others <= 30 MB


@pytest.mark.parametrize("name", SHIPPED)
def test_layout_size_and_dtype(name):
    directory = ROOT / "checkpoints" / name
    for required in ("config.json", "model.safetensors", "tokenizer.model",
                     "tokenizer_config.json", "README.md"):
        assert (directory / required).is_file(), required
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    assert size <= MAX_BYTES.get(name, 30e6), f"{name} is {size / 1e6:.1f} MB"
    weights = SafetensorsFile(directory / "model.safetensors")
    assert {weights.dtype(n) for n in weights.keys()} == {"BF16"}


@pytest.mark.parametrize("name", SHIPPED)
def test_transformers_reads_it_with_the_same_logits_and_ids(name):
    directory = ROOT / "checkpoints" / name
    ours, tok = Phi3.from_pretrained(directory), Tokenizer.from_pretrained(directory)
    theirs = transformers.Phi3ForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    their_tok = transformers.AutoTokenizer.from_pretrained(directory)
    text = "Question:\nWhat is 27 + 48?\nAnswer: 27 + 48: 7 + 8 = 15, write 5 carry 1;"
    ids = tok.encode(text)
    assert ids == their_tok.encode(text)
    assert max(ids) < tok.vocab_size <= ours.config.vocab_size
    with torch.no_grad():
        reference = theirs(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(ours(np.array([ids])), reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", SHIPPED)
def test_its_tokenizer_follows_the_phi3_layout(name):
    tok = Tokenizer.from_pretrained(ROOT / "checkpoints" / name)
    base = tok.base_vocab_size
    specials = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>",
                "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>",
                "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]
    assert [tok.token_to_id(s) for s in specials] == list(range(base, base + 11))


def shipped_texts():
    """What the shipped models were trained on and are asked: post-training conversations,
    textbook pages, web-like pages, and code with runs of spaces, tabs and indentation."""
    from tinyphi3.data.post_training import generate_dpo, generate_sft
    from tinyphi3.data.textbooks import generate_textbooks
    from tinyphi3.data.web import generate_web
    texts = [m["content"] for c in generate_sft(300, seed=11) for m in c["messages"]]
    texts += [p["chosen"] for p in generate_dpo(100, seed=12)]
    texts += list(generate_textbooks(40, seed=13))
    texts += [page["text"] for page in generate_web(60, seed=14)]
    texts += ["x  y", "end.  Two", "def f(x):\n    if x:\n        return  x\n\treturn 0",
              "a" + " " * 33 + "b", "  two leading spaces", "trailing   "]
    return texts


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_ids_are_those_of_the_sentencepiece_rule_too(name):
    """The shipped vocabularies (trained here) hold no whitespace-run piece and their scores fall
    as their ids rise, so ranking merges by id (transformers' rule, tinyphi3's now) and by score
    (the `sentencepiece` library's, tinyphi3's before) give the same ids: the shipped models see
    what they were trained on."""
    import sentencepiece as spm

    from tinyphi3.tokenizers.sentencepiece_bpe import SPACE, bpe_only_model
    directory = ROOT / "checkpoints" / name
    tok = Tokenizer.from_pretrained(directory)
    sp = spm.SentencePieceProcessor(model_proto=bpe_only_model(
        (directory / "tokenizer.model").read_bytes()))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert not [p for p in pieces if len(p) > 1 and set(p) == {SPACE}]
    texts = [t for t in shipped_texts() if isinstance(t, str) and t]
    assert len(texts) > 500
    for text in texts:
        by_score = sp.encode(text if text.startswith(" ") else " " + text)
        assert tok.encode(text, add_special_tokens=False) == by_score, text


CHAT_MODELS = [name for name in SHIPPED if not name.endswith("-base")]


@pytest.mark.parametrize("name", CHAT_MODELS)
def test_chat_model_renders_and_stops_like_transformers(name):
    """The chat template gives the same text and ids in transformers, and generation_config.json
    stops at <|end|> as the chat format needs."""
    import json
    directory = ROOT / "checkpoints" / name
    tok = Tokenizer.from_pretrained(directory)
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    chat = [{"role": "system", "content": "You are mini."},
            {"role": "user", "content": "What is 27 + 48?"},
            {"role": "assistant", "content": "27 + 48 = 75. The answer is 75."},
            {"role": "user", "content": "Where does Veska live?"}]
    for prompt in (True, False):
        text = theirs.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=False)
        ids = theirs.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=True,
                                         return_dict=False)
        assert tok.apply_chat_template(chat, add_generation_prompt=prompt) == text
        assert tok.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=True) == ids
    generation = json.loads((directory / "generation_config.json").read_text())
    assert tok.token_to_id("<|end|>") in generation["eos_token_id"]
    config = transformers.GenerationConfig.from_pretrained(directory)
    assert tok.token_to_id("<|end|>") in config.eos_token_id


def test_mini_long_is_read_by_transformers_on_both_sides_of_the_switch():
    """checkpoints/mini-long has the published 128K layout (LongRoPE short and long factors,
    original context 512, 4,096 in all) and transformers gives its logits for a held-out
    passkey document of 2,048 tokens (past 512: the long factors) and for its first 400 (the
    short factors)."""
    import json

    from tinyphi3.evaluation.passkey import passkey_prompts
    directory = ROOT / "checkpoints" / "mini-long"
    config = json.loads((directory / "config.json").read_text())
    scaling = config["rope_scaling"]
    assert scaling["type"] == "longrope" and config["original_max_position_embeddings"] == 512
    assert config["max_position_embeddings"] == 4096
    assert len(scaling["short_factor"]) == len(scaling["long_factor"]) == 16
    assert scaling["long_factor"] != scaling["short_factor"]
    ours, tok = Phi3.from_pretrained(directory), Tokenizer.from_pretrained(directory)
    theirs = transformers.Phi3ForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    (ids, _), = passkey_prompts(tok, 2048, 0.5, 1, seed=5)
    assert len(ids) > 2000
    for T in (len(ids), 400):
        with torch.no_grad():
            reference = theirs(torch.tensor([ids[:T]])).logits.numpy()
        np.testing.assert_allclose(ours(np.array([ids[:T]])), reference, atol=2e-4, rtol=0)


def test_small_is_a_phi3small_checkpoint_that_chats():
    """checkpoints/small: phi-3-small's published config layout and tensor names, bf16, <= 30 MB,
    its tiktoken-style tokenizer; a greedy reply in the chat format closes with <|end|>.
    (transformers has no phi-3-small: tests/test_phi3_small.py checks the code against an
    independent torch implementation instead.)"""
    import json

    from tinyphi3.inference.generate import generate
    from tinyphi3.tokenizers import load_tokenizer
    from tinyphi3.tokenizers.tiktoken_bpe import TiktokenTokenizer
    directory = ROOT / "checkpoints" / "small"
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "phi3small" and "ff_intermediate_size" in config
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    assert size <= 30e6
    weights = SafetensorsFile(directory / "model.safetensors")
    assert {weights.dtype(n) for n in weights.keys()} == {"BF16"}
    assert "model.layers.0.self_attn.query_key_value.weight" in weights.keys()
    model, tok = Phi3.from_pretrained(directory), load_tokenizer(directory)
    assert isinstance(tok, TiktokenTokenizer) and model.config.is_phi3small
    ids = tok.apply_chat_template([{"role": "user", "content": "Hello!"}], tokenize=True)
    end = tok.token_to_id("<|end|>")
    reply = list(generate(model, ids, max_new_tokens=100, stop_token_ids=(), vocab_size=tok.vocab_size))
    assert end in reply
