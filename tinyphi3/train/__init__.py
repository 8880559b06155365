"""Training: the optimizer, the learning-rate schedule and the training loop."""
