"""Encoded datasets and reference statistics carry sha256 digests from when they were written; a file damaged in
place (same size, other bytes) is named before anything uses it, with what to do. Eval shards: the zip CRC of
every member (test_eval_shards.py)."""
import json
import shutil

import numpy as np
import pytest

from djepa.data.encoded import DatasetError, open_encoded
from djepa.digest import file_sha256
from djepa.eval.reference import ReferenceError, embedded_reference, load_reference


def _damage(path, at=0.5, n=64):
    """Overwrite n bytes in the middle of a file: its size and footer stay as they were."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i:i + n] = bytes(b ^ 0xFF for b in data[i:i + n])
    path.write_bytes(bytes(data))


def test_encoded_shard_damaged_in_place_is_named_before_training(tiny, tmp_path, encoded_digits, capsys):
    data = tmp_path / "enc"
    shutil.copytree(encoded_digits, data)
    manifest = json.loads((data / "manifest.json").read_text())
    assert all(f["sha256"] == file_sha256(data / f["name"]) for f in manifest["files"])
    open_encoded(tiny(), data)
    assert f"[data] {data}: sha256 of 4 shard(s)" in capsys.readouterr().out

    shard = data / manifest["files"][2]["name"]
    size = shard.stat().st_size
    _damage(shard)
    assert shard.stat().st_size == size
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    with pytest.raises(DatasetError, match=rf"shard {shard} is damaged: its content does not match the sha256 "
                                           rf"recorded in {data}/manifest.json .*delete {data} and encode it"):
        open_encoded(tiny(), data)
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_dataset_encoded_before_hashes_keeps_working_with_a_note(tiny, tmp_path, encoded_digits, capsys):
    data = tmp_path / "old"
    shutil.copytree(encoded_digits, data)
    manifest = json.loads((data / "manifest.json").read_text())
    for f in manifest["files"]:
        del f["sha256"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert open_encoded(tiny(), data)["rows"] == manifest["rows"]
    assert "encoded before shard hashes were recorded" in capsys.readouterr().out
    manifest["files"][0]["bytes"] += 1  # the size recorded in every manifest is checked too
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=rf"shard {data}/{manifest['files'][0]['name']} has [\d,]+ bytes but the "
                                           r"manifest says"):
        open_encoded(tiny(), data)


@pytest.fixture
def reference(tmp_path):
    from djepa.eval.features import DomainExtractor

    embedded_reference("digits", [DomainExtractor("digits", str(tmp_path))], keep=50, out=tmp_path / "ref.npz")
    return tmp_path / "ref.npz"


def test_reference_damaged_in_place_is_named_with_how_to_remake_it(reference, capsys):
    with np.load(reference) as z:
        assert json.loads(str(z["meta"]))["arrays_sha256"]
    ref = load_reference(reference, ["domain"])
    assert ref["sha256"] == file_sha256(reference)
    assert "no recorded sha256" not in capsys.readouterr().out

    size = reference.stat().st_size
    _damage(reference, at=0.3)  # inside the stored arrays
    assert reference.stat().st_size == size
    with pytest.raises(ReferenceError, match=rf"{reference} \(eval.reference\) is damaged .*delete it and make one "
                                             r"with `python jobs/reference.py"):
        load_reference(reference, ["domain"])


def test_reference_changed_and_resaved_is_refused(reference):
    """A rewritten file has valid zip CRCs: only the recorded sha256 tells that its statistics changed."""
    with np.load(reference) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["mu_domain"] = arrays["mu_domain"] + 1e-3
    np.savez(reference, **arrays)
    with pytest.raises(ReferenceError, match=rf"{reference} \(eval.reference\) is damaged: its arrays do not match "
                                             r"the sha256 recorded in it"):
        load_reference(reference, ["domain"])


def test_foreign_reference_without_hash_loads_and_is_identified_by_its_file_sha256(tmp_path, capsys):
    adm = tmp_path / "VIRTUAL_like.npz"  # ADM's layout: mu, sigma, arr_0, no meta
    rng = np.random.default_rng(0)
    np.savez(adm, mu=rng.normal(size=8), sigma=np.eye(8), arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    ref = load_reference(adm, ["inception"], {"inception": 8})
    assert ref["sha256"] == file_sha256(adm) and ref["meta"] == {}
    assert f"[eval] {adm} has no recorded sha256" in capsys.readouterr().out
