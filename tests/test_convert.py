"""jobs/convert.py: the D-JEPA authors' layout, refusals that name the file, and the reproduction
recipe end to end on the tiny MAR fixtures (convert VAE and model, encode, reference, evaluate)."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from djepa.checkpoint import load_weights
from djepa.config import load_config
from djepa.models.djepa import build_model

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "mar"


def convert(*args, check=True):
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "convert.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def authors_state(seed=0):
    """A state dict with the key names and shapes of the authors' models/djepa.py (+ models/block.py with
    qk_norm), filled at random; and the reference forward of their encoder/decoder written from that file."""
    cfg = load_config("configs/digits.yaml", ["model.width=32", "model.num_heads=2", "model.encoder_depth=2",
                                              "model.predictor_depth=2", "model.qk_norm=rms", "model.token_loss.depth=2",
                                              "model.token_loss.width=48", "model.buffer_size=4"])
    torch.manual_seed(seed)
    ours = build_model(cfg.model, cfg.tokenizer).state_dict()
    d, buf, n = 32, 4, cfg.tokenizer.num_tokens
    g = torch.Generator().manual_seed(seed + 1)
    rnd = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    theirs = {"buffer": rnd(1, buf, d), "encoder_pos_embed_learned": rnd(1, n, d), "decoder_pos_embed_learned": rnd(1, n, d),
              "fake_latent": rnd(1, d), "class_emb.weight": rnd(10, d), "mask_token": rnd(1, 1, d),
              "z_proj.weight": rnd(d, cfg.tokenizer.token_dim), "z_proj.bias": rnd(d), "z_proj_ln.weight": 1 + rnd(d),
              "z_proj_ln.bias": rnd(d), "encoder_norm.weight": 1 + rnd(d), "encoder_norm.bias": rnd(d),
              "decoder_embed.weight": rnd(d, d), "decoder_embed.bias": rnd(d), "decoder_norm.weight": 1 + rnd(d),
              "decoder_norm.bias": rnd(d),
              "jepaloss.proj.0.weight": rnd(4 * d, d), "jepaloss.proj.0.bias": rnd(4 * d)}  # unreleased layout
    for ours_prefix, their_prefix in (("encoder_blocks.", "encoder_blocks."), ("predictor_blocks.", "decoder_blocks.")):
        for k, v in ours.items():
            if k.startswith(ours_prefix):
                theirs[their_prefix + k[len(ours_prefix):]] = rnd(*v.shape) + (1.0 if "norm" in k and "weight" in k else 0)
    mar_names = {"token_loss.net.blocks.": "diffloss.net.res_blocks.", "token_loss.net.final.": "diffloss.net.final_layer.linear.",
                 "token_loss.net.final_ada.": "diffloss.net.final_layer.adaLN_modulation.", "token_loss.net.": "diffloss.net."}
    for k, v in ours.items():
        if k.startswith("token_loss.net."):
            name = next(m + k[len(o):] for o, m in mar_names.items() if k.startswith(o))
            name = name.replace(".norm.", ".in_ln.").replace(".ada.", ".adaLN_modulation.")
            theirs[name] = rnd(*v.shape)
    assert any(k.endswith("attn.q_norm.weight") for k in theirs)
    return cfg, theirs


def test_authors_layout_converts_and_matches_their_forward(tmp_path):
    cfg, theirs = authors_state()
    src = tmp_path / "djepa_tiny.pth"
    torch.save({"model": theirs, "model_ema": theirs, "epoch": 3,
                "args": argparse.Namespace(model="djepa_tiny", qk_norm=True, adamw_eps="1e-6", temperature=0.94)}, src)
    proc = convert("djepa", "--src", src, "--out", tmp_path / "ckpt", "--preset", "configs/digits.yaml",
                   "--set", "model.num_heads=2", "model.token_loss.depth=2", "model.token_loss.width=48")
    assert "dropped 2 jepaloss.* tensors" in proc.stdout
    conv, _, ema = load_weights(tmp_path / "ckpt")
    assert conv.model.qk_norm == "rms" and conv.train.adam_eps == 1e-6 and conv.sample.temperature == 0.94
    assert conv.model.buffer_size == 4 and conv.sample.cfg_schedule == "mar_linear"
    ema.eval()
    # their forward_encoder / forward_decoder, written from models/djepa.py, with our converted blocks
    b, n = 2, conv.tokenizer.num_tokens
    x = torch.randn(b, n, conv.tokenizer.token_dim)
    labels = torch.tensor([1, 7])
    keep = torch.stack([torch.randperm(n)[:5].sort().values for _ in range(b)])
    with torch.no_grad():
        h = torch.nn.functional.linear(x, theirs["z_proj.weight"], theirs["z_proj.bias"]) + theirs["encoder_pos_embed_learned"]
        buffer = theirs["buffer"] + theirs["class_emb.weight"][labels].unsqueeze(1)
        h = torch.cat([buffer, torch.gather(h, 1, keep[..., None].expand(-1, -1, 32))], dim=1)
        h = torch.nn.functional.layer_norm(h, (32,), theirs["z_proj_ln.weight"], theirs["z_proj_ln.bias"], 1e-6)
        for blk in ema.encoder_blocks:
            h = blk(h)
        enc = torch.nn.functional.layer_norm(h, (32,), theirs["encoder_norm.weight"], theirs["encoder_norm.bias"], 1e-6)
        y = torch.nn.functional.linear(enc, theirs["decoder_embed.weight"], theirs["decoder_embed.bias"])
        pad = theirs["mask_token"].repeat(b, 4 + n, 1).clone()
        pad[:, :4] = y[:, :4]
        pad[:, 4:] = pad[:, 4:].scatter(1, keep[..., None].expand(-1, -1, 32), y[:, 4:])
        pad[:, 4:] += theirs["decoder_pos_embed_learned"]
        for blk in ema.predictor_blocks:
            pad = blk(pad)
        z = torch.nn.functional.layer_norm(pad, (32,), theirs["decoder_norm.weight"], theirs["decoder_norm.bias"], 1e-6)[:, 4:]
        ours_enc = ema.encode(x, keep, ema.class_embedding(labels))
        assert torch.allclose(ours_enc, enc, atol=1e-5)
        assert torch.allclose(ema.predict(ours_enc, keep), z, atol=1e-5)
    assert torch.equal(ema.token_loss.net.blocks[1].norm.weight, theirs["diffloss.net.res_blocks.1.in_ln.weight"])


def test_refusals_name_the_file(tmp_path, capsys):
    """Each refusal exits 2 with the file named and writes nothing (jobs/convert.py's main, in process)."""
    sys.path.insert(0, str(REPO / "jobs"))
    from convert import main

    def refused(kind, src, out, *extra):
        assert main([kind, "--src", str(src), "--out", str(tmp_path / out), *extra]) == 2
        assert not (tmp_path / out).exists()
        return capsys.readouterr().err

    # a pickle that needs a class outside the allow-list
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {}, "args": Path("/x")}, foreign)
    err = refused("mar", foreign, "o1")
    assert str(foreign) in err and "PosixPath" in err and "Nothing was unpickled" in err
    # a truncated file
    cut = tmp_path / "cut.pth"
    cut.write_bytes((FIX / "mar_tiny.pth").read_bytes()[:200_000])
    err = refused("mar", cut, "o2")
    assert str(cut) in err and "truncated or corrupt" in err
    # the wrong kind of checkpoint for the subcommand, both ways
    err = refused("mar", FIX / "kl_vae.ckpt", "o3")
    assert "kl_vae.ckpt" in err and "use `convert.py vae`" in err
    err = refused("vae", FIX / "mar_tiny.pth", "o4")
    assert "mar_tiny.pth" in err and "convert.py mar" in err
    # VAE keys of an unknown layout
    from safetensors.torch import save_file

    from djepa.convert.vae import vae_state_dict

    sd = vae_state_dict(FIX / "kl_vae.ckpt")
    sd["encoder.down.4.attn.0.rel_pos.weight"] = torch.zeros(3)
    odd = tmp_path / "odd_vae.safetensors"
    save_file(sd, str(odd))
    err = refused("vae", odd, "o5")
    assert str(odd) in err and "encoder.down.4.attn.0.rel_pos.weight" in err
    # MAR without a known factory name: the head count is asked for, not guessed
    err = refused("mar", FIX / "mar_tiny.pth", "o6")
    assert "model.num_heads" in err


def test_reproduction_recipe_runs_end_to_end_on_the_tiny_fixtures(tmp_path):
    """docs/reproducing.md, every command, on the tiny fixtures instead of the downloads."""
    from djepa.eval.features import random_inception_weights

    env = os.environ | {"RAY_ADDRESS": "local", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}

    def job(*args):
        proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    vae, ckpt = tmp_path / "kl16-vae", tmp_path / "mar-tiny"
    out = job("jobs/convert.py", "vae", "--src", FIX / "kl_vae.ckpt", "--out", vae)
    assert "encoder attention at levels [4]" in out
    # the released MAR-B needs no --set: its args.model names the factory
    out = job("jobs/convert.py", "mar", "--src", FIX / "mar_tiny.pth", "--out", ckpt, "--vae", vae,
              "--set", "model.num_heads=4")
    assert "every key placed" in out
    # "ImageNet": 2 classes of 64x64 images
    root = tmp_path / "imagenet" / "train"
    rng = np.random.default_rng(0)
    for c in ("n01440764", "n01443537"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(root / c / f"{i}.JPEG")
    weights = random_inception_weights(tmp_path / "inception.pth")
    enc = tmp_path / "encoded"
    job("jobs/encode.py", "--config", ckpt / "config.yaml", "--set", f"data.root={root}", f"data.encoded_dir={enc}",
        "data.encode_batch_size=4")
    assert (enc / "manifest.json").is_file()
    ref = tmp_path / "ref.npz"  # stands in for ADM's VIRTUAL_imagenet256_labeled.npz
    job("jobs/reference.py", "--config", ckpt / "config.yaml", "--out", ref, "--set", f"data.root={root}",
        f"eval.inception_weights={weights}", "eval.reference_images=12")
    out = job("jobs/evaluate.py", "--checkpoint", ckpt, "--num-samples", 6, "--set", "sample.cfg=2.9",
              "sample.cfg_schedule=mar_linear", "sample.ar_steps=4", "sample.temperature=1.0",
              "model.token_loss.diffusion.sample_steps=5", f"eval.reference={ref}", f"eval.inception_weights={weights}",
              "eval.workers=1", "eval.cpus_per_worker=1", "eval.is_splits=1", "eval.pr_k=2",
              f"tokenizer.vae.weights={vae}")  # the VAE's path may be set per machine
    assert "fid" in out
    with np.load(next(tmp_path.glob("eval/*/samples.npz"))) as z:
        assert z["arr_0"].shape == (6, 64, 64, 3)
    # the paper's sweep takes the converted checkpoint as is (validated here; its trials are the evaluation above)
    from djepa.platform.sweep_config import load_sweep

    cfg, spec = load_sweep(ckpt, REPO / "configs" / "sweep-paper.yaml",
                           ["sweep.coarse.ar_steps=16", "sweep.ar_steps.values=[4, 8]", f"tokenizer.vae.weights={vae}"])
    assert cfg.tokenizer.vae.weights == str(vae) and spec.metric == "fid" and cfg.sample.cfg_schedule == "mar_linear"
