"""Encode a dataset once: images -> tokenizer moments of each image and its flip -> Parquet shards + manifest.json.

    python jobs/encode.py --config configs/digits.yaml [--set data.encoded_dir=/shared/encoded/digits]
    python jobs/encode.py --config configs/djepa-b.yaml --set data.root=/data/imagenet/train \\
        data.encoded_dir=/shared/encoded/in256 data.encode_workers=8 data.encode_gpus=1

Running it again on a finished output does nothing.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.cli import parse, run  # noqa: E402
from djepa.data.encode import encode  # noqa: E402

if __name__ == "__main__":
    cfg, _ = parse(__doc__)
    run(encode, cfg)
