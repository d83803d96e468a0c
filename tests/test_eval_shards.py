"""Sample identity, shard files and feature extractors, without Ray."""
import json
import urllib.error

import numpy as np
import pytest
import torch

from djepa.conditions import conditions_of
from djepa.config import load_config
from djepa.eval.shards import ShardError, load_shard, plan, write_adm_npz, write_shard
from djepa.models.djepa import build_model
from djepa.samples import sample_images

DIGITS = load_config("configs/digits.yaml")  # 10 classes


def labels_of(start: int, stop: int) -> np.ndarray:
    return conditions_of(DIGITS, start, stop)


def test_a_sample_depends_on_its_index_only_not_on_batch_size_or_subset(tiny):
    cfg = tiny("sample.batch_size=7")
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.tokenizer).eval()
    labels = labels_of(0, 20)
    whole = sample_images(model, cfg, labels)
    cfg5 = tiny("sample.batch_size=5")
    assert np.array_equal(whole, sample_images(model, cfg5, labels))
    # any subset regenerates bit-exactly
    assert np.array_equal(whole[13:17], sample_images(model, cfg5, labels[13:17], indices=np.arange(13, 17)))
    assert not np.array_equal(whole[:4], whole[10:14])  # same labels, other seeds: other images


def test_labels_are_interleaved_and_balanced():
    assert labels_of(0, 25).tolist() == [i % 10 for i in range(25)]
    assert labels_of(12, 15).tolist() == [2, 3, 4]
    assert plan(10, 4) == [(0, 4), (4, 8), (8, 10)]


def _arrays(start, stop):
    rng = np.random.default_rng(start)
    return {"images": rng.integers(0, 256, (stop - start, 8, 8, 1), dtype=np.uint8),
            "labels": labels_of(start, stop), "indices": np.arange(start, stop)}


def test_shard_round_trip_and_adm_npz(tmp_path):
    paths = []
    for a, b in plan(10, 4):
        paths.append(tmp_path / f"{a}.npz")
        write_shard(paths[-1], _arrays(a, b), {"sample_hash": "h", "start": a, "stop": b})
    arrays, meta = load_shard(paths[1], "h", 4, 8, (8, 8, 1))
    assert meta["start"] == 4 and np.array_equal(arrays["images"], _arrays(4, 8)["images"])
    out = write_adm_npz(tmp_path / "samples.npz", paths, 10, (8, 8, 1))
    with np.load(out) as z:
        assert sorted(z.files) == ["arr_0", "arr_1"]
        assert np.array_equal(z["arr_0"], np.concatenate([_arrays(a, b)["images"] for a, b in plan(10, 4)]))
        assert z["arr_1"].tolist() == [i % 10 for i in range(10)]


def test_a_corrupt_or_foreign_shard_is_named(tmp_path):
    p = tmp_path / "00000000-00000004.npz"
    write_shard(p, _arrays(0, 4), {"sample_hash": "h", "start": 0, "stop": 4})
    with pytest.raises(ShardError, match="another checkpoint or sampling config") as err:
        load_shard(p, "other", 0, 4, (8, 8, 1))
    assert err.value.kind == "foreign" and err.value.path == p
    data = bytearray(p.read_bytes())
    data[200:260] = bytes(60)  # flip bytes inside the image array: the zip CRC catches it
    p.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=p.name) as err:
        load_shard(p, "h", 0, 4, (8, 8, 1))
    assert err.value.kind == "corrupt"
    p.write_bytes(p.read_bytes()[:100])  # truncated
    with pytest.raises(ShardError, match="unreadable"):
        load_shard(p, "h", 0, 4, (8, 8, 1))


def test_domain_features_are_deterministic_and_separate_real_from_noise(tmp_path):
    from djepa.eval.classifier import real_split
    from djepa.eval.features import DomainExtractor
    from djepa.eval.metrics import FeatureStats, frechet_distance

    ex = DomainExtractor("digits", str(tmp_path))
    again = DomainExtractor("digits", str(tmp_path / "other"))  # trained again from scratch: the same network
    split = real_split("digits")
    f, logits = ex(split["held_x"])
    assert f.shape == (len(split["held_x"]), 128) and logits.shape == (len(split["held_x"]), 10)
    assert torch.equal(f, again(split["held_x"])[0]) and ex.identity == again.identity
    assert ex.info["held_out_accuracy"] > 0.95
    ref = FeatureStats.of(ex(split["train_x"])[0]).mu_sigma()
    noise = np.random.default_rng(0).integers(0, 256, split["held_x"].shape, dtype=np.uint8)
    fd_real = frechet_distance(*FeatureStats.of(f).mu_sigma(), *ref)
    fd_noise = frechet_distance(*FeatureStats.of(ex(noise)[0]).mu_sigma(), *ref)
    assert fd_real * 10 < fd_noise, (fd_real, fd_noise)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """Random weights in the FID Inception's exact layout (the real ones are a download away)."""
    from djepa.eval.features import random_inception_weights

    return random_inception_weights(tmp_path_factory.mktemp("inception") / "weights.pth")


def test_inception_extractor_reads_local_weights(inception_weights):
    from djepa.eval.features import InceptionExtractor

    ex = InceptionExtractor(str(inception_weights), batch_size=3)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)  # grayscale -> 3 channels
    f, logits = ex(images)
    assert f.shape == (4, 2048) and logits.shape == (4, 1008) and torch.isfinite(f).all()
    assert ex.identity.startswith("inception-") and len(ex.identity) == len("inception-") + 16


def test_inception_errors_name_the_setting(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    from djepa.eval.features import FeatureError, InceptionExtractor

    with pytest.raises(FeatureError, match="eval.inception_weights or DJEPA_INCEPTION_WEIGHTS"):
        InceptionExtractor(str(tmp_path / "missing.pth"))

    def offline(*a, **k):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(fe, "load_state_dict_from_url", offline)
    monkeypatch.delenv("DJEPA_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(FeatureError, match="set eval.inception_weights=PATH"):
        InceptionExtractor(None)
    (tmp_path / "evil.pth").write_bytes(b"not a state dict")
    with pytest.raises(FeatureError, match="not a plain state dict"):
        InceptionExtractor(str(tmp_path / "evil.pth"))


def test_reference_file_is_adm_compatible(tmp_path):
    from djepa.eval.features import DomainExtractor
    from djepa.eval.reference import ReferenceError, embedded_reference, load_reference

    ex = DomainExtractor("digits", str(tmp_path))
    info = embedded_reference("digits", [ex], keep=100, out=tmp_path / "ref.npz")
    with np.load(tmp_path / "ref.npz") as z:
        assert {"mu_domain", "sigma_domain", "arr_0", "floor_fd_domain", "meta"} <= set(z.files)
        assert z["arr_0"].shape == (100, 8, 8, 1) and z["sigma_domain"].shape == (128, 128)
    ref = load_reference(tmp_path / "ref.npz", ["domain"])
    assert ref["floors"]["floor_fd_domain"] == info["floor_fd_domain"] > 0
    assert json.loads(json.dumps(ref["meta"]))["source"] == "digits"
    with pytest.raises(ReferenceError, match="'mu'/'sigma' for the inception features"):
        load_reference(tmp_path / "ref.npz", ["inception"])
    with pytest.raises(ReferenceError, match="eval.reference"):
        load_reference(tmp_path / "nope.npz", ["domain"])


def test_reference_of_a_folder_dataset_streams_every_image(ray_session, tmp_path, inception_weights):
    from PIL import Image

    from conftest import tiny_config
    from djepa.eval.features import build_extractors
    from djepa.eval.metrics import FeatureStats
    from djepa.eval.reference import dataset_reference, load_reference

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 8, 8), dtype=np.uint8)
    for i, img in enumerate(imgs):
        (tmp_path / "data" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "data" / f"c{i % 2}" / f"{i}.png")
    cfg = tiny_config("data.source=folder", f"data.root={tmp_path / 'data'}", "eval.features=[inception]",
                      f"eval.inception_weights={inception_weights}", "eval.reference_images=3",
                      "eval.feature_batch_size=4")
    [ex] = build_extractors(cfg)
    info = dataset_reference(cfg, [ex], tmp_path / "ref.npz")
    ref = load_reference(tmp_path / "ref.npz", ["inception"])
    assert info["rows"] == 7 and ref["images"].shape == (3, 8, 8, 1)
    mu, _ = FeatureStats.of(ex(imgs[..., None])[0]).mu_sigma()  # the same images, in memory
    np.testing.assert_allclose(ref["stats"]["inception"][0], mu, rtol=1e-4, atol=1e-5)


def test_evaluate_job_names_a_missing_checkpoint_without_starting_ray(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "jobs/evaluate.py", "--checkpoint", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"checkpoint {tmp_path / 'nope'} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and "Ray" not in proc.stdout + proc.stderr
