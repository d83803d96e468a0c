"""Caption data (djepa/text/captions.py, shards.py, pairs.py): the three folder layouts and WebDataset shards on
tiny trees written here, every bad kind with skip (recorded, left out) and with fail (the file, line or key named),
brace expansion, and one Ray read of both sources against the plain-Python readers."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_tar
from djepa.data.format import DatasetError
from djepa.data.images import decode_image
from djepa.text.captions import BadCaptionError, merge, normalise, scan_captions, tally, write_bad_captions
from djepa.text.read import decode_pixels, decode_sample, model_input
from djepa.text.shards import expand_braces, list_shards, probe_shards, read_shard

# image path under the root -> caption as written (untidy on purpose: normalised on read)
CAPTIONS = {"b.png": "  a red\tsquare \n", "a/x.png": "two, digits:\n \"3\" left of 8", "c/d/e.jpg": "café  noir"}
TIDY = {"a/x.png": 'two, digits: "3" left of 8', "b.png": "a red square", "c/d/e.jpg": "café noir"}


def _image_bytes(shade: int, fmt: str = "PNG", size=(10, 12)) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.full((*size, 3), shade, np.uint8)).save(b, format=fmt)
    return b.getvalue()


def _images(root: Path) -> Path:
    for i, rel in enumerate(CAPTIONS):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_image_bytes(40 * i, "JPEG" if rel.endswith("jpg") else "PNG"))
    return root


def _tree(root: Path, layout: str) -> Path:
    """The three images with their captions in `layout`; the files list them in reverse order (read sorted)."""
    _images(root)
    items = list(CAPTIONS.items())[::-1]
    if layout == "sidecar":
        for rel, cap in items:
            (root / rel).with_suffix(".txt").write_text(cap, encoding="utf-8")
    elif layout == "csv":  # Excel's UTF-8 CSV: a byte order mark; quoted fields with commas, quotes, line breaks
        rows = ["image,caption"] + [f'{rel},"{cap.replace(chr(34), chr(34) * 2)}"' for rel, cap in items]
        (root / "metadata.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    else:
        lines = [json.dumps({"file_name": rel, "text": cap, "width": 12}) for rel, cap in items]
        (root / "metadata.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("layout", ["sidecar", "csv", "jsonl"])
def test_each_layout_gives_the_same_sorted_normalised_pairs(tmp_path, layout):
    root = _tree(tmp_path / "d", layout)
    (root / "notes.md").write_text("x")
    scan = scan_captions(root)
    assert scan.layout == layout and scan.bad == []
    assert [(scan.key(p), c) for p, c in scan.pairs] == sorted(TIDY.items())
    assert [line.split("\t")[0] for line in scan.ignored] == [str(root.resolve() / "notes.md")]
    assert scan_captions(root, layout=layout).pairs == scan.pairs


def test_normalise_strips_and_collapses_every_whitespace():
    assert normalise(" a\u00a0 b\r\n\tc\u2003 ") == "a b c"
    assert normalise("Café, \"quoted\"") == "Café, \"quoted\""  # nothing else changes


def test_a_mix_of_layouts_is_refused_until_one_is_chosen(tmp_path):
    root = _tree(tmp_path / "d", "csv")
    for rel, cap in CAPTIONS.items():
        (root / rel).with_suffix(".txt").write_text("sidecar " + cap)
    with pytest.raises(DatasetError, match=r"more than one layout: metadata.csv and 3 sidecar caption\(s\) "
                                           r"\(a/x.txt, ...\).*data.caption_layout"):
        scan_captions(root)
    assert scan_captions(root, layout="csv").pairs[0][1] == TIDY["a/x.png"]
    sidecar = scan_captions(root, layout="sidecar")
    assert sidecar.pairs[0][1] == "sidecar " + TIDY["a/x.png"]
    assert any(line.startswith(str(root.resolve() / "metadata.csv")) for line in sidecar.ignored)
    (root / "metadata.jsonl").write_text("")
    with pytest.raises(DatasetError, match="metadata.csv and metadata.jsonl and 3 sidecar"):
        scan_captions(root)
    # a named file: its layout, wherever it is (relative to the root)
    (root / "lists").mkdir()
    (root / "lists" / "train.jsonl").write_text(json.dumps({"path": "b.png", "caption": "named"}) + "\n")
    named = scan_captions(root, captions_file="lists/train.jsonl", on_bad="skip")
    assert named.layout == "jsonl" and named.pairs == [(str(root.resolve() / "b.png"), "named")]
    assert {r.split("\t")[1].split(":")[0] for r in named.bad} == {"no caption"}  # the two images it omits


def test_whole_file_problems_are_dataset_errors_whatever_on_bad(tmp_path):
    root = _images(tmp_path / "d")
    with pytest.raises(DatasetError, match="holds no captions"):
        scan_captions(root, on_bad="skip")
    (root / "metadata.csv").write_text("file,description\nb.png,x\n")
    with pytest.raises(DatasetError, match=r"metadata.csv:1: the header names no image path column \(path, "
                                           r"file_name, image\)"):
        scan_captions(root, on_bad="skip")
    (root / "metadata.csv").write_text("path,image,caption\nb.png,b.png,x\n")
    with pytest.raises(DatasetError, match="has both 'path' and 'image'"):
        scan_captions(root, on_bad="skip")
    with pytest.raises(DatasetError, match="data.caption_layout=jsonl but .* has no metadata.jsonl"):
        scan_captions(root, layout="jsonl")
    (root / "metadata.csv").write_text("path,caption\nb.png,\n")  # its one entry is bad: nothing left
    with pytest.raises(DatasetError, match=r"no usable image-caption pair \(3 bad entries; the first: "
                                           r".*metadata.csv:2: empty caption"):
        scan_captions(root, on_bad="skip")


def _sidecar(root, rel, data: bytes):
    (root / rel).write_bytes(data)


# (layout, how the tree is broken, where the record points (relative; ":n" a line), kind, images left out)
BAD = {
    "no caption": ("sidecar", lambda r: (r / "b.txt").unlink(), "b.png", "no caption", {"b.png"}),
    "no image": ("sidecar", lambda r: _sidecar(r, "z.txt", b"orphan"), "z.txt", "no image", set()),
    "empty caption": ("sidecar", lambda r: _sidecar(r, "b.txt", b" \t\n "), "b.txt", "empty caption", {"b.png"}),
    "not UTF-8": ("sidecar", lambda r: _sidecar(r, "b.txt", b"caf\xe9"), "b.txt", "not UTF-8: byte 0xe9", {"b.png"}),
    "same name": ("sidecar", lambda r: _sidecar(r, "b.jpg", _image_bytes(9, "JPEG")), ("b.jpg", "b.png"),
                  "duplicate", {"b.png"}),
    "unreadable": ("sidecar", lambda r: _sidecar(r, "b.png", b"not a png"), "b.png", "unreadable image", {"b.png"}),
    "csv fields": ("csv", lambda r: _append(r, "metadata.csv", b"b.png,x,y\n"), "metadata.csv:7", "malformed",
                   set()),
    "csv quote": ("csv", lambda r: _append(r, "metadata.csv", b'b.png,"open\n'), "metadata.csv:7", "malformed",
                  set()),
    "csv no path": ("csv", lambda r: _append(r, "metadata.csv", b",lost\n"), "metadata.csv:7", "missing field",
                    set()),
    "csv no image": ("csv", lambda r: _append(r, "metadata.csv", b"gone.png,x\n"), "metadata.csv:7", "no image",
                     set()),
    "csv twice": ("csv", lambda r: _append(r, "metadata.csv", b"b.png,again\n"), "metadata.csv:7",
                  "duplicate: b.png is already on line 5", set()),
    "csv bytes": ("csv", lambda r: _append(r, "metadata.csv", b"q.png,\xff\n"), "metadata.csv:7",
                  "not UTF-8: byte 0xff", set()),
    "csv unlisted": ("csv", lambda r: _sidecar(r, "q.png", _image_bytes(1)), "q.png", "no caption", {"q.png"}),
    "jsonl syntax": ("jsonl", lambda r: _append(r, "metadata.jsonl", b'{"file_name": "b.png",\n'),
                     "metadata.jsonl:4", "malformed", set()),
    "jsonl field": ("jsonl", lambda r: _append(r, "metadata.jsonl", b'{"file_name": "q.png"}\n'),
                    "metadata.jsonl:4", "missing field: no caption", set()),
    "jsonl empty": ("jsonl", lambda r: _recaption(r, "b.png", " \t"), "metadata.jsonl:3", "empty caption",
                    {"b.png"}),
}


def _append(root, name, data: bytes):
    text = (root / name).read_bytes().rstrip(b"\n")  # no trailing blank line: the next line is line 5
    (root / name).write_bytes(text + b"\n" + data)


def _recaption(root, rel: str, caption: str):
    lines = [json.loads(line) for line in (root / "metadata.jsonl").read_text().split("\n") if line]
    lines = [obj | {"text": caption} if obj["file_name"] == rel else obj for obj in lines]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(obj) for obj in lines) + "\n")


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_entry_is_recorded_with_skip_and_named_with_fail(tmp_path, case):
    layout, breaks, where, kind, left_out = BAD[case]
    root = _tree(tmp_path / "d", layout).resolve()
    breaks(root)
    scan = scan_captions(root, layout=layout, on_bad="skip")
    wheres = [str(root / w) for w in ([where] if isinstance(where, str) else where)]
    assert [r.split("\t")[0] for r in scan.bad] == wheres, scan.bad
    assert scan.bad[0].split("\t")[1].startswith(kind)
    assert sorted(scan.key(p) for p, _ in scan.pairs) == sorted(set(TIDY) - left_out)
    with pytest.raises(BadCaptionError, match=rf"{wheres[0]}: {kind}.*data.on_bad_image=skip"):
        scan_captions(root, layout=layout, on_bad="fail")


def test_records_are_counted_listed_once_and_merged_by_place(tmp_path):
    a = ["x.tar/1\tincomplete sample: 1.jpg without a caption", "x.tar/2\tempty caption: ..."]
    b = ["x.tar/1\tincomplete sample: said again, otherwise", "y.tar\tunusable shard: cut off"]
    merged = merge(a, b)
    assert merged == a + b[1:]
    assert tally(merged) == {"incomplete sample": 1, "empty caption": 1, "unusable shard": 1}
    assert write_bad_captions(tmp_path, []) is None
    assert write_bad_captions(tmp_path, merged + merged[:1]).read_text().splitlines() == merged


# ----------------------------------------------------------------------------- WebDataset shards
def _samples(n: int, first: int = 0) -> list[tuple[str, bytes]]:
    """img2dataset's layout: <key>.jpg, <key>.txt and <key>.json (its metadata, holding the caption too)."""
    out = []
    for i in range(first, first + n):
        key = f"{i:09d}"
        meta = json.dumps({"caption": f"j{i}", "url": f"https://example.com/{i}.jpg"}).encode()
        out += [(f"{key}.jpg", _image_bytes(20 * i % 256, "JPEG")), (f"{key}.json", meta),
                (f"{key}.txt", f" caption\n{i} ".encode())]
    return out


def test_brace_expansion_and_shard_lists(tmp_path):
    assert expand_braces("s-{000..011}.tar")[::11] == ["s-000.tar", "s-011.tar"]
    assert len(expand_braces("s-{000..011}.tar")) == 12
    assert expand_braces("{train,val}-{8..10}.tar") == ["train-8.tar", "train-9.tar", "train-10.tar", "val-8.tar",
                                                        "val-9.tar", "val-10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    for i in (2, 0, 1):
        write_tar(tmp_path / f"{i:05d}.tar", _samples(1, i))
    (tmp_path / "00000_stats.json").write_text("{}")
    want = [str(tmp_path / f"{i:05d}.tar") for i in range(3)]
    assert list_shards(tmp_path) == want
    assert list_shards(str(tmp_path / "{00000..00002}.tar")) == want
    assert list_shards([str(tmp_path / "00002.tar"), str(tmp_path / "0000{0,1}.tar")]) == want[2:] + want[:2]
    with pytest.raises(DatasetError, match=r"1 of its 4 shard\(s\) missing \(.*00003.tar\)"):
        list_shards(str(tmp_path / "{00000..00003}.tar"))
    with pytest.raises(DatasetError, match="names .*00001.tar more than once"):
        list_shards([tmp_path, str(tmp_path / "00001.tar")])
    with pytest.raises(DatasetError, match="s.tar.gz is not a .tar"):
        list_shards(str(tmp_path / "s.tar.gz"))
    with pytest.raises(DatasetError, match="mount the bucket"):
        list_shards("s3://bucket/{00000..00009}.tar")


def test_a_shard_reads_in_archive_order_txt_before_json(tmp_path):
    members = _samples(3) + [("dir/k1.PNG", _image_bytes(7)), ("dir/k1.json", b'{"text": " from  json "}'),
                             ("dir/k1.npy", b"ignored")]
    rows, bad = read_shard(write_tar(tmp_path / "s.tar", members))
    assert bad == []
    assert [(k, c) for k, _, c in rows] == [("000000000", "caption 0"), ("000000001", "caption 1"),
                                            ("000000002", "caption 2"), ("dir/k1", "from json")]
    assert rows[3][1] == _image_bytes(7)
    scan = probe_shards([str(tmp_path / "s.tar")])
    assert scan.samples == 4 and scan.shards == [str(tmp_path / "s.tar")] and scan.bad == []


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


# (what is wrong, members after the good sample 0 and the bad one, where (key; None: the shard), kind)
BAD_SHARDS = {
    "no caption": ([("000000001.jpg", _image_bytes(1, "JPEG"))], "000000001", "incomplete sample"),
    "no image": ([("000000001.txt", b"lonely")], "000000001", "incomplete sample"),
    "json without caption": ([("000000001.jpg", _image_bytes(1, "JPEG")), ("000000001.json", b'{"url": "u"}')],
                             "000000001", "incomplete sample"),
    "json broken": ([("000000001.jpg", _image_bytes(1, "JPEG")), ("000000001.json", b'{"caption": ')],
                    "000000001", "malformed"),
    "empty": ([("000000001.jpg", _image_bytes(1, "JPEG")), ("000000001.txt", b" \n")], "000000001",
              "empty caption"),
    "bytes": ([("000000001.jpg", _image_bytes(1, "JPEG")), ("000000001.txt", b"\xff\xfe")], "000000001",
              "not UTF-8"),
    "two images": ([("000000001.jpg", _image_bytes(1, "JPEG")), ("000000001.png", _image_bytes(1)),
                    ("000000001.txt", b"x")], "000000001", "duplicate"),
    "unreadable": ([("000000001.jpg", b"\xff\xd8 not a jpeg"), ("000000001.txt", b"x")], "000000001",
                   "unreadable image"),
    "apart": ([("000000001.jpg", _image_bytes(1, "JPEG")), ("000000002.txt", b"x"), ("000000001.txt", b"y")],
              None, "unusable shard: the members of key 000000001 are not adjacent"),
    "twice": ([("000000001.txt", b"x"), ("000000001.txt", b"y")], None, "unusable shard: 000000001.txt is in"),
    "cut off": ("cut", None, "unusable shard: cut off"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHARDS))
def test_each_bad_sample_or_shard_is_recorded_with_skip_and_named_with_fail(tmp_path, case):
    extra, key, kind = BAD_SHARDS[case]
    good = write_tar(tmp_path / "good.tar", _samples(2, 10))
    shard = write_tar(tmp_path / "s.tar", _samples(1) + (extra if extra != "cut" else _samples(40, 1)))
    if extra == "cut":
        _cut(shard)
    where = f"{shard}/{key}" if key else str(shard)
    scan = probe_shards([str(shard), str(good)], on_bad="skip")
    assert [r.split("\t")[0] for r in scan.bad] == [where] and scan.bad[0].split("\t")[1].startswith(kind)
    assert scan.shards == ([str(shard)] if key else []) + [str(good)] and scan.samples == (3 if key else 2)
    rows, bad = read_shard(shard, on_bad="skip")
    assert bad == scan.bad and [k for k, _, _ in rows] == (["000000000"] if key else [])
    for read in (lambda: probe_shards([str(shard)]), lambda: read_shard(shard)):
        with pytest.raises(BadCaptionError, match=rf"{where}: {kind}.*data.on_bad_image=skip"):
            read()


def test_pixels_are_decode_image_s_and_a_ray_sample_is_the_plain_reader_s(tmp_path):
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[..., 0], rgba[:, 8:, 3] = 200, 255  # red, transparent on the left (becomes white)
    for im in (Image.fromarray(rgba, "RGBA"), Image.fromarray(np.arange(192, dtype=np.uint16).reshape(12, 16) * 300),
               Image.fromarray(np.full((12, 16, 3), (10, 20, 30), np.uint8)).convert("P")):
        b = io.BytesIO()
        im.save(b, format="PNG")
        for channels in (1, 3):
            got = model_input(decode_pixels(b.getvalue(), 8, channels)[None])[0]
            np.testing.assert_array_equal(got, decode_image(b.getvalue(), 8, channels))
    shard = write_tar(tmp_path / "s.tar", _samples(1) + [("000000001.txt", b"lonely")])
    (key, data, caption), = read_shard(shard, on_bad="skip")[0]
    sample = {"__key__": key, "__url__": str(shard), "jpg": data, "json": b"{}", "txt": b" caption\n0 "}
    row = decode_sample(sample, size=None, channels=3)
    assert row["key"] == f"s.tar/{key}" and row["caption"] == caption and row["bad"] == ""
    np.testing.assert_array_equal(row["image"], np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    lonely = decode_sample({"__key__": "000000001", "__url__": str(shard), "txt": b"lonely"}, size=4, channels=1)
    assert lonely["bad"].startswith("incomplete sample") and lonely["image"].shape == (4, 4, 1)


def test_ray_reads_shards_and_a_caption_folder_as_the_plain_readers_do(ray_session, tmp_path):
    from djepa.text.read import read_caption_folder, read_shards

    shards = [write_tar(tmp_path / "00000.tar", _samples(2) + [("000000002.txt", b"lonely")]),
              write_tar(tmp_path / "00001.tar", _samples(2, 2))]
    scan = probe_shards(list_shards(tmp_path), on_bad="skip")
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    rows = sorted(read_shards(scan.shards, "skip", bad_dir, size=8).take_all(), key=lambda r: r["key"])
    plain = [(f"{s.name}/{k}", d, c) for s in shards for k, d, c in read_shard(s, on_bad="skip")[0]]
    assert [(r["key"], r["caption"]) for r in rows] == [(k, c) for k, _, c in plain]
    for r, (_, data, _) in zip(rows, plain):
        np.testing.assert_array_equal(r["image"], decode_pixels(data, 8, 3))
    records = [line for p in bad_dir.glob("*.txt") for line in p.read_text().splitlines()]
    assert merge(scan.bad, records) == scan.bad == records  # the probe and the read task say the same
    folder = scan_captions(_tree(tmp_path / "d", "sidecar"))
    rows = sorted(read_caption_folder(folder, "skip", bad_dir, size=None, channels=1).take_all(),
                  key=lambda r: r["key"])
    assert [(r["key"], r["caption"]) for r in rows] == sorted(TIDY.items())
    assert [r["image"].shape for r in rows] == [(10, 12, 1)] * 3  # their own size without `size`
    (bad_dir / "empty").mkdir()
    with pytest.raises(Exception, match="incomplete sample"):
        read_shards(scan.shards, "fail", bad_dir / "empty", size=8).take_all()
    assert [p.read_text() for p in (bad_dir / "empty").glob("*.txt")] == [scan.bad[0] + "\n"]
