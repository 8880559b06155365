"""The maths of the models, on float arrays (NumPy, or any array module: tinyphi3.nn.arrays).

    layers, activations  RMSNorm, LayerNorm, linear, SiLU, SwiGLU, GEGELU, the GELUs of
                         CLIP and its projector, softmax, masked scatter, the loss
    rope                 RoPE (rotate-half) and LongRoPE's factors and magnitude scaling
    rope_scaling         longer contexts: position interpolation, NTK-aware, YaRN, LongRoPE,
                         each as LongRoPE's factors
    attention            causal / sliding-window / padding masks, grouped-query attention
    flash_attention      the same attention in tiles, with an online softmax (no T x S matrix)
    blocksparse_layout   phi-3-small's block-sparse layout, and what it saves
    blocksparse          block-sparse masks and attention (the reference)
    autograd, gradients  the reverse-mode engine and the backward rule of every layer
    arrays               the array module of an input

Each operation with a faster kernel asks tinyphi3.backends for it first; the lines after that
question are the reference the kernel is proven equal to.
"""
