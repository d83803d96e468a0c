"""Image-caption pairs from a folder (three layouts), what counts as a bad entry, and a Ray Data reader.

Layouts of data.root (auto-detected, or chosen with `layout`):
- sidecar: a caption file beside each image, same name, `.txt`: `a/b.jpg` + `a/b.txt` (UTF-8).
- csv: one CSV (default `metadata.csv` at the root) whose header names the image column (`path`, `file_name` or
  `image`) and the caption column (`caption` or `text`); paths relative to data.root. Quote a caption holding a
  comma or a line break (RFC 4180, as Python's csv module and every spreadsheet write it).
- jsonl: Hugging Face `imagefolder`'s `metadata.jsonl` at the root, one object a line, `{"file_name": ...,
  "text": ...}`; the same field names as the CSV are accepted (`path`/`image`, `caption`).
A root holding two of these (metadata.csv and metadata.jsonl, or one of them and sidecar captions) is refused
as ambiguous: choose with `layout` (data.caption_layout) or name the file (data.captions).

Captions are normalised: leading and trailing whitespace stripped and every run of whitespace (spaces, tabs, line
breaks, any Unicode space) made one space; nothing else is changed (case, punctuation, Unicode forms). A UTF-8
byte order mark is dropped.

Bad entries, each a record "where<TAB>kind: detail" (where = a path, or `file:line` in a captions file), listed
in bad_captions.txt with on_bad=skip or, with on_bad=fail, raised for the first one (BadCaptionError, naming the
file and line and the fix), like data.on_bad_image for images. Kinds: KINDS below. What is neither an image
nor a caption is listed as ignored (ignored_files.txt), never silently dropped.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from djepa.data.format import BadImageError, DatasetError
from djepa.data.images import IMAGE_EXTENSIONS, unreadable_headers

LAYOUTS = ("sidecar", "csv", "jsonl")
PATH_FIELDS = ("path", "file_name", "image")
CAPTION_FIELDS = ("caption", "text")
METADATA_FILES = {"csv": "metadata.csv", "jsonl": "metadata.jsonl"}  # Hugging Face imagefolder's names
BAD_LIST = "bad_captions.txt"

# kind -> what the user does about it (the error message's advice)
KINDS = {
    "no caption": "write its caption (a .txt beside it, or a line in the captions file), or remove the image",
    "no image": "restore the image, or remove the caption (or its line)",
    "empty caption": "write a caption, or remove the entry",
    "not UTF-8": "save the text as UTF-8",
    "malformed": "fix the line (a CSV field holding a comma, a quote or a line break must be quoted)",
    "missing field": f"give each entry an image path ({', '.join(PATH_FIELDS)}) and a caption "
                     f"({', '.join(CAPTION_FIELDS)})",
    "duplicate": "keep one entry per image (one caption each)",
    "unreadable image": "replace or remove the image",
    "incomplete sample": "re-create the shard with an image and a caption (.txt, or .json with a caption field) "
                         "per key",
    "unusable shard": "copy the shard again, or re-create it (a complete tar, each key's files adjacent and once: tar "
                      "--sort=name)",
}


def normalise(text: str) -> str:
    """Strip, and collapse every run of whitespace (str.split's Unicode whitespace) into one space."""
    return " ".join(text.split())


def record(where: str, kind: str, detail: str) -> str:
    assert kind in KINDS, kind
    return f"{where}\t{kind}: {detail}"


def tally(records: list[str]) -> dict[str, int]:
    """How many records of each kind (for the manifest and the job's summary line)."""
    out: dict[str, int] = {}
    for r in records:
        kind = r.split("\t", 1)[1].split(":", 1)[0]
        out[kind] = out.get(kind, 0) + 1
    return out


def merge(*records: list[str]) -> list[str]:
    """Records from several places (the driver's probe, the read tasks), each entry once: its first record (a
    read task may refuse again, in the same or other words, a sample the probe refused)."""
    seen: dict[str, str] = {}
    for r in (r for rs in records for r in rs):
        seen.setdefault(r.split("\t", 1)[0], r)
    return list(seen.values())


def write_bad_captions(out_dir: str | Path, records: list[str]) -> Path | None:
    """bad_captions.txt in out_dir: one "where<TAB>kind: detail" line per bad entry, each once, in the order
    found; None (and no file) when there are none."""
    if not records:
        return None
    path = Path(out_dir) / BAD_LIST
    path.write_text("\n".join(dict.fromkeys(records)) + "\n")
    return path


class BadCaptionError(BadImageError):
    """A bad caption entry with on_bad=fail: a user error (the job exits 2 naming the file, the line and the fix)."""

    @classmethod
    def of(cls, bad: list[str], what: str = "caption entry") -> "BadCaptionError":
        where, why = bad[0].split("\t", 1)
        kind = why.split(":", 1)[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        fix = KINDS.get(kind, "fix it")
        return cls(f"bad {what} {where}: {why}{more}. {fix[0].upper() + fix[1:]}; or set "
                   f"data.on_bad_image=skip to skip such entries (counted, and listed in {BAD_LIST})")


def _decode_text(data: bytes) -> tuple[str, str | None]:
    """UTF-8 bytes -> (text without a BOM, None), or ("", why) for bytes that are not UTF-8."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as err:
        return "", f"byte 0x{data[err.start]:02x} at offset {err.start}"


def _is_image(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


@dataclass
class CaptionScan:
    """What encode will read from a caption folder, and everything it will not (listed, with why)."""
    root: str  # absolute
    layout: str  # sidecar, csv or jsonl
    captions_file: str | None = None  # the CSV or JSONL read (absolute), None for sidecar captions
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (absolute image path, caption), sorted by path
    bad: list[str] = field(default_factory=list)  # "where<TAB>kind: detail" records, in the order found
    ignored: list[str] = field(default_factory=list)  # "path<TAB>why" lines

    def key(self, path: str) -> str:
        """A pair's key in the encoded shards: its path relative to the root (as class folders' keys)."""
        return Path(path).relative_to(self.root).as_posix()


def _walk(root: Path) -> list[str]:
    """Every non-hidden file under root, as sorted POSIX paths relative to it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        out += [(rel / n).as_posix() for n in sorted(filenames) if not n.startswith(".")]
    return sorted(out)


def _sidecars(files: list[str]) -> dict[str, list[str]]:
    """stem -> its .txt files (any case of the extension)."""
    out: dict[str, list[str]] = {}
    for f in files:
        if f.rsplit(".", 1)[-1].lower() == "txt" and "." in PurePosixPath(f).name:
            out.setdefault(f.rsplit(".", 1)[0], []).append(f)
    return out


def _choose(root: Path, files: list[str], layout: str, captions_file: str | None) -> tuple[str, Path | None]:
    """-> (layout, the captions file or None): the one asked for, or the one data.root holds; refuses a mix."""
    if layout not in ("auto", *LAYOUTS):
        raise DatasetError(f"data.caption_layout={layout!r} is not one of auto, {', '.join(LAYOUTS)}")
    if captions_file:
        path = Path(captions_file) if Path(captions_file).is_absolute() else root / captions_file
        kind = path.suffix.lower().lstrip(".")
        if kind not in ("csv", "jsonl"):
            raise DatasetError(f"data.captions={captions_file!r} must be a .csv or a .jsonl file")
        if layout not in ("auto", kind):
            raise DatasetError(f"data.captions={captions_file!r} is a .{kind} file but data.caption_layout={layout}")
        if not path.is_file():
            raise FileNotFoundError(f"data.captions={captions_file!r}: {path} does not exist (a relative path is "
                                    f"read from data.root)")
        return kind, path
    present = {k: root / n for k, n in METADATA_FILES.items() if (root / n).is_file()}
    if layout in ("csv", "jsonl"):
        if layout not in present:
            raise DatasetError(f"data.caption_layout={layout} but data.root={str(root)!r} has no "
                               f"{METADATA_FILES[layout]}; add it, or name the file with data.captions")
        return layout, present[layout]
    if layout == "sidecar":
        return "sidecar", None
    stems = {f.rsplit(".", 1)[0] for f in files if _is_image(PurePosixPath(f).name)}
    paired = sorted(t for s, ts in _sidecars(files).items() if s in stems for t in ts)
    found = [n.name for n in present.values()] + ([f"{len(paired)} sidecar caption(s) ({paired[0]}, ...)"]
                                                  if paired else [])
    if len(found) > 1:
        raise DatasetError(f"data.root={str(root)!r} holds captions in more than one layout: {' and '.join(found)}. "
                           f"Choose one with data.caption_layout=sidecar|csv|jsonl (or data.captions=<file>), or "
                           f"remove the others")
    if not found:
        raise DatasetError(f"data.root={str(root)!r} holds no captions: expected a .txt beside each image, a "
                           f"metadata.csv or a metadata.jsonl (or name a file with data.captions)")
    return (next(iter(present)), next(iter(present.values()))) if present else ("sidecar", None)


def _sidecar_entries(root: Path, files: list[str], scan: CaptionScan) -> dict[str, str]:
    images: dict[str, list[str]] = {}
    for f in files:
        if _is_image(PurePosixPath(f).name):
            images.setdefault(f.rsplit(".", 1)[0], []).append(f)
    texts = _sidecars(files)
    entries = {}
    for stem in sorted(set(images) | set(texts)):
        ims, txts = images.get(stem, []), texts.get(stem, [])
        if not ims:
            scan.bad += [record(str(root / t), "no image", f"no image named {stem}.<image extension>") for t in txts]
        elif not txts:
            scan.bad += [record(str(root / i), "no caption", f"no {stem}.txt beside it") for i in ims]
        elif len(ims) > 1 or len(txts) > 1:
            scan.bad += [record(str(root / i), "duplicate", f"{', '.join(ims)} and {', '.join(txts)} share the name "
                                f"{stem}; rename so each image has its own .txt") for i in ims]
        else:
            text, why = _decode_text((root / txts[0]).read_bytes())
            caption = normalise(text)
            if why:
                scan.bad.append(record(str(root / txts[0]), "not UTF-8", why))
            elif not caption:
                scan.bad.append(record(str(root / txts[0]), "empty caption", f"the caption of {ims[0]} is empty or "
                                                                            f"only whitespace"))
            else:
                entries[ims[0]] = caption
    return entries


def _bad_byte(text: str) -> str | None:
    """Why text decoded with errors="surrogateescape" is not UTF-8 (the first stray byte), None when it is."""
    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            return f"byte 0x{ord(ch) - 0xdc00:02x}"
    return None


def _field(names_present, accepted: tuple[str, ...], what: str, where: str) -> str:
    """The one of `accepted` among names_present ("" when none); two of them are ambiguous: a DatasetError."""
    got = [n for n in accepted if n in names_present]
    if len(got) > 1:
        raise DatasetError(f"{where} has both {got[0]!r} and {got[1]!r}: which is the {what}? Keep one (accepted: "
                           f"{', '.join(accepted)})")
    return got[0] if got else ""


def _csv_lines(text: str, where: str, scan: CaptionScan) -> list[tuple[int, str, str]]:
    """-> (line, image path, caption) per data row of a CSV (a quoted caption may span lines: its first line);
    malformed rows become records, a header without the two columns is a DatasetError."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns, out, end = None, [], 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return out
        except csv.Error as err:
            if columns is None:
                raise DatasetError(f"{where}:{start}: the header is not a CSV row ({err})") from None
            scan.bad.append(record(f"{where}:{start}", "malformed", f"not a CSV row ({err})"))
            end = reader.line_num
            continue
        end = reader.line_num
        if not "".join(row).strip():
            continue  # a blank line
        if columns is None:
            header = [h.strip().lower() for h in row]
            pf, cf = (_field(header, names, what, f"{where}:{start} (the header)")
                      for names, what in ((PATH_FIELDS, "image path"), (CAPTION_FIELDS, "caption")))
            if not pf or not cf:
                raise DatasetError(f"{where}:{start}: the header names no {'image path' if not pf else 'caption'} "
                                   f"column ({', '.join(PATH_FIELDS if not pf else CAPTION_FIELDS)}); it has "
                                   f"{', '.join(row)}")
            columns = (len(header), header.index(pf), header.index(cf))
        elif len(row) != columns[0]:
            scan.bad.append(record(f"{where}:{start}", "malformed", f"{len(row)} fields, the header has {columns[0]}"))
        else:
            out.append((start, row[columns[1]], row[columns[2]]))


def _jsonl_lines(text: str, where: str, scan: CaptionScan) -> list[tuple[int, str, str]]:
    """-> (line, image path, caption) per JSON object line; anything else becomes a record."""
    out = []
    for line, raw in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is allowed inside JSON strings
        at = f"{where}:{line}"
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            why = _bad_byte(raw)
            scan.bad.append(record(at, "not UTF-8", why) if why else
                            record(at, "malformed", f"not a JSON object ({err.msg} at column {err.colno})"))
            continue
        if not isinstance(obj, dict):
            scan.bad.append(record(at, "malformed", f"a JSON {type(obj).__name__}, not an object"))
            continue
        pf, cf = _field(obj, PATH_FIELDS, "image path", at), _field(obj, CAPTION_FIELDS, "caption", at)
        if not pf or not cf:
            names = PATH_FIELDS if not pf else CAPTION_FIELDS
            scan.bad.append(record(at, "missing field", f"no {'image path' if not pf else 'caption'} field "
                                                        f"({', '.join(names)})"))
        elif not isinstance(obj[pf], str) or not isinstance(obj[cf], str):
            scan.bad.append(record(at, "malformed", f"{pf!r} and {cf!r} must be strings"))
        else:
            out.append((line, obj[pf], obj[cf]))
    return out


def _table_entries(root: Path, path: Path, layout: str, scan: CaptionScan) -> tuple[dict[str, str], set[str]]:
    """-> (a CSV's or JSONL's entries: image path relative to root -> caption, the first line of each path
    kept; every path a line names, good or bad)."""
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")  # a line that is not UTF-8: one record
    where = str(path)
    lines = _csv_lines(text, where, scan) if layout == "csv" else _jsonl_lines(text, where, scan)
    entries, first = {}, {}
    for line, rel, caption in lines:
        at, rel = f"{where}:{line}", PurePosixPath(rel.strip()).as_posix()
        named = first.setdefault(rel, line) != line  # an earlier line named this image
        why = _bad_byte(rel + caption)
        caption = normalise(caption)
        if why:
            scan.bad.append(record(at, "not UTF-8", why))
        elif rel == ".":
            scan.bad.append(record(at, "missing field", "the image path is empty"))
        elif PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            scan.bad.append(record(at, "malformed", f"{rel!r} is not a path inside data.root (write it relative "
                                                    f"to {root})"))
        elif not _is_image(PurePosixPath(rel).name):
            scan.bad.append(record(at, "malformed", f"{rel!r} is not an image format encode reads "
                                                    f"({', '.join(IMAGE_EXTENSIONS)})"))
        elif not (root / rel).is_file():
            scan.bad.append(record(at, "no image", f"{root / rel} does not exist"))
        elif named:
            scan.bad.append(record(at, "duplicate", f"{rel} is already on line {first[rel]}"))
        elif not caption:
            scan.bad.append(record(at, "empty caption", f"the caption of {rel} is empty or only whitespace"))
        else:
            entries[rel] = caption
    return entries, set(first)


def scan_captions(root: str | Path, layout: str = "auto", captions_file: str | None = None, on_bad: str = "fail",
                  check_images: bool = True) -> CaptionScan:
    """The image-caption pairs of a folder (module docstring), checked in the driver before Ray starts.

    layout: auto | sidecar | csv | jsonl; captions_file: the CSV or JSONL (absolute, or relative to root; default
    the root's metadata.csv / metadata.jsonl). on_bad: skip (bad entries are recorded in .bad and left out) or
    fail (BadCaptionError for the first one). check_images: open every paired image's header with Pillow (one
    small read per file); a body broken further in is found when the image is decoded. Whole-file problems (no
    captions, an ambiguous layout, a CSV header without the columns) raise DatasetError whatever on_bad says.
    Cost: one directory walk, one read of each caption file (or of the CSV / JSONL)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={str(root)!r} is not a directory; it must hold the images and captions")
    files = _walk(root)
    layout, table = _choose(root, files, layout, captions_file)
    scan = CaptionScan(str(root), layout, str(table) if table else None)
    if table:
        entries, named = _table_entries(root, table, layout, scan)
        for f in files:
            if (root / f) == table:
                continue
            if _is_image(PurePosixPath(f).name):
                if f not in named:
                    scan.bad.append(record(str(root / f), "no caption", f"not listed in {table.name}"))
            else:
                scan.ignored.append(f"{root / f}\tnot an image, and captions are read from {table.name}")
    else:
        entries = _sidecar_entries(root, files, scan)
        texts = {t for ts in _sidecars(files).values() for t in ts}
        scan.ignored += [f"{root / f}\tneither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a .txt caption"
                         for f in files if not _is_image(PurePosixPath(f).name) and f not in texts]
    if on_bad == "fail" and scan.bad:
        raise BadCaptionError.of(scan.bad)
    scan.pairs = [(str(root / rel), entries[rel]) for rel in sorted(entries)]
    if check_images:
        unreadable = [u.split("\t", 1) for u in unreadable_headers([p for p, _ in scan.pairs])]
        bad = [record(path, "unreadable image", why) for path, why in unreadable]
        if bad and on_bad == "fail":
            raise BadCaptionError.of(bad, "image")
        scan.bad += bad
        refused = {path for path, _ in unreadable}
        scan.pairs = [(p, c) for p, c in scan.pairs if p not in refused]
    if not scan.pairs:
        where, why = scan.bad[0].split("\t", 1) if scan.bad else (str(root), "no images")
        raise DatasetError(f"data.root={str(root)!r} holds no usable image-caption pair ({len(scan.bad)} bad "
                           f"entries; the first: {where}: {why})")
    return scan
