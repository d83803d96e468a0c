"""The encode job on captioned image files (data.source caption_folder and webdataset, djepa/data/captioned.py): a tiny
caption folder and a tar shard written here, encoded with the words encoder, read back against an independent
decode of each file, the words encoder's output for each caption and the bad entries left out; stored and
on-the-fly text embeddings giving training the same condition; the config keys and their errors."""
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import write_tar
from djepa.config import ConfigError
from djepa.data.encode import encode, encode_settings
from djepa.data.encoded import TRAIN_COLUMNS, batch_tokens, collate, open_encoded, read_shard
from djepa.data.images import decode_image
from djepa.models.tokenizer import build_tokenizer
from djepa.text.captions import BadCaptionError
from djepa.text.encoders import WordsEncoder

VOCAB = ["a", "red", "blue", "green", "square", "circle", "left", "of"]  # no YAML booleans (on, off, yes, no)
POSITION_DIMS = 4
# image path under the root -> its sidecar caption as written (untidy: normalised on read)
FOLDER = {"a.png": "a red square", "b/c.jpg": "  Blue\tcircle\n", "d.png": "a green circle",
          "e.png": "red left of blue"}


def text_config(tiny, *more):
    """The tiny digits model made a text model: the words encoder over VOCAB, pixel tokens of 8x8 RGB images."""
    return tiny("model.condition=text", f"model.text_dim={len(VOCAB) + POSITION_DIMS}", "text.encoder=words",
                f"text.vocab=[{','.join(VOCAB)}]", f"text.position_dims={POSITION_DIMS}", "text.max_length=4",
                "tokenizer.channels=3", "eval.features=[inception]", *more)


def _picture(seed: int, size=(16, 14)) -> np.ndarray:
    """Smooth colour ramps (JPEG keeps them), different per seed and wider than tall so the centre crop matters."""
    y, x = np.mgrid[:size[0], :size[1]]
    return np.stack([(x * 17 + seed * 40) % 256, (y * 13 + seed * 70) % 256, (x + y) * 5 % 256], -1).astype(np.uint8)


def _image_bytes(seed: int, fmt: str = "PNG", size=(16, 14)) -> bytes:
    b = io.BytesIO()
    Image.fromarray(_picture(seed, size)).save(b, format=fmt)
    return b.getvalue()


def _caption_folder(root, bad: bool = True):
    """FOLDER's pairs (sidecar captions) and a file of neither kind (ignored); with `bad`, an image without a
    caption (the probe refuses it) and one cut after its header (_cut)."""
    for i, (rel, caption) in enumerate(FOLDER.items()):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_image_bytes(i, "JPEG" if rel.endswith("jpg") else "PNG", (16 + 4 * i, 14)))
        (root / rel).with_suffix(".txt").write_text(caption)
    (root / "notes.md").write_text("not a caption")
    if bad:
        (root / "lonely.png").write_bytes(_image_bytes(9))
        _cut(root)
    return root


def _cut(root):
    """cut.png, captioned, whose header Pillow reads but whose body is cut: the probe passes it, a read task
    refuses it."""
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 14, 3), dtype=np.uint8)).save(b, format="PNG")
    (root / "cut.png").write_bytes(b.getvalue()[:len(b.getvalue()) // 2])
    (root / "cut.txt").write_text("a red circle")


SHARD = {"000000000": "a blue square", "000000001": "green circle", "000000002": "square left of circle"}


def _webdataset(path):
    """SHARD's samples (img2dataset's layout: .jpg, .json metadata, .txt caption) and a caption without an image."""
    members = []
    for i, (key, caption) in enumerate(SHARD.items()):
        members += [(f"{key}.jpg", _image_bytes(i, "JPEG")), (f"{key}.json", b'{"url": "u"}'),
                    (f"{key}.txt", caption.encode())]
    return write_tar(path, members + [("000000003.txt", b"a red square")])


def _rows(out, manifest):
    """Every row of the encoded dataset, sorted by key."""
    text = tuple(manifest["text_shape"]) if "text_shape" in manifest else None
    parts = [read_shard(out / f["name"], tuple(manifest["moments_shape"]), text) for f in manifest["files"]]
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(data["key"])
    return {k: v[order] for k, v in data.items()}


def _check_rows(cfg, got, images: list[bytes], captions: list[str]):
    """Moments = the tokenizer on decode_image of each file; the stored text = the words encoder's, in float16."""
    x = torch.stack([torch.from_numpy(decode_image(data, 8, 3)) for data in images])  # (B, 3, 8, 8)
    ref = build_tokenizer(cfg.tokenizer).encode_moments(x).numpy()
    np.testing.assert_array_equal(got["moments"], ref)
    np.testing.assert_array_equal(got["moments_flip"], ref[..., ::-1])
    assert list(got["caption"]) == captions and (got["label"] == -1).all()
    emb, mask = WordsEncoder(cfg.text)(captions)
    assert got["text_emb"].shape == (len(captions), 4, len(VOCAB) + POSITION_DIMS)
    np.testing.assert_array_equal(got["text_emb"], emb.numpy().astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got["text_len"], [len(c.split()) for c in captions])
    np.testing.assert_array_equal(got["text_len"], mask.sum(1).numpy())


def test_encode_caption_folder_and_webdataset_with_stored_text(ray_session, tiny, tmp_path):
    root = _caption_folder(tmp_path / "pics")
    out = tmp_path / "enc"
    cfg = text_config(tiny, "data.source=caption_folder", f"data.root={root}", f"data.encoded_dir={out}",
                      "data.on_bad_image=skip", "data.encode_batch_size=2")
    manifest = encode(cfg)
    assert manifest["rows"] == 4 and manifest["classes"] == [] and manifest["num_classes"] == 0
    assert manifest["captions"] is True and manifest["text_shape"] == [4, len(VOCAB) + POSITION_DIMS]
    assert manifest["columns"] == ["key", "label", "moments", "moments_flip", "caption", "text_emb", "text_len"]
    assert manifest["caption_layout"] == "sidecar" and manifest["ignored"] == 1
    assert manifest["skipped"] == 2 and manifest["skipped_kinds"] == {"no caption": 1, "unreadable image": 1}
    bad = (out / "bad_captions.txt").read_text().splitlines()  # the probe's record, then the read task's
    assert [line.split("\t")[0] for line in bad] == [str(root.resolve() / n) for n in ("lonely.png", "cut.png")]
    assert bad[0].split("\t")[1].startswith("no caption") and bad[1].split("\t")[1].startswith("unreadable image")
    assert "notes.md" in (out / "ignored_files.txt").read_text()
    assert json.loads((out / "manifest.json").read_text()) == manifest
    got = _rows(out, manifest)
    assert list(got["key"]) == sorted(FOLDER)
    _check_rows(cfg, got, [(root / k).read_bytes() for k in got["key"]], [" ".join(FOLDER[k].split())
                                                                           for k in got["key"]])

    # training reads the stored embeddings: the model's condition, as the text encoder would give it now
    assert open_encoded(cfg, out)["rows"] == 4
    batch = collate({k: got[k] for k in TRAIN_COLUMNS if k in got})
    tokens, cond = batch_tokens(batch, cfg)
    emb, mask = WordsEncoder(cfg.text)(list(got["caption"]))
    assert tokens.shape == (4, 16, 12) and set(cond) == {"text", "mask"}
    torch.testing.assert_close(cond["text"], emb, atol=1e-3, rtol=0)  # float16 storage of values in [-1, 1]
    assert torch.equal(cond["mask"], mask)

    (tmp_path / "shards").mkdir()
    shards = _webdataset(tmp_path / "shards" / "00000.tar")
    out = tmp_path / "enc-wds"
    cfg = text_config(tiny, "data.source=webdataset", f"data.shards={tmp_path / 'shards'}", f"data.encoded_dir={out}",
                      "data.on_bad_image=skip")
    manifest = encode(cfg)
    assert manifest["rows"] == 3 and manifest["tar_shards"] == 1 and manifest["root"] is None
    assert manifest["skipped"] == 1 and manifest["skipped_kinds"] == {"incomplete sample": 1}  # probe + task: once
    assert (out / "bad_captions.txt").read_text().startswith(f"{shards}/000000003\tincomplete sample")
    got = _rows(out, manifest)
    assert list(got["key"]) == [f"00000.tar/{k}" for k in SHARD]
    _check_rows(cfg, got, [_image_bytes(i, "JPEG") for i in range(3)], list(SHARD.values()))


def test_encode_without_stored_text_keeps_captions_and_a_bad_image_in_a_read_task_stops_it(ray_session, tiny,
                                                                                              tmp_path):
    root = _caption_folder(tmp_path / "pics", bad=False)
    out = tmp_path / "enc"
    cfg = text_config(tiny, "data.source=caption_folder", f"data.root={root}", f"data.encoded_dir={out}",
                      "text.precompute=false")
    manifest = encode(cfg)
    assert manifest["rows"] == 4 and manifest["skipped"] == 0 and manifest["skipped_kinds"] == {}
    assert "text_shape" not in manifest and "text" not in manifest and not (out / "bad_captions.txt").exists()
    names = set(pq.read_schema(out / manifest["files"][0]["name"]).names)
    assert {"caption", "moments"} <= names and not names & {"text_emb", "text_len"}
    got = _rows(out, manifest)
    assert "text_emb" not in got
    batch = collate({k: got[k] for k in TRAIN_COLUMNS if k in got})
    assert batch["caption"] == [" ".join(FOLDER[k].split()) for k in sorted(FOLDER)]
    _, cond = batch_tokens(batch, cfg)  # the captions encoded now, in the worker
    emb, mask = WordsEncoder(cfg.text)(batch["caption"])
    assert torch.equal(cond["text"], emb) and torch.equal(cond["mask"], mask)

    _cut(root)  # its header reads: only a Ray read task finds it broken
    with pytest.raises(BadCaptionError, match=r"^bad caption entry \S*/cut.png: unreadable image: .*data.on_bad_"
                                              r"image=skip"):
        encode(text_config(tiny, "data.source=caption_folder", f"data.root={root}", "text.precompute=false",
                           f"data.encoded_dir={tmp_path / 'enc-fail'}"))
    assert not (tmp_path / "enc-fail").exists()


def test_bad_entries_stop_the_encode_before_ray_with_fail(tiny, tmp_path):
    root = _caption_folder(tmp_path / "pics")
    with pytest.raises(BadCaptionError, match=r"bad caption entry \S*/lonely.png: no caption: no lonely.txt beside "
                                              r"it.*data.on_bad_image=skip"):
        encode(text_config(tiny, "data.source=caption_folder", f"data.root={root}",
                           f"data.encoded_dir={tmp_path / 'enc'}"))
    shard = _webdataset(tmp_path / "00000.tar")
    with pytest.raises(BadCaptionError, match=rf"bad sample {shard}/000000003: incomplete sample"):
        encode(text_config(tiny, "data.source=webdataset", f"data.shards={shard}",
                           f"data.encoded_dir={tmp_path / 'enc'}"))
    assert not (tmp_path / "enc").exists()


@pytest.mark.parametrize("keys, key", [
    (["data.source=caption_folder"], "needs data.root"),  # a preset may leave where the data is to --set
    (["data.source=webdataset"], "needs data.shards"),
    (["data.source=webdataset", "data.shards=/d", "tokenizer.channels=2"], r"channels=1\) or RGB \(3\)"),
    (["data.source=webdataset", "data.shards=/d/x.tar", "model.condition=class"], "set model.condition=text"),
    (["data.source=caption_folder", "data.root=/d", "tokenizer.frames=4"], "set tokenizer.frames=0"),
])
def test_caption_source_keys_are_checked_by_the_config_or_before_encoding(tiny, keys, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        encode_settings(text_config(tiny, *keys))


def test_encode_settings_name_the_captions_only_for_their_sources(tiny, tmp_path):
    assert not {"caption_layout", "captions", "shards"} & set(encode_settings(tiny()))
    folder = encode_settings(text_config(tiny, "data.source=caption_folder", f"data.root={tmp_path}",
                                         "data.captions=meta/caps.csv"))
    assert folder["root"] == str(tmp_path.resolve()) and folder["caption_layout"] == "auto"
    assert folder["captions"] == str(tmp_path.resolve() / "meta" / "caps.csv")
    shards = encode_settings(text_config(tiny, "data.source=webdataset", f"data.shards=['{tmp_path}/{{0..9}}.tar']"))
    assert shards["shards"] == [f"{tmp_path.resolve()}/{{0..9}}.tar"] and shards["root"] is None
