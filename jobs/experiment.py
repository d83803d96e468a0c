"""An experiment over training settings: arms (training-config overrides) x seeds, each cell a full Ray Train run
with online evaluation, run as Ray Tune trials; curves with a band over seeds, a table at chosen steps and the
steps each arm needs to reach a threshold (the paper's Table 6 and its FID-vs-epoch figure).

    python jobs/experiment.py --config configs/ablation-mnist.yaml
    python jobs/experiment.py --config configs/ablation-mnist.yaml --set experiment.concurrent=2 train.eval_samples=200

--set takes experiment.* (the experiment's own keys) and any training key (applied to every cell). Running the
same command again resumes: finished cells are not run again, unfinished ones continue from their checkpoints.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.cli import run  # noqa: E402
from djepa.config import ConfigError  # noqa: E402
from djepa.platform.experiment_config import load_experiment  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="an experiment YAML (e.g. configs/ablation-mnist.yaml)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="experiment.* or training overrides")
    args = ap.parse_args()
    try:
        spec, cells = load_experiment(args.config, args.set)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from djepa.platform.experiment import run_experiment  # noqa: E402  (imports Ray: only after the config is valid)

    run(run_experiment, spec, cells)
