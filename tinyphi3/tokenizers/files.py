"""Reading the files of a tokenizer directory and of a training corpus, with one clear error."""

import json
from pathlib import Path

from tinyphi3.errors import TokenizerError


def read_json(file, required=True):
    """A tokenizer file's JSON object, or None when it is missing and not required."""
    if not file.is_file():
        if required:
            raise TokenizerError(f"missing {file}: a Phi-3 tokenizer directory needs it")
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TokenizerError(f"cannot read {file} as JSON: {err}") from err
    if not isinstance(data, dict):
        raise TokenizerError(f"{file} must hold a JSON object")
    return data


def training_files(text_files) -> list:
    """One path or several, as Paths, each an existing file (else TokenizerError)."""
    files = [Path(f) for f in ([text_files] if isinstance(text_files, (str, Path)) else text_files)]
    if not files:
        raise TokenizerError("no training files given")
    for file in files:
        if not file.is_file():
            raise TokenizerError(f"training file {file} does not exist")
    return files


def _where(file, key):
    return f"{file}: {key}" if file else key


def check_token_entry(value, file, key, allow_none=True):
    """A special token as a config writes it: a string, {"content": string, ...}, or null."""
    if value is None and allow_none:
        return
    if isinstance(value, str):
        return
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return
    raise TokenizerError(f"{_where(file, key)} must be a token string or "
                         f"{{\"content\": string}}, got {value!r}")


def check_added_tokens_decoder(decoder, file):
    """{"id": {"content": str, "lstrip": bool, ...}} with non-negative integer ids."""
    if decoder is None:
        return
    if not isinstance(decoder, dict):
        raise TokenizerError(f"{file}: added_tokens_decoder must map ids to tokens (a JSON "
                             f"object), got {type(decoder).__name__}")
    for key, entry in decoder.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise TokenizerError(f"{file}: added_tokens_decoder has the key {key!r}; keys must "
                                 f"be token ids (non-negative integers)")
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) \
                or not entry["content"]:
            raise TokenizerError(f"{file}: added_tokens_decoder[{key}] must be an object with a "
                                 f"non-empty string 'content', got {entry!r}")
        for flag in ("lstrip", "rstrip", "special", "normalized", "single_word"):
            if flag in entry and not isinstance(entry[flag], bool):
                raise TokenizerError(f"{file}: added_tokens_decoder[{key}].{flag} must be true "
                                     f"or false, got {entry[flag]!r}")


def check_flags(config, file, names):
    for name in names:
        if config.get(name) is not None and not isinstance(config[name], bool):
            raise TokenizerError(f"{file}: {name} must be true or false, got {config[name]!r}")


def check_chat_template(template, file):
    if template is None or isinstance(template, str):
        return
    if isinstance(template, list) and all(isinstance(t, dict) for t in template):
        return
    raise TokenizerError(f"{file}: chat_template must be a string, got {template!r}")
