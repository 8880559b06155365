"""Parity with the independent reference: transformers.Phi3ForCausalLM on random tiny models
that transformers itself writes to disk."""

import json

import numpy as np
import pytest
import torch
import transformers

from tinyphi3.inference.generate import generate, next_token_logits
from tinyphi3.models.model import Phi3

TOL = 1e-4
V = 211


def hf_model(tmp_path, seed=0, shard_size=None, dtype=None, **overrides):
    """A random transformers Phi-3, saved by transformers; returns (torch model, directory)."""
    kwargs = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                  original_max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = transformers.Phi3ForCausalLM(transformers.Phi3Config(**kwargs)).eval()
    with torch.no_grad():                      # make norms non-trivial so they are tested too
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.2)
    directory = tmp_path / "hf"
    save_kwargs = {"max_shard_size": shard_size} if shard_size else {}
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(directory, **save_kwargs)
    return model.float(), directory


def rewrite_as_published(directory, rope_type_name):
    """Turn transformers 5's `rope_parameters` into the layout of published snapshots
    (`rope_theta` + `rope_scaling` with `type`), e.g. with the old type name "su"."""
    path = directory / "config.json"
    d = json.loads(path.read_text())
    params = d.pop("rope_parameters")
    d["rope_theta"] = params["rope_theta"]
    d["original_max_position_embeddings"] = params["original_max_position_embeddings"]
    d["rope_scaling"] = {"type": rope_type_name, "short_factor": params["short_factor"],
                         "long_factor": params["long_factor"]}
    path.write_text(json.dumps(d))


def hf_logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(torch.tensor(ids), **kwargs).logits.float().numpy()


LONGROPE = {"type": "longrope", "short_factor": [1.0 + 0.15 * i for i in range(8)],
            "long_factor": [1.0 + 4.0 * i for i in range(8)]}

CASES = {
    "mha": {},
    "gqa": {"num_key_value_heads": 2},
    "mqa": {"num_key_value_heads": 1},
    "sliding_window": {"sliding_window": 7},
    "longrope": {"rope_scaling": LONGROPE, "original_max_position_embeddings": 16},
    "longrope_explicit_factor": {"rope_scaling": {**LONGROPE, "attention_factor": 1.3},
                                 "original_max_position_embeddings": 16},
    "partial_rotary": {"partial_rotary_factor": 0.5, "rope_scaling": {
        "type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6],
        "long_factor": [2.0, 3.0, 5.0, 9.0]}, "original_max_position_embeddings": 16},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("T", [5, 40])
def test_logits_match_transformers(tmp_path, case, T):
    """Max |Δ logits| <= 1e-4 at fp32; T=40 is past the LongRoPE original length (16) and the
    sliding window (7), T=5 below both."""
    model, directory = hf_model(tmp_path, **CASES[case])
    ours = Phi3.from_pretrained(directory)
    ids = np.random.default_rng(T).integers(0, V, size=(2, T))
    np.testing.assert_allclose(ours(ids), hf_logits(model, ids), atol=TOL, rtol=0)


@pytest.mark.parametrize("type_name", ["su", "longrope"])
def test_published_config_layout_matches_transformers(tmp_path, type_name):
    """Published snapshots write rope_theta + rope_scaling (early ones with type "su"); the model
    they describe is the one transformers builds from its own layout."""
    model, directory = hf_model(tmp_path, **CASES["longrope"])
    rewrite_as_published(directory, type_name)
    ours = Phi3.from_pretrained(directory)
    ids = np.random.default_rng(7).integers(0, V, size=(1, 30))
    np.testing.assert_allclose(ours(ids), hf_logits(model, ids), atol=TOL, rtol=0)


def test_sharded_bf16_checkpoint_matches_transformers(tmp_path):
    """A bf16 snapshot in several shards with an index, as published snapshots are."""
    model, directory = hf_model(tmp_path, shard_size="40KB", dtype=torch.bfloat16,
                                num_key_value_heads=2)
    assert (directory / "model.safetensors.index.json").is_file()
    assert len(list(directory.glob("model-*.safetensors"))) > 1
    ours = Phi3.from_pretrained(directory)
    ids = np.random.default_rng(0).integers(0, V, size=(1, 24))
    np.testing.assert_allclose(ours(ids), hf_logits(model, ids), atol=TOL, rtol=0)


@pytest.mark.parametrize("case", ["gqa", "sliding_window"])
def test_padded_batch_matches_transformers(tmp_path, case):
    """Left-padded prompts of different lengths with a mask and position ids from the mask, as
    transformers' generate builds them."""
    model, directory = hf_model(tmp_path, **CASES[case])
    ours = Phi3.from_pretrained(directory)
    rng = np.random.default_rng(1)
    ids = rng.integers(3, V, size=(3, 12))
    mask = np.ones_like(ids)
    mask[0, :5] = 0
    mask[1, :1] = 0
    ids[mask == 0] = 0
    position_ids = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    ref = hf_logits(model, ids, attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(position_ids))
    got = ours(ids, attention_mask=mask)
    valid = mask.astype(bool)
    np.testing.assert_allclose(got[valid], ref[valid], atol=TOL, rtol=0)


def greedy_transformers(model, prompt, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0, min_new_tokens=n)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("case", ["mha", "gqa", "sliding_window", "longrope"])
def test_greedy_continuation_matches_transformers(tmp_path, case):
    """32 greedy tokens with the KV cache equal transformers' generate; for LongRoPE the prompt
    (10) is below the original length (16) and generation crosses it, so the cache must be
    recomputed with the long factors on the way."""
    model, directory = hf_model(tmp_path, **CASES[case])
    ours = Phi3.from_pretrained(directory)
    prompt = np.random.default_rng(2).integers(3, V, size=10).tolist()
    got = list(generate(ours, prompt, max_new_tokens=32))
    assert got == greedy_transformers(model, prompt, 32)


def test_longrope_cache_is_recomputed_when_crossing_the_original_length(tmp_path):
    """Step by step from 10 to 24 tokens (original length 16): every next-token distribution
    equals transformers' full forward pass on the same tokens, which uses one factor set for the
    whole sequence. A cache kept across the boundary (mixing short-factor keys with long-factor
    queries) would not: shown as the negative control."""
    model, directory = hf_model(tmp_path, **CASES["longrope"])
    ours = Phi3.from_pretrained(directory)
    ids = np.random.default_rng(4).integers(3, V, size=24).tolist()
    cache = ours.new_cache(1)
    ours(np.array([ids[:10]]), cache=cache)
    stale = ours.new_cache(1)
    ours(np.array([ids[:10]]), cache=stale)
    for n in range(11, 25):
        logits, cache = next_token_logits(ours, ids[:n], cache)
        reference = hf_logits(model, [ids[:n]])[0, -1]
        np.testing.assert_allclose(logits, reference, atol=TOL, rtol=0)
        stale_logits = ours(np.array([[ids[n - 1]]]), cache=stale)[0, -1]
        if n == 17:
            assert np.abs(stale_logits - reference).max() > 10 * TOL


def test_tinyphi3_checkpoint_loads_in_transformers(tmp_path):
    """What tinyphi3 writes (bf16, sharded, both config layouts) transformers reads, with the
    same logits."""
    ours = Phi3(Phi3.from_pretrained(hf_model(tmp_path, **CASES["longrope"])[1]).config, seed=3)
    ids = np.random.default_rng(3).integers(0, V, size=(1, 30))
    for layout in ("rope_scaling", "rope_parameters"):
        directory = tmp_path / layout
        ours.save_pretrained(directory, dtype="float32", max_shard_bytes=60_000,
                             config_layout=layout)
        theirs = transformers.Phi3ForCausalLM.from_pretrained(directory).eval()
        np.testing.assert_allclose(ours(ids), hf_logits(theirs, ids), atol=TOL, rtol=0)
