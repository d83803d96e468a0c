"""Two Ray nodes on one machine (ray.cluster_utils.Cluster): training with a worker on each node survives the
loss of a node, and so does an evaluation. Run by tests/test_multinode.py in a process of its own (a second
Ray cluster cannot live inside the suite's Ray session); prints one JSON line with what it saw.

    python tests/multinode_scenario.py OUT_DIR
"""
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.state import list_actors  # noqa: E402

from conftest import tiny_config  # noqa: E402
from djepa.platform import evaluator  # noqa: E402
from djepa.platform.evaluator import eval_config, evaluate  # noqa: E402
from djepa.platform.trainer import train  # noqa: E402

# a worker / actor takes 2 CPUs: one per node, and the third CPU of each node stays free for Ray Data's
# tasks (a node whose CPUs are all held by training workers deadlocks the data pipeline)
NODE = {"num_cpus": 3}


class HeldShardWorker(evaluator.ShardWorker):
    """A generation actor that waits, before its shard, while the file `hold` exists. With the hold on, each
    actor is alive and holding a shard when the node goes: a real shard is lost whatever the machine's speed
    (waiting for a written shard instead lost the race on a slow CI machine: the head-node actor did every
    shard while the other one was still starting). Defined in __main__, so Ray ships it by value."""

    hold: str = ""

    def run(self, *args, **kwargs):
        t0 = time.monotonic()
        while self.hold and Path(self.hold).exists():
            if time.monotonic() - t0 > 300:
                raise TimeoutError(f"{self.hold} was never removed")
            time.sleep(0.05)
        return super().run(*args, **kwargs)


def in_background(fn, *args) -> tuple[threading.Thread, dict]:
    """Run the job in a thread: adding a Ray node must happen in the main thread (it installs signal handlers)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # handed to the main thread
            box["error"] = err
    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def wait_for(ready, th: threading.Thread, timeout: float = 300.0) -> bool:
    """Poll `ready()` (files the job writes) while the job runs; False if the job ended first."""
    t0 = time.monotonic()
    while not ready():
        if not th.is_alive() or time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.2)
    return True


def finish(th: threading.Thread, box: dict):
    th.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def nodes_of(class_name: str) -> list[str]:
    return sorted({a.node_id for a in list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])})


def swap_worker_node(cluster: Cluster, state: dict, class_name: str, seen: dict, key: str):
    """Kill the non-head node that hosts a `class_name` actor, then add a fresh node in its place."""
    seen[f"{key}_nodes_before"] = len(nodes_of(class_name))
    node = state["node"]
    cluster.remove_node(node, allow_graceful=False)
    state["node"] = cluster.add_node(**NODE)
    seen[f"{key}_node_removed"] = True


def main(out: Path) -> dict:
    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    state = {"node": cluster.add_node(**NODE)}
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    seen: dict = {}
    run = out / "run"
    cfg = tiny_config(f"train.out_dir={run}", f"data.encoded_dir={out / 'encoded'}", "data.rows_per_file=500",
                      f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}", "train.workers=2",
                      "train.cpus_per_worker=2", "train.batch_size=64", "train.steps=30", "train.checkpoint_every=10",
                      "train.max_minutes=null", "train.log_every=10", "train.max_failures=3", "sample.num_per_class=1")
    th, box = in_background(train, cfg)
    snapshot = run / "checkpoint_manager_snapshot.json"  # Ray Train's record: the checkpoint is registered
    if wait_for(lambda: snapshot.is_file() and "checkpoint_0000010" in snapshot.read_text(), th):
        swap_worker_node(cluster, state, "RayTrainWorker", seen, "train")
    summary = finish(th, box)
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    seen["train_status"], seen["train_step"] = summary["status"], summary["step"]
    seen["resumed_at"] = [e["step"] for e in events if e.get("event") == "resumed"]
    seen["logged_steps"] = [e["step"] for e in events if "loss" in e]

    ckpt = Path(summary["checkpoint"])
    common = ["eval.shard_size=5", "eval.features=[domain]", "eval.reference_images=50",
              f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}"]
    ev = out / "eval-two-nodes"
    hold = out / "hold"
    hold.touch()
    HeldShardWorker.hold = str(hold)
    evaluator.ShardWorker = HeldShardWorker  # evaluate() builds its actors from this module attribute
    th, box = in_background(evaluate, eval_config(ckpt, [*common, f"eval.out_dir={ev}", "eval.workers=2",
                                                         "eval.cpus_per_worker=2"]), ckpt, 40)
    if wait_for(lambda: len(nodes_of("HeldShardWorker")) == 2, th):
        swap_worker_node(cluster, state, "HeldShardWorker", seen, "eval")
    hold.unlink()
    finish(th, box)
    evaluator.ShardWorker = HeldShardWorker.__base__
    one = out / "eval-one-worker"
    evaluate(eval_config(ckpt, [*common, f"eval.out_dir={one}", "eval.workers=1", "eval.cpus_per_worker=2"]), ckpt, 40)
    seen["eval_identical"] = (ev / "samples.npz").read_bytes() == (one / "samples.npz").read_bytes()
    seen["eval_shards"] = len(list((ev / "shards").glob("*.npz")))
    ray.shutdown()
    cluster.shutdown()
    return seen


if __name__ == "__main__":
    print("SCENARIO " + json.dumps(main(Path(sys.argv[1]))), flush=True)
