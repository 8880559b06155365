"""What a checkpoint is and what it costs: architecture, parameters, bytes, memory; and a fresh
random checkpoint to start from."""

import ast
import math
import tempfile
from pathlib import Path

from tinyphi3.io import checkpoint
from tinyphi3.quant import checkpoint as quant_checkpoint
from tinyphi3.config import preset
from tinyphi3.models.model import Phi3, parameter_shapes
from tinyphi3.quant.q4 import bits_per_weight

Q4_BITS_PER_WEIGHT = 4.5     # 4-bit values plus one fp16 scale per block of 32 weights


def human_bytes(n) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000


def describe_checkpoint(path) -> str:
    """A few lines describing a checkpoint, read from config.json and the safetensors headers."""
    config = checkpoint.load_config(path)
    shapes = parameter_shapes(config)
    index = checkpoint.tensor_index(path)
    index = {n: f for n, f in index.items() if n not in checkpoint.tied_copies(config)}
    qc = quant_checkpoint.quantization_config(path)
    if qc is None:
        checkpoint.check_tensors(index, shapes)
    else:
        checkpoint.check_tensors(index, *quant_checkpoint.expected_tensors(config, qc))
    files = {f.path for f in index.values()}
    on_disk = sum(p.stat().st_size for p in files)
    dtypes = sorted({f.dtype(n) for n, f in index.items()})
    n_params = sum(math.prod(s) for s in shapes.values())
    c = config
    rope = f"RoPE theta {c.rope_theta:g}"
    if c.rope_scaling is not None:
        rope += (f", LongRoPE (original context {c.original_max_position_embeddings}, magnitude "
                 f"{c.longrope_attention_factor:.4f})")
    window = f", sliding window {c.sliding_window}" if c.sliding_window else ""
    kv_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4
    variant = ("phi-3-small decoder (GEGELU, muP; dense attention on one layer in "
               f"{c.dense_attention_every_n_layers}, block-sparse on the others: blocks of "
               f"{c.blocksparse_block_size}, {c.blocksparse_num_local_blocks} local, stride "
               f"{c.blocksparse_vert_stride})" if c.is_phi3small else "Phi-3 decoder")
    rows = [
        ("checkpoint", str(path)),
        ("architecture", f"{variant}: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
                         f"{c.num_attention_heads} heads ({c.num_key_value_heads} KV heads, "
                         f"head dim {c.head_dim}), MLP {c.intermediate_size}, vocab {c.vocab_size}"),
        ("positions", f"context {c.max_position_embeddings} tokens, {rope}{window}"),
        ("parameters", f"{n_params:,} ({human_count(n_params)})"),
        ("on disk", f"{human_bytes(on_disk)} ({', '.join(dtypes)}, {len(files)} file(s))"
                    + ("" if qc is None else
                       f"; 4-bit weights, blocks of {qc['block_size']}, {qc['scheme']} "
                       f"({bits_per_weight(int(qc['block_size']), qc['scheme']):g} bits/weight), "
                       f"norms and biases float32")),
        ("memory", f"fp32 {human_bytes(4 * n_params)} · bf16 {human_bytes(2 * n_params)} · "
                   f"4-bit {human_bytes(n_params * Q4_BITS_PER_WEIGHT / 8)} "
                   f"({Q4_BITS_PER_WEIGHT} bits/weight: 4-bit values + an fp16 scale per 32)"),
        ("KV cache", f"{human_bytes(kv_per_token)} per token at fp32 "
                     f"({human_bytes(kv_per_token * c.max_position_embeddings)} at full context)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def human_count(n) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def package_documentation() -> str:
    """The docstrings of tinyphi3's own modules: English text that ships with the package, used to
    train a starter tokenizer when no corpus is given."""
    texts = []
    for source in sorted(Path(__file__).parent.glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
    return "\n\n".join(texts)


def init_checkpoint(preset_name, out, tokenizer_dir=None, seed=0, dtype="float32"):
    """Write a random `preset_name` model plus a tokenizer (copied, or trained on the package's
    own documentation with a base vocabulary that fits the model's embedding)."""
    from tinyphi3.tokenizers import load_tokenizer
    from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer
    config = preset(preset_name)
    out = Path(out)
    if tokenizer_dir is not None:
        tok = load_tokenizer(tokenizer_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "docs.txt"
            corpus.write_text(package_documentation(), encoding="utf-8")
            base = min(config.vocab_size - 64, 1000)
            tok = train_tokenizer([corpus], Path(tmp) / "tok", base)
    if tok.vocab_size > config.vocab_size:
        raise checkpoint.CheckpointError(f"tokenizer has {tok.vocab_size} tokens but preset "
                                         f"{preset_name} only {config.vocab_size}")
    config = config.replace(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id)
    Phi3(config, seed=seed).save_pretrained(out, dtype=dtype)
    tok.save_pretrained(out)
    return out
