"""Convert published checkpoints into what djepa loads.

    python jobs/convert.py vae   --src kl16.ckpt --out weights/kl16-vae
    python jobs/convert.py mar   --src mar_base/checkpoint-last.pth --out ckpt/mar-b --vae weights/kl16-vae
    python jobs/convert.py djepa --src djepa_base.pth --out ckpt/djepa-b --vae weights/kl16-vae

vae:   an LDM / MAR KL autoencoder (`{"model": state_dict}` .ckpt, or .safetensors) -> a diffusers
       AutoencoderKL directory for tokenizer.vae.weights; the architecture is read from the keys.
mar:   MAR's checkpoint-last.pth -> a djepa checkpoint directory (model + EMA weights, config.yaml, state.json)
       that jobs/sample.py, evaluate.py and sweep.py take as is. The preset comes from args.model
       (mar_base/large/huge) unless --preset is given; --set overrides any key of the converted config.
djepa: the D-JEPA authors' layout (their released models/djepa.py) -> a djepa checkpoint directory.
Pickled files are opened with torch.load(weights_only=True); only argparse.Namespace is allowed.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["vae", "mar", "djepa"])
    ap.add_argument("--src", required=True, help="the published file (.pth / .ckpt / .safetensors)")
    ap.add_argument("--out", required=True, help="the directory to write (refused if it exists)")
    ap.add_argument("--preset", help="mar/djepa: the config to start from (default: from the file's args.model)")
    ap.add_argument("--vae", help="mar/djepa: a converted VAE directory, recorded as tokenizer.vae.weights")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="mar/djepa: config overrides")
    args = ap.parse_args(argv)
    from djepa.convert.files import ConvertError

    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; remove it or choose another --out", file=sys.stderr)
        return 2
    if args.kind == "vae" and (args.preset or args.vae or args.set):
        print("error: --preset, --vae and --set apply to `mar` and `djepa` only", file=sys.stderr)
        return 2
    try:
        if args.kind == "vae":
            from djepa.convert.vae import convert_vae

            convert_vae(args.src, out)
        elif args.kind == "mar":
            from djepa.convert.mar import convert_mar

            convert_mar(args.src, out, args.preset, args.vae, args.set)
        else:
            from djepa.convert.authors import convert_authors

            convert_authors(args.src, out, args.preset, args.vae, args.set)
    except ConvertError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
