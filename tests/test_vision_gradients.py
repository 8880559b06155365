"""Phi-3-vision's training gradients against torch autograd: the loss of a random tiny phi3_v
snapshot (REFERENCE-vision §7's tower: crops of 28 pixels, patches of 7, 3 layers of width 16;
a decoder of width 32) and the gradient of every tensor, tower, separators, projector and
decoder, equal those of the independent torch model of tests/phi3v_reference.py (transformers'
CLIPVisionModel and Phi3ForCausalLM, joined by torch code) within 1e-4 at float32; a wrong
backward rule fails the same check (negative control); a frozen tower gets no gradient."""

import numpy as np
import pytest
import torch
from phi3v_reference import random_reference
from test_vision_model import pixels, prompt, write_snapshot

from tinyphi3.models.vision import projector
from tinyphi3.models.vision.phi3v import Phi3V
from tinyphi3.nn import activations
from tinyphi3.nn import gradients as grad
from tinyphi3.nn.autograd import differentiable

TOL = 1e-4
VISION = "model.vision_embed_tokens."
TOWER = VISION + "img_processor.vision_model."
SIZES = [[56, 56], [28, 84]]       # 2 x 2 crops (27 vectors) and 1 x 3 (21), of num_crops = 4
KEY_BIAS = ".self_attn.k_proj.bias"


def batch():
    """Two rows, one image each (the second has a zero-padding crop), labels -100 at the image
    slots and on the first tokens, as vision SFT labels a prompt."""
    ids = np.concatenate([prompt(4, ("img", 1, 27), 9, seed=1), prompt(3, ("img", 2, 21), 16,
                                                                       seed=2)])
    labels = np.where(ids < 0, -100, ids)
    labels[:, :6] = -100
    return ids, labels, pixels(SIZES), np.array(SIZES)


def torch_loss_and_gradients(reference, ids, labels, px, sizes):
    """The mean cross-entropy over the labels that are not -100 (shifted), and each parameter's
    gradient by published name (None where the loss does not depend on it)."""
    reference.zero_grad(set_to_none=True)
    logits = reference.logits(ids, px, torch.tensor(sizes))
    V = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V),
                                             torch.tensor(labels[:, 1:]).reshape(-1),
                                             ignore_index=-100)
    loss.backward()
    modules = {"": reference.decoder, TOWER: reference.clip,
               VISION + "img_projection.": reference.img_projection}
    grads = {prefix + n.removeprefix("vision_model."): p.grad
             for prefix, module in modules.items() for n, p in module.named_parameters()}
    grads.update({VISION + n: getattr(reference, n).grad for n in ("sub_GN", "glb_GN")})
    return loss.item(), {n: None if g is None else g.numpy() for n, g in grads.items()}


def our_loss_and_gradients(model, ids, labels, px, sizes):
    model.zero_grad()
    loss = model.loss(ids, labels, px, sizes)
    loss.backward()
    return float(loss.data), {n: p.grad for n, p in model.named_parameters()}


def relative_errors(ours: dict, theirs: dict) -> dict:
    """|g - g_torch| / |g_torch| (Frobenius norms) of every tensor both give a gradient."""
    return {n: float(np.linalg.norm(g - theirs[n]) / np.linalg.norm(theirs[n]))
            for n, g in ours.items() if g is not None and theirs[n] is not None}


@pytest.fixture(scope="module")
def reference():
    return random_reference(seed=0)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, reference):
    return write_snapshot(tmp_path_factory.mktemp("v"), reference)


def test_loss_and_every_gradient_match_torch(reference, snapshot):
    ours = Phi3V.from_pretrained(snapshot)
    loss, got = our_loss_and_gradients(ours, *batch())
    torch_loss, want = torch_loss_and_gradients(reference, *batch())
    assert set(got) == set(want) == set(reference.published_tensors())
    assert abs(loss - torch_loss) <= 1e-5 * torch_loss
    unused = sorted(n for n, g in want.items() if g is None)     # the tower's last layer
    assert unused and all(".layers.2." in n or "post_layernorm" in n for n in unused)
    assert all(got[n] is None for n in unused)
    errors = relative_errors(got, want)
    key_biases = [n for n in errors if n.endswith(KEY_BIAS)]
    for n in key_biases:        # 0 exactly: q.b shifts a query's scores alike, softmax ignores it
        assert max(np.abs(got[n]).max(), np.abs(want[n]).max()) < 1e-7, n
    errors = {n: e for n, e in errors.items() if n not in key_biases}
    assert len(errors) == len(want) - len(unused) - len(key_biases)
    for part in ("model.layers.1.", TOWER + "embeddings.", "_GN", "img_projection."):
        assert any(part in n for n in errors)                   # every part compared
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, (worst, errors[worst])


def test_the_check_catches_a_wrong_gradient(reference, snapshot, monkeypatch):
    """Negative control: the projector's exact GELU given quick_gelu's derivative."""
    wrong = differentiable(grad.quick_gelu_backward)(activations.gelu_erf)
    monkeypatch.setattr(projector, "gelu_erf", wrong)
    loss, got = our_loss_and_gradients(Phi3V.from_pretrained(snapshot), *batch())
    torch_loss, want = torch_loss_and_gradients(reference, *batch())
    assert abs(loss - torch_loss) <= 1e-5 * torch_loss            # the forward pass is right
    errors = relative_errors(got, want)
    assert errors[VISION + "img_projection.0.weight"] > 10 * TOL          # about 1e-2
    assert errors[TOWER + "embeddings.patch_embedding.weight"] > 10 * TOL
    assert errors["model.layers.0.self_attn.qkv_proj.weight"] <= TOL  # the decoder is untouched


def test_a_frozen_tower_gets_no_gradient_and_the_rest_the_same(snapshot):
    model = Phi3V.from_pretrained(snapshot)
    _, full = our_loss_and_gradients(model, *batch())
    model.freeze(["tower"])
    _, frozen = our_loss_and_gradients(model, *batch())
    for name, g in frozen.items():
        if name.startswith(TOWER):
            assert g is None, name
        else:
            np.testing.assert_allclose(g, full[name], rtol=1e-6, atol=1e-9, err_msg=name)
    model.freeze(["projector", "decoder"])
    _, tower_only = our_loss_and_gradients(model, *batch())
    assert {n for n, g in tower_only.items() if g is not None} == {
        n for n, g in full.items() if n.startswith(TOWER) and g is not None}
    model.freeze()
    assert all(p.requires_grad for _, p in model.named_parameters())
    with pytest.raises(ValueError, match="cannot freeze 'towers'"):
        model.freeze(["towers"])
