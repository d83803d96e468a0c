"""Reference statistics for FID / FD and the reference images for precision/recall, in ADM's .npz format.

    python jobs/reference.py --config configs/digits.yaml --out refs/digits.npz          # bundled data
    python jobs/reference.py --config configs/djepa-b.yaml --set data.root=/data/imagenet/train \\
        eval.inception_weights=/weights/pt_inception-2015-12-05-6726825d.pth --out refs/imagenet256.npz
    python jobs/reference.py --config configs/djepa-b.yaml --from encoded --out refs/imagenet256-vae.npz

--from raw (default) reads the images as the encode job does (ADM's centre crop); --from encoded decodes
the posterior means of an encoded dataset (the best a model of that tokenizer can reach). The bundled
datasets use the 80% split their domain classifier was trained on and record the held-out 20% as the floor.
For ImageNet 256 ADM's VIRTUAL_imagenet256_labeled.npz can be used directly as eval.reference.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.cli import parse, run  # noqa: E402


def _flags(ap):
    ap.add_argument("--out", required=True, help="the .npz to write (refused if it exists)")
    ap.add_argument("--from", dest="source", choices=["raw", "encoded"], default="raw",
                    help="raw images (default) or the decoded posterior means of data.encoded_dir")


def main(cfg, out: str, source: str) -> dict:
    import json

    from djepa.console import say
    from djepa.eval.features import build_extractors
    from djepa.eval.reference import dataset_reference, embedded_reference
    from djepa.local import resolve_device

    out_path = Path(out).resolve()
    if out_path.exists():
        raise FileExistsError(f"{out_path} exists; delete it or choose another --out")
    extractors = build_extractors(cfg, resolve_device("auto"))
    say("reference", f"{cfg.data.source} ({source}) with {[ex.identity for ex in extractors]} -> {out_path}")
    if cfg.data.source in ("digits", "mnist5k") and source == "raw":
        info = embedded_reference(cfg.data.source, extractors, cfg.eval.reference_images, out_path)
    else:
        info = dataset_reference(cfg, extractors, out_path, source)
    say("reference", f"wrote {out_path}: {json.dumps(info)}")
    say("reference", f"use it with --set eval.reference={out_path}")
    return info


if __name__ == "__main__":
    cfg, args = parse(__doc__, add_args=_flags)
    run(main, cfg, args.out, args.source)
