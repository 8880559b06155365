"""Exceptions raised by tinyphi3.

Every error a user can cause (bad checkpoint, bad config, bad prompt, missing file) is a subclass
of `TinyPhi3Error`, so the command line can print one clear line and exit non-zero, while code
that uses the API can catch the specific type.
"""


class TinyPhi3Error(Exception):
    """Base class of every error that tinyphi3 raises on purpose."""


class ConfigError(TinyPhi3Error):
    """A configuration is missing a key, has inconsistent sizes or an unknown option."""


class CheckpointError(TinyPhi3Error):
    """A checkpoint directory or file cannot be read as the model it claims to be."""


class CorruptCheckpointError(CheckpointError):
    """A safetensors file is truncated, its header is not valid, or its offsets lie."""


class MissingTensorError(CheckpointError):
    """The checkpoint lacks tensors that the configuration requires."""


class UnexpectedTensorError(CheckpointError):
    """The checkpoint holds tensors that the configuration does not know."""


class ShapeMismatchError(CheckpointError):
    """A tensor's shape differs from the one the configuration implies."""


class UnsupportedDtypeError(CheckpointError):
    """A tensor is stored in a dtype tinyphi3 cannot read or write."""


class TokenizerError(TinyPhi3Error):
    """A tokenizer directory is missing files or holds inconsistent vocabulary."""


class ContextLengthError(TinyPhi3Error):
    """A prompt does not fit the model's context window."""


class InvalidInputError(TinyPhi3Error, ValueError):
    """An argument has the wrong shape, dtype or range (token ids past the vocabulary, say)."""


class NonFiniteError(TinyPhi3Error, ArithmeticError):
    """A forward pass produced NaN or an infinity: weights that overflow float32 (a corrupt
    checkpoint whose values are finite but absurd), or inputs past float32's range."""
