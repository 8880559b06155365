"""Training by our own autograd.

    recipe         TOML recipes (configs/) and their settings
    optim          AdamW, the warm-up + cosine schedule, gradient clipping
    objectives     what a step optimises: pre-training, SFT, DPO, distillation,
                   vision SFT
    conversations  SFT conversations and DPO pairs tokenized, loss-masked and batched
    images         pictures with questions or captions for phi-3-vision, the same way (pixels)
    dpo            the DPO loss against a frozen reference
    distill        the KL loss to a frozen teacher's next-token distributions
    loop           the Trainer: steps, evaluation, checkpoints, resume, Ctrl-C
    longrope_search  LongRoPE's evolutionary search for the long factors
"""
