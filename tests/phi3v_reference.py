"""An independent Phi-3-vision for tests, in torch: transformers' own CLIPVisionModel and
Phi3ForCausalLM, joined by the image embedding of REFERENCE-vision §3 transcribed with torch's
reshapes and permutes as the published `image_embedding_phi3_v.py` writes them (generalised to a
tiny tower as §7 says: 24 -> G patches per side, 12 -> g = G / 2). Nothing here calls tinyphi3.

Unlike tinyphi3, it runs the tower on every crop, the zero-padding ones included, and throws
their features away, as the published code does.
"""

import torch
import transformers
from torch import nn

MAX_INPUT_ID = int(1e9)


class Phi3VReference(nn.Module):
    """The published model's structure: `clip` (CLIPVisionModel), `sub_GN`, `glb_GN`,
    `img_projection` (Linear, GELU, Linear), `decoder` (Phi3ForCausalLM)."""

    def __init__(self, clip_config, decoder_config, layer_idx=-2):
        super().__init__()
        C, D = clip_config.hidden_size, decoder_config.hidden_size
        self.clip = transformers.CLIPVisionModel(clip_config)
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, 4 * C))
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, 4 * C))
        self.img_projection = nn.Sequential(nn.Linear(4 * C, D), nn.GELU(), nn.Linear(D, D))
        self.decoder = transformers.Phi3ForCausalLM(decoder_config)
        self.layer_idx = layer_idx
        self.crop = clip_config.image_size
        self.G = clip_config.image_size // clip_config.patch_size

    def published_tensors(self, clip_names="4.x") -> dict:
        """Tensors by the published checkpoint's names (REFERENCE-vision §1.4); the tower's with
        transformers 4's `vision_model.` level, or without it ("5.x")."""
        prefix = "model.vision_embed_tokens."
        tower = prefix + "img_processor." + ("vision_model." if clip_names == "4.x" else "")
        tensors = dict(self.decoder.state_dict())
        tensors.update({tower + n: t for n, t in self.clip.state_dict().items()})
        tensors.update({prefix + "sub_GN": self.sub_GN, prefix + "glb_GN": self.glb_GN})
        tensors.update({prefix + "img_projection." + n: t
                        for n, t in self.img_projection.state_dict().items()})
        return {n: t.detach().clone().contiguous() for n, t in tensors.items()}

    def reshape_hd_patches_2x2merge(self, features):
        """[n, G*G, C] -> [n, g*g, 4C], the published reshape-permute-reshape."""
        n, _, C = features.shape
        g = self.G // 2
        x = features.reshape(n, self.G, self.G, C)
        x = x.reshape(n, g, 2, g, 2, C).permute(0, 1, 3, 2, 4, 5).reshape(n, g * g, 4 * C)
        return x

    def add_image_newline(self, grid):
        """[1, R, W, 4C] -> [1, R*(W+1), 4C] with sub_GN after every row."""
        n, R, _, C4 = grid.shape
        newline = self.sub_GN.expand(n, R, -1, -1)
        return torch.cat([grid, newline], dim=2).reshape(n, -1, C4)

    def hd_feature_transform(self, features, image_sizes):
        """features [N, K+1, G*G, C] -> the "sub_glb" tokens of each image, [n_tok, 4C]."""
        g = self.G // 2
        out = []
        for i, (height, width) in enumerate(image_sizes.tolist()):
            h, w = height // self.crop, width // self.crop
            glb = self.reshape_hd_patches_2x2merge(features[i, :1]).reshape(1, g, g, -1)
            sub = self.reshape_hd_patches_2x2merge(features[i, 1:1 + h * w])
            sub = sub.reshape(1, h, w, g, g, -1).permute(0, 1, 3, 2, 4, 5)
            sub = sub.reshape(1, h * g, w * g, -1)
            tokens = torch.cat([self.add_image_newline(sub), self.glb_GN,
                                self.add_image_newline(glb)], dim=1)
            out.append(tokens[0])
        return out

    @torch.no_grad()
    def forward(self, input_ids, pixel_values=None, image_sizes=None):
        """Logits [B, T, V]: slots -1e9 < id < 0 take the projected vectors in order."""
        return self.logits(input_ids, pixel_values, image_sizes)

    def logits(self, input_ids, pixel_values=None, image_sizes=None):
        """The forward pass, recorded by torch's autograd (for gradient checks)."""
        input_ids = torch.as_tensor(input_ids)
        positions = torch.nonzero((input_ids < 0) & (input_ids > -MAX_INPUT_ID), as_tuple=True)
        V = self.decoder.config.vocab_size
        embeds = self.decoder.model.embed_tokens(input_ids.clamp(0, V - 1))
        if pixel_values is not None:
            pixel_values = torch.as_tensor(pixel_values)
            N, K1 = pixel_values.shape[:2]
            states = self.clip(pixel_values.flatten(0, 1), output_hidden_states=True).hidden_states
            features = states[self.layer_idx][:, 1:]
            features = features.reshape(N, K1, features.shape[1], features.shape[2])
            tokens = self.hd_feature_transform(features, torch.as_tensor(image_sizes))
            vectors = self.img_projection(torch.cat(tokens))
            embeds = embeds.index_put(positions, vectors)
        return self.decoder(inputs_embeds=embeds).logits


def random_reference(seed=0, layer_idx=-2):
    """A tiny model (REFERENCE-vision §7: S=28, P=7, C=16, 3 layers; decoder 32 wide, 2 layers,
    LongRoPE from 32 positions) with random weights, its norms and biases moved off 1 and 0."""
    torch.manual_seed(seed)
    clip = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
        image_size=28, patch_size=7, layer_norm_eps=1e-5, hidden_act="quick_gelu")
    decoder = transformers.Phi3Config(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        original_max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        initializer_range=0.1,                 # logits of size ~1, where a wrong vector shows
        rope_scaling={"type": "longrope", "short_factor": [1.0, 1.2, 1.5, 2.0],
                      "long_factor": [1.5, 3.0, 6.0, 12.0]})
    model = Phi3VReference(clip, decoder, layer_idx).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith((".bias", "_GN")):
                p.copy_(0.3 * torch.randn_like(p))
    return model
