"""The model variants by config.json's model_type: each a module with the functions listed in
tinyphi3.models.phi3, behind the one model class tinyphi3.models.model.Phi3."""

from tinyphi3.errors import ConfigError
from tinyphi3.models import phi3, phi3_small

VARIANTS = {"phi3": phi3, "phi3small": phi3_small}


def variant_for(config):
    """The module of config.model_type."""
    try:
        return VARIANTS[config.model_type]
    except KeyError:
        raise ConfigError(f"config: model_type {config.model_type!r} is not supported "
                          f"(supported: {', '.join(map(repr, VARIANTS))})") from None
