"""Training by our own autograd.

    recipe         TOML recipes (configs/) and their settings
    optim          AdamW, the warm-up + cosine schedule, gradient clipping
    objectives     what a step optimises: pre-training, SFT, DPO
    conversations  SFT conversations and DPO pairs tokenized, loss-masked and batched
    dpo            the DPO loss against a frozen reference
    loop           the Trainer: steps, evaluation, checkpoints, resume, Ctrl-C
"""
