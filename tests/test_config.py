"""Configuration: presets, both config.json layouts, and named errors for inconsistent sizes."""

import json

import pytest
import transformers

from tinyphi3.config import PRESETS, Phi3Config, preset
from tinyphi3.errors import ConfigError


def test_presets_carry_the_report_values():
    mini = preset("phi-3-mini-4k")
    assert (mini.hidden_size, mini.num_hidden_layers, mini.num_attention_heads,
            mini.vocab_size, mini.head_dim) == (3072, 32, 32, 32064, 96)
    long = preset("phi-3-mini-128k")
    assert long.max_position_embeddings == 131072 and long.original_max_position_embeddings == 4096
    assert len(long.rope_scaling["long_factor"]) == len(long.rope_scaling["short_factor"]) == 48
    medium = preset("phi-3-medium-4k")
    assert (medium.hidden_size, medium.num_hidden_layers, medium.num_attention_heads,
            medium.num_key_value_heads) == (5120, 40, 40, 10)
    for name in PRESETS:
        preset(name).validate()


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("layout", ["rope_scaling", "rope_parameters"])
def test_round_trip_through_both_layouts(name, layout):
    config = preset(name)
    again = Phi3Config.from_dict(json.loads(json.dumps(config.to_dict(layout))))
    assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("layout", ["rope_scaling", "rope_parameters"])
def test_transformers_reads_what_we_write(tmp_path, name, layout):
    config = preset(name)
    config.save(tmp_path / "config.json", layout)
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert theirs.model_type == "phi3"
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "vocab_size", "max_position_embeddings", "sliding_window"):
        assert getattr(theirs, key) == getattr(config, key), key
    rope = theirs.rope_parameters
    assert rope["rope_theta"] == config.rope_theta
    if config.rope_scaling is not None:
        assert rope["rope_type"] == "longrope"
        assert list(rope["long_factor"]) == list(config.rope_scaling["long_factor"])


def test_reads_the_old_su_name_and_transformers5_layout():
    factors = {"short_factor": [1.0] * 8, "long_factor": [2.0] * 8}
    old = Phi3Config.from_dict({"hidden_size": 64, "num_attention_heads": 4,
                                "max_position_embeddings": 256,
                                "original_max_position_embeddings": 32,
                                "rope_theta": 500.0, "rope_scaling": {"type": "su", **factors}})
    new = Phi3Config.from_dict({"hidden_size": 64, "num_attention_heads": 4,
                                "max_position_embeddings": 256,
                                "rope_parameters": {"rope_type": "longrope", "rope_theta": 500.0,
                                                    "original_max_position_embeddings": 32,
                                                    "factor": 8.0, **factors}})
    assert old.rope_scaling["type"] == new.rope_scaling["type"] == "longrope"
    assert old.to_dict() == new.to_dict()
    assert old.rope_theta == 500.0 and old.original_max_position_embeddings == 32


@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": 100, "num_attention_heads": 3}, "not divisible by num_attention_heads"),
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, "not divisible by num_key_value_heads"),
    ({"vocab_size": 0}, "vocab_size must be a positive integer"),
    ({"rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}},
     "must have rotary_dim/2"),
    ({"rope_scaling": {"type": "yarn", "factor": 2.0}}, "rope_scaling type 'yarn'"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"model_type": "llama"}, "model_type 'llama'"),
    ({"sliding_window": -3}, "sliding_window"),
])
def test_inconsistent_configs_raise_config_error(changes, message):
    base = preset("tiny").to_dict()
    base.update(changes)
    with pytest.raises(ConfigError, match=message):
        Phi3Config.from_dict(base)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Phi3Config.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Phi3Config.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text('{"hidden_size": "big"}')
    with pytest.raises(ConfigError, match="hidden_size"):
        Phi3Config.from_json_file(tmp_path / "config.json")
