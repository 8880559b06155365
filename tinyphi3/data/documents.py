"""Documents on disk: every stage of the data pipeline reads and writes these two formats.

A document is a dict with a "text" string and any other fields a stage adds ("kind", "score").
The format of a file follows its suffix:

    .jsonl      one JSON object per line, {"text": "...", ...}; blank lines are skipped and the
                other fields are kept. This is what the pipeline writes.
    .txt (and   plain UTF-8 text. A whole file is one document, so a folder of your own texts
    any other)  is fed in as `--input a.txt --input b.txt ...`. To keep several documents in one
                file, put a line that is exactly `<|endoftext|>` between them (the separator the
                token shards use, `tinyphi3.data.shards`).

Errors a user can cause (a missing, empty or binary file, a line that is not JSON or has no
"text") raise `DocumentError`, naming the file and the line.

    docs = read_documents(["web.jsonl", "my_notes.txt"])
    write_documents(docs, "all.jsonl")
"""

import json
from pathlib import Path

from tinyphi3.errors import TinyPhi3Error

SEPARATOR = "<|endoftext|>"     # a .txt line holding only this separates two documents


class DocumentError(TinyPhi3Error):
    """A documents file is missing, empty, not UTF-8 text, or holds a malformed JSONL line."""


def as_document(doc):
    """A document dict from a str or a dict with a "text" string (the dict itself, not a copy)."""
    if isinstance(doc, str):
        return {"text": doc}
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        return doc
    raise DocumentError(f"a document must be a str or a dict with a 'text' string, got {doc!r:.80}")


def _decode(raw, path, line_number):
    if b"\x00" in raw:
        raise DocumentError(f"{path} line {line_number}: a NUL byte, so this looks like a binary "
                            "file; documents must be UTF-8 .txt or .jsonl files")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DocumentError(f"{path} line {line_number}: not UTF-8 text "
                            f"(byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                            "documents must be UTF-8 .txt or .jsonl files") from None


def _lines(path):
    """(line number, text of the line) for each line of a file, read in binary and decoded."""
    try:
        with open(path, "rb") as file:
            for number, raw in enumerate(file, start=1):
                yield number, _decode(raw, path, number)
    except FileNotFoundError:
        raise DocumentError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DocumentError(f"{path} is a directory; give the files in it one by one") from None
    except OSError as err:
        raise DocumentError(f"cannot read {path}: {err.strerror}") from None


def _jsonl_documents(path):
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as err:
            raise DocumentError(f"{path} line {number}: not valid JSON ({err.msg} at column "
                                f"{err.colno})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            got = "no \"text\" field" if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
            raise DocumentError(f"{path} line {number}: expected an object with a \"text\" string, "
                                f"got {got}")
        yield doc


def _text_documents(path):
    lines = []
    for _, line in _lines(path):
        if line.rstrip("\r\n") == SEPARATOR:
            text = "".join(lines).strip()
            if text:
                yield {"text": text}
            lines = []
        else:
            lines.append(line)
    text = "".join(lines).strip()
    if text:
        yield {"text": text}


def iter_documents(paths):
    """Yield the documents of one file or a list of files in order, reading line by line."""
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(path)
        reader = _jsonl_documents if path.suffix == ".jsonl" else _text_documents
        count = 0
        for doc in reader(path):
            count += 1
            yield doc
        if count == 0:
            raise DocumentError(f"{path} is empty: it holds no documents")


def read_documents(paths):
    """The documents of one file or a list of files, as a list of dicts."""
    return list(iter_documents(paths))


def write_documents(documents, path):
    """Write documents (dicts or str) to a .jsonl file (every field) or a .txt file (the texts,
    separated by `<|endoftext|>` lines); returns how many were written."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return write_jsonl((as_document(doc) for doc in documents), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        for doc in documents:
            doc = as_document(doc)
            if SEPARATOR in doc["text"].splitlines():
                raise DocumentError(f"cannot write {path}: a document holds a line "
                                    f"{SEPARATOR!r}, the separator of .txt files; use .jsonl")
            file.write(("\n" + SEPARATOR + "\n" if count else "") + doc["text"].strip() + "\n")
            count += 1
    return count


def write_jsonl(records, path) -> int:
    """Write records (dicts) as JSON lines, UTF-8; returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
