"""Aggregation of training curves over seeds, against numbers computed by hand."""
import math

from djepa.eval.curves import curves, format_mean_std, steps_to_threshold, table_at

# two arms x (3, 2) seeds, FD at steps 100/200/300; seed 2 of "mar" died before step 300 (missing point),
# and one point is NaN (a diverged evaluation) which must not count
POINTS = [
    {"arm": "djepa", "seed": 0, "step": 100, "fd": 30.0}, {"arm": "djepa", "seed": 0, "step": 200, "fd": 20.0},
    {"arm": "djepa", "seed": 0, "step": 300, "fd": 10.0},
    {"arm": "djepa", "seed": 1, "step": 100, "fd": 34.0}, {"arm": "djepa", "seed": 1, "step": 200, "fd": 18.0},
    {"arm": "djepa", "seed": 1, "step": 300, "fd": 12.0},
    {"arm": "djepa", "seed": 2, "step": 100, "fd": 32.0}, {"arm": "djepa", "seed": 2, "step": 200, "fd": 22.0},
    {"arm": "djepa", "seed": 2, "step": 300, "fd": float("nan")},
    {"arm": "mar", "seed": 0, "step": 100, "fd": 40.0}, {"arm": "mar", "seed": 0, "step": 200, "fd": 30.0},
    {"arm": "mar", "seed": 0, "step": 300, "fd": 19.0},
    {"arm": "mar", "seed": 1, "step": 100, "fd": 44.0}, {"arm": "mar", "seed": 1, "step": 200, "fd": 26.0},
]


def test_curves_mean_std_n_by_hand():
    c = curves(POINTS, "fd")
    d100, d200, d300 = c["djepa"]
    assert d100["step"] == 100 and d100["n"] == 3 and d100["mean"] == 32.0
    assert math.isclose(d100["std"], 2.0)  # deviations -2, 2, 0: sqrt(8 / 2)
    assert d200["mean"] == 20.0 and math.isclose(d200["std"], 2.0)
    assert d300["n"] == 2 and d300["mean"] == 11.0 and math.isclose(d300["std"], math.sqrt(2.0))  # NaN left out
    assert d300["seeds"] == [0, 1]
    m300 = c["mar"][2]
    assert m300["n"] == 1 and m300["mean"] == 19.0 and m300["std"] == 0.0


def test_table_at_chosen_steps_and_missing_steps():
    t = table_at(POINTS, "fd", [200, 400])
    assert t["mar"][200] == {"mean": 28.0, "std": math.sqrt(8.0), "n": 2}
    assert t["djepa"][400] is None and t["mar"][400] is None
    assert format_mean_std(t["mar"][200], 2) == "28.00 ± 2.83 (n=2)" and format_mean_std(None) == "-"


def test_steps_to_threshold_first_evaluated_step_per_seed():
    s = steps_to_threshold(POINTS, "fd", 20.0)
    # djepa: seed 0 reaches 20 at 200, seed 1 at 200 (18), seed 2 never (22, then NaN)
    assert s["djepa"]["per_seed"] == {0: 200, 1: 200, 2: None}
    assert s["djepa"]["reached"] == 2 and s["djepa"]["seeds"] == 3
    assert s["djepa"]["mean"] == 200.0 and s["djepa"]["std"] == 0.0
    # mar: seed 0 at 300 (19), seed 1 never within its points
    assert s["mar"]["per_seed"] == {0: 300, 1: None} and s["mar"]["mean"] == 300.0
    none = steps_to_threshold(POINTS, "fd", 1.0)
    assert none["djepa"]["reached"] == 0 and none["djepa"]["mean"] is None
    # higher-is-better metrics (consistency, IS): reached when at or above
    up = steps_to_threshold(POINTS, "fd", 40.0, lower_is_better=False)
    assert up["mar"]["per_seed"] == {0: 100, 1: 100} and up["djepa"]["reached"] == 0
