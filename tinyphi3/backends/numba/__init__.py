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
  a 4-bit model instead lets them spin for about 40 microseconds (`spin_briefly_for_decoding`).
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

DECODING_SPIN_COUNT = "5000"   # GOMP_SPINCOUNT: about 40 microseconds of spinning here (measured:
#                                a thread left idle for 40 us more than that had gone to sleep)


def spin_briefly_for_decoding() -> bool:
    """Let Numba's idle threads spin briefly before they sleep (OMP_WAIT_POLICY=ACTIVE with
    GOMP_SPINCOUNT=5000), when a 4-bit model is loaded and Numba has not started its threads and
    the user chose no policy. Decoding opens ~160 parallel loops per token a few microseconds
    apart and ~25 microseconds apart between layers, and waking a sleeping thread for each costs
    ~30 microseconds and the loop's balance: phi-3-mini's 4-bit decode on an idle 2-core Xeon
    took 89.0 ms per token with a spin count of 3000 (~100 sleeps per token) and 82.3 ms with
    5000 (~40), against 97 ms with threads that sleep at once. The cost, measured the same day
    with another busy process sharing the two cores: 176 against 170 ms per token (3000) and 162
    with sleeping threads; a training step of the study's model 7% slower at 3000 (training never
    loads a 4-bit model, so it keeps sleeping threads). Returns whether the policy was set."""
    from numba.np.ufunc import parallel
    if _POLICY_CHOSEN_BY_USER or getattr(parallel, "_is_initialized", False):
        return False
    os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
    os.environ.setdefault("GOMP_SPINCOUNT", DECODING_SPIN_COUNT)
    return True


MMAP_THRESHOLD = 256 << 20     # bytes: blocks up to this size come from malloc's heap
TRIM_THRESHOLD = 512 << 20     # bytes of free heap malloc keeps before it returns any
_MALLOC_TUNED = False          # True once keep_large_blocks_for_reuse has set them


def keep_large_blocks_for_reuse() -> bool:
    """Tell glibc's malloc to serve blocks of up to 256 MB from its heap and to keep up to 512 MB
    freed there, when a 4-bit model is loaded and the user set no malloc tunable. Returns whether
    it did.

    A 4-bit prefill allocates and frees tens of blocks of 10-17 MB per layer (a 256-token chunk's
    products, attention scores, the cache's keys as floats). By default glibc maps each such
    block fresh from the system and unmaps it when freed, and the kernel zeroes every new page:
    `clear_page_erms` was the top symbol of a profile. 512 tokens of phi-3-mini (2 cores, Xeon)
    took 61-72 tokens/s before and 74-77 after; the peak resident memory was unchanged (2.51
    GB): the freed blocks are reused, not added to."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if sys.platform != "linux" or any(name in os.environ for name in (
            "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt           # this process's C library
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    _MALLOC_TUNED = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                     and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    return _MALLOC_TUNED


def give_back_kept_blocks() -> None:
    """Return to the system the free heap that keep_large_blocks_for_reuse keeps (glibc's
    malloc_trim), once a prompt is in the cache: its activations were reused from one layer to
    the next, and would otherwise stay resident through the decoding that follows while the
    cache fills. A no-op where the tuning was not set."""
    if _MALLOC_TUNED:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)


def forget_stale_machine_code(modules) -> bool:
    """Empty the disk cache of every cached kernel of `modules` when any of their source files
    changed since the cache was written; returns whether it did.

    Numba checks a cached function against its own file's time stamp only, but kernels here
    inline functions of other files (the decoding layer of decode.py is made of q4.py's and
    fused.py's; q4.py's attention uses fused.py's exp32). After an edit or an upgrade of one
    file, the others' cached machine code would still run the old version of what they inlined.
    A stamp of all the files, kept beside the cache, catches that."""
    from numba.core.dispatcher import Dispatcher
    cached = [f for m in modules for f in vars(m).values()
              if isinstance(f, Dispatcher) and f._cache.__class__.__name__ != "NullCache"]
    if not cached:
        return False
    stamp = repr(sorted((os.path.basename(m.__file__), os.stat(m.__file__).st_mtime_ns,
                         os.stat(m.__file__).st_size) for m in modules))
    path = os.path.join(cached[0]._cache.cache_path, "tinyphi3-kernels.stamp")
    try:
        with open(path) as f:
            if f.read() == stamp:
                return False
    except OSError:
        pass
    for function in cached:
        function._cache.flush()
    try:
        with open(path, "w") as f:
            f.write(stamp)
    except OSError:                          # a read-only cache: Numba compiles in memory then
        pass
    return True


def kernels() -> dict:
    """Every kernel of this backend, by the name of the operation it computes."""
    from tinyphi3.backends.numba import blocksparse, decode, flash, fused, q4
    forget_stale_machine_code((blocksparse, decode, flash, fused, q4))
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
