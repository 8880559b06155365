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
