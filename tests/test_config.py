import pytest

from djepa.config import Config, ConfigError, load_config

PRESETS = ["digits", "djepa-b", "djepa-l", "djepa-h", "mar-b"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(name, tmp_path):
    cfg = load_config(f"configs/{name}.yaml")
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"c{suffix}"
        path.write_text(cfg.to_yaml() if suffix == ".yaml" else cfg.to_json())
        again = load_config(path)
        assert again == cfg
        assert again.hash() == cfg.hash()


def test_imagenet_presets_have_256_tokens_of_16_dims():
    for name in ("djepa-b", "djepa-l", "djepa-h", "mar-b"):
        tok = load_config(f"configs/{name}.yaml").tokenizer
        assert (tok.num_tokens, tok.token_dim, tok.vae.scale_factor) == (256, 16, 0.2325)
    assert load_config("configs/mar-b.yaml").model.pred_loss_weight == 0.0


def test_override_sets_nested_value_with_yaml_types():
    cfg = load_config("configs/digits.yaml", ["model.encoder_depth=4", "model.qk_norm=rms", "train.blr=3e-4"])
    assert cfg.model.encoder_depth == 4 and cfg.model.qk_norm == "rms" and cfg.train.blr == 3e-4


def test_unknown_key_names_path_and_closest_key():
    with pytest.raises(ConfigError) as e:
        load_config("configs/digits.yaml", ["model.encoder_dept=4"])
    msg = str(e.value)
    assert "model.encoder_dept: unknown key" in msg and "did you mean 'model.encoder_depth'" in msg


def test_unknown_nested_key_in_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  token_loss:\n    widht: 64\n")
    with pytest.raises(ConfigError, match=r"model\.token_loss\.widht: unknown key.*model\.token_loss\.width"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("override, key", [
    ("model.width=abc", "model.width"),
    ("train.batch_size=0", "train.batch_size"),
    ("model.label_drop=1.5", "model.label_drop"),
    ("model.token_loss.kind=gan", "model.token_loss.kind"),
    ("sample.temperature=-1", "sample.temperature"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"{key.replace('.', r'[.]')}"):
        load_config("configs/digits.yaml", [override])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="ar_steps"):
        load_config("configs/digits.yaml", ["sample.ar_steps=17"])  # 16 tokens
    with pytest.raises(ConfigError, match="num_heads"):
        load_config("configs/digits.yaml", ["model.num_heads=3"])
    with pytest.raises(ConfigError, match="patch_size"):
        load_config("configs/digits.yaml", ["tokenizer.patch_size=3"])


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config("configs/digits.yaml", ["model.width"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.yaml")


def test_lr_scales_with_global_batch():
    cfg = load_config("configs/djepa-b.yaml")
    assert cfg.train.lr == pytest.approx(8e-4)  # 1e-4 * 2048 / 256, the paper's value
    assert Config().train.lr == pytest.approx(1e-4 * 64 / 256)
