"""Multi-node, simulated on this machine: two Ray nodes, a training run and an evaluation each with a worker on
both nodes, one node removed mid-run and a fresh one added. The scenario runs in its own process
(tests/multinode_scenario.py), since a second Ray cluster cannot live inside the suite's Ray session."""
import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_training_and_evaluation_survive_losing_a_node(tmp_path):
    proc = subprocess.run([sys.executable, "tests/multinode_scenario.py", str(tmp_path)], capture_output=True,
                          text=True, timeout=900)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("SCENARIO ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-4000:] + proc.stderr[-4000:]
    seen = json.loads(line[len("SCENARIO "):])
    assert not seen.get("watch_timeout"), seen
    # training: a worker on each node, one node lost after the step-10 checkpoint, a new node, the right end
    assert seen["train_nodes_before"] == 2 and seen["train_node_removed"]
    assert seen["train_status"] == "finished" and seen["train_step"] == 30
    assert len(seen["resumed_at"]) >= 1 and set(seen["resumed_at"]) <= {10, 20}
    assert seen["logged_steps"][-1] == 30 and {10, 20, 30} <= set(seen["logged_steps"])
    # evaluation: actors on both nodes, one lost with its node, its shards redone elsewhere, same bytes
    assert seen["eval_nodes_before"] == 2 and seen["eval_node_removed"]
    assert seen["eval_shards"] == 8 and seen["eval_identical"]
    assert "worker lost during shard" in proc.stdout  # the evaluator noticed and redid the shard
