"""Prompt files: the captions a text-to-image evaluation generates from, in file order.

Three formats, chosen by the file's suffix:
- `.csv` / `.tsv`: a header row with one caption column, named `caption`, `text` or `prompt` (any case;
  PartiPrompts' `PartiPrompts.tsv` has `Prompt`); other columns are ignored. Quoted fields may span lines.
- `.jsonl`: one JSON object a line with one of the same keys; blank lines are skipped.
- anything else: plain text, one caption a line; blank lines and lines starting with `#` are skipped.
Captions are stripped of surrounding whitespace, and inner runs of whitespace are kept as written.
Every error names the file and the line to fix: bytes that are not UTF-8, a malformed CSV or JSON line, a missing
or ambiguous caption field, an empty caption in a CSV or JSONL row, and a file without any caption.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

KEYS = ("caption", "text", "prompt")


class PromptError(ValueError):
    """A prompts file that cannot be read; the message names the file and line."""


def _text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (spreadsheets write one) is not part of the caption
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PromptError(f"{path}:{line}: not UTF-8 (byte {data[err.start]:#04x} at offset {err.start}); "
                          f"save the file as UTF-8") from None


def _key(path: Path, line: int, names) -> str:
    """The one caption field among `names` (case-insensitive)."""
    found = [n for n in names if n is not None and n.strip().lower() in KEYS]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise PromptError(f"{path}:{line}: {what} caption field; give exactly one of {', '.join(KEYS)} "
                          f"(found fields: {', '.join(str(n) for n in names)})")
    return found[0]


def _caption(path: Path, line: int, value) -> str:
    if not isinstance(value, str):
        raise PromptError(f"{path}:{line}: the caption is {type(value).__name__}, not a string")
    if not value.strip():
        raise PromptError(f"{path}:{line}: empty caption")
    return value.strip()


def _plain(path: Path, text: str) -> list[str]:
    out = []
    for line in text.split("\n"):  # not splitlines(): U+2028 and friends belong to the caption
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _table(path: Path, text: str, delimiter: str) -> list[str]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    out, key = [], None
    try:
        for row in reader:
            line = reader.line_num  # the row's last line (a quoted field may span several)
            if not any(cell.strip() for cell in row):
                continue
            if key is None:  # the header
                key = row.index(_key(path, line, row))
                continue
            if len(row) <= key:
                raise PromptError(f"{path}:{line}: the row has {len(row)} field(s), the caption is field {key + 1}")
            out.append(_caption(path, line, row[key]))
    except csv.Error as err:
        raise PromptError(f"{path}:{reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} "
                          f"({err})") from None
    if key is None:
        raise PromptError(f"{path}:1: no header row; the first row names the columns, one of them "
                          f"{', '.join(KEYS)}")
    return out


def _jsonl(path: Path, text: str) -> list[str]:
    out = []
    for line, raw in enumerate(text.split("\n"), 1):  # JSON strings may hold U+2028, which splitlines() breaks at
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            raise PromptError(f"{path}:{line}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise PromptError(f"{path}:{line}: a JSON object with a caption field is needed, got "
                              f"{type(obj).__name__}")
        out.append(_caption(path, line, obj[_key(path, line, list(obj))]))
    return out


def read_prompts(path: str | Path) -> list[str]:
    """A prompts file (module doc) -> its captions in file order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PromptError(f"{path}: no such prompts file")
    text = _text(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        prompts = _table(path, text, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".jsonl":
        prompts = _jsonl(path, text)
    else:
        prompts = _plain(path, text)
    if not prompts:
        raise PromptError(f"{path}:1: no prompts in the file (plain text: one caption a line; blank lines and "
                          f"# comments are skipped)")
    return prompts
