"""The numba backend: fused, parallel CPU kernels beside the references they equal.

    fused        training's elementwise work: RMSNorm, the SwiGLU gate, RoPE, the masked softmax,
                 the cross-entropy, AdamW, and their backward rules (tinyphi3/nn)
    blocksparse  phi-3-small's block-sparse attention, visiting only the active blocks
    flash        FlashAttention's tiled forward and backward for training (no [T, S] matrix)
    q4           4-bit weights times 8-bit activations, the 8-bit KV cache (tinyphi3/quant)

Each kernel computes what its reference computes, faster: fused (one pass over memory instead of
several) and parallel over rows (both cores, where NumPy's elementwise work runs on one).
tinyphi3.backends hands them float32 NumPy arrays only.

Importing this package (which tinyphi3.backends does the first time a numba kernel is asked for)
sets two environment variables, each only when the user has not set it and Numba has not started:

- OMP_WAIT_POLICY=PASSIVE: Numba's threads sleep when idle. By default they spin after each
  kernel and take the cores from NumPy's BLAS threads, which made a training step 1.5x slower on a
  2-core machine. (Spinning would also save the wake-up below when generating text on an idle
  machine, about 10% of phi-3-mini's 4-bit decode; on a busy one it made decoding up to 4 times
  slower, so threads sleep there too.) Child processes inherit the choice. A process that loads
  a 4-bit model instead lets them spin for about 30 microseconds (`spin_briefly_for_decoding`).
- NUMBA_CPU_FEATURES gains "-prefer-256-bit" on CPUs with AVX-512: LLVM otherwise stops at 256-bit
  vectors on Intel CPUs, which left the 4-bit matrix-vector kernel 20% slower here.

Waking a sleeping thread costs about 60 microseconds here: more than a row-wise kernel on one
token's activations takes in all. Such small calls (fewer than SERIAL_BELOW elements, as when
decoding a token) run on the calling thread alone (`threads.threads_for`). Numba's thread count
follows NUMBA_NUM_THREADS (default: all cores).
"""

import os
import sys


def configure_environment() -> None:
    """Set OMP_WAIT_POLICY and NUMBA_CPU_FEATURES as described above (before Numba starts)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")    # read when Numba starts its threads
    if "NUMBA_CPU_FEATURES" in os.environ or "numba" in sys.modules:
        return
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
    except (ImportError, RuntimeError):
        return
    if features.get("avx512f"):
        os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"


_POLICY_CHOSEN_BY_USER = "OMP_WAIT_POLICY" in os.environ   # (or by a parent process)
configure_environment()

DECODING_SPIN_COUNT = "3000"   # GOMP_SPINCOUNT: about 30 microseconds of spinning, by libgomp's
#                                estimate of 100,000 spins per millisecond


def spin_briefly_for_decoding() -> bool:
    """Let Numba's idle threads spin briefly before they sleep (OMP_WAIT_POLICY=ACTIVE with
    GOMP_SPINCOUNT=3000), when a 4-bit model is loaded and Numba has not started its threads and
    the user chose no policy. Decoding opens ~160 parallel loops per token a few microseconds
    apart, and waking a sleeping thread for each cost phi-3-mini 14% of its 4-bit decode speed
    (9.19 against 10.48 tokens/s on an idle 2-core Xeon); a thread that spins 30 microseconds
    is still there for the next. The cost, measured the same day: with another busy process on
    one of the two cores, 5.34 against 5.65 tokens/s; a training step of the study's model 7%
    slower (training never loads a 4-bit model, so it keeps sleeping threads). Returns whether
    the policy was set."""
    from numba.np.ufunc import parallel
    if _POLICY_CHOSEN_BY_USER or getattr(parallel, "_is_initialized", False):
        return False
    os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
    os.environ.setdefault("GOMP_SPINCOUNT", DECODING_SPIN_COUNT)
    return True

def kernels() -> dict:
    """Every kernel of this backend, by the name of the operation it computes."""
    from tinyphi3.backends.numba import blocksparse, decode, flash, fused, q4
    ops = {name: getattr(fused, name) for name in (
        "rms_norm", "rms_norm_backward", "silu_and_mul", "silu_and_mul_backward", "apply_rope",
        "rope_backward", "masked_softmax_", "softmax_backward_", "causal_lm_loss",
        "causal_lm_loss_backward", "adamw_update", "embedding_backward")}
    ops.update(blocksparse_prefill=blocksparse.blocksparse_prefill,
               blocksparse_decode=blocksparse.blocksparse_decode,
               flash_attention_forward=flash.flash_attention_forward,
               flash_attention_backward=flash.flash_attention_backward,
               q4_linear=q4.q4_linear, quantize_vectors=q4.quantize_vectors,
               quantize_activations=q4.quantize_activations,
               int8_attention_decode=q4.attention_decode,
               q4_decode_layer=decode.fused_decode_layer)
    return ops
