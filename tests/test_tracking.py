"""MLflow where a trainer looks: the experiment opens in MLflow 3's model-training view, training runs have
names a person can tell apart, and figures are readable at their natural size (a real SQLite store)."""
import re

import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image

from djepa.config import load_config
from djepa.eval.sweep_plots import heat_map
from djepa.platform.tracking import EXPERIMENT_KIND_TAG, config_diff, run_url, start_run, training_run_name
from djepa.samples import grid_scale, save_grid_png


def test_experiments_are_model_training_ones(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("configs/mnist.yaml", [f"tracking.tracking_uri={uri}", "tracking.experiment=new"])
    tracker = start_run(cfg, tmp_path / "run", None, run_name=training_run_name(cfg))
    client = MlflowClient(uri)
    assert client.get_experiment_by_name("new").tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert client.get_run(tracker.run_id).info.run_name.startswith("mnist ")

    client.create_experiment("old")  # made before this change: no kind, so the UI would open its GenAI view
    client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})  # a user's choice
    for name in ("old", "chosen"):
        start_run(cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"experiment": name})}),
                  tmp_path / name, None)
    assert client.get_experiment_by_name("old").tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert client.get_experiment_by_name("chosen").tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_printed_links_open_the_model_training_view():
    # MLflow 3.17's UI follows its GenAI / Model-training switch (default GenAI), not the experiment tag:
    # in headless Chromium the tagged experiment opened on GenAI's Overview, with this parameter on Runs
    for uri in ("http://mlflow:5000/", "sqlite:////tmp/mlflow.db"):
        assert run_url(uri, "1", "abc").endswith("#/experiments/1/runs/abc?workflowType=machine_learning")


def test_training_run_names_say_config_what_differs_and_when():
    plain = training_run_name(load_config("configs/mnist.yaml"))
    assert re.fullmatch(r"mnist \d{4}-\d\d-\d\d \d\d:\d\d", plain), plain
    cfg = load_config("configs/mnist.yaml", ["train.steps=2000", "train.out_dir=/elsewhere", "sample.cfg=2.0",
                                              "tracking.experiment=x"])
    assert config_diff(cfg) == ["train.steps=2000", "sample.cfg=2.0"]  # where outputs go is not a difference
    assert re.fullmatch(r"mnist train\.steps=2000 sample\.cfg=2\.0 \d{4}-\d\d-\d\d \d\d:\d\d", training_run_name(cfg))
    many = load_config("configs/mnist.yaml", ["train.steps=1", "train.seed=3", "sample.cfg=2.0", "model.width=64"])
    assert " +1 more " in training_run_name(many)
    named = load_config("configs/mnist.yaml", ["tracking.run_name=baseline"])
    assert training_run_name(named) == "baseline"
    custom = load_config("configs/mnist.yaml", ["name=my-experiment"])  # no preset file: name and date only
    assert re.fullmatch(r"my-experiment \d{4}-\d\d-\d\d \d\d:\d\d", training_run_name(custom))


def test_heat_map_has_room_for_its_title_and_values(tmp_path):
    trials = [{"point": {"cfg": c, "temperature": t}, "metrics": {"fd_domain": 10 * c + t}}
              for c in (1.0, 2.0, 3.0) for t in (0.9, 1.0, 1.1)]
    title = "cfg_temperature: fd_domain, 200 samples, 8 AR steps"
    path = heat_map(trials, "fd_domain", tmp_path / "h.png", title, trials[0])
    w, h = Image.open(path).size
    assert w >= 600 and h >= 450, (w, h)  # was 336 x 297 for the demo's 3 x 3 sweep


def test_sample_grids_are_upscaled_to_about_112_px_per_image(tmp_path):
    assert (grid_scale(28), grid_scale(8), grid_scale(256)) == (4, 14, 1)
    images = np.zeros((20, 28, 28, 1), np.uint8)
    w, h = Image.open(save_grid_png(tmp_path / "g.png", images, ncol=10, scale=grid_scale(28))).size
    assert (w, h) == ((10 * 29 + 1) * 4, (2 * 29 + 1) * 4)
