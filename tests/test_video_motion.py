"""Moving MNIST: deterministic clips that follow their definition, and the motion check that reads them."""
import numpy as np
import pytest

from djepa.video.motion import REAL_SPEED, centred_crops, descriptors, motion_report, per_frame_consistency, track
from djepa.video.moving_mnist import DIGIT, FRAMES, SIZE, bounce, moving_mnist, trajectories


@pytest.fixture(scope="module")
def real():
    return moving_mnist()


def test_moving_mnist_is_deterministic_and_shaped(real):
    clips, labels, corners = real
    again, labels2, corners2 = moving_mnist()
    assert clips.shape == (5000, FRAMES, SIZE, SIZE) and clips.dtype == np.uint8
    np.testing.assert_array_equal(clips, again)
    np.testing.assert_array_equal(corners, corners2)
    assert np.bincount(labels).tolist() == [500] * 10 and np.array_equal(labels, labels2)


def test_digits_move_at_constant_speed_and_bounce_inside_the_frame(real):
    _, _, corners = real
    assert corners.min() >= 0 and corners.max() <= SIZE - DIGIT
    steps = np.abs(np.diff(corners, axis=1))  # (N, T-1, 2)
    assert steps.max() <= 2  # at most 1.5 px a frame, plus rounding
    assert (steps.sum(axis=(1, 2)) > 0).all()  # every clip moves
    # reflections: a triangle wave, so positions never leave [0, span] and a bounce reverses the direction
    x = bounce(10.0, 3.0, 12.0, 8)
    np.testing.assert_allclose(x, [10, 11, 8, 5, 2, 1, 4, 7])
    assert trajectories(3, seed=1).tolist() != trajectories(3, seed=2).tolist()


def test_track_and_descriptors_on_a_hand_made_clip():
    clip = np.zeros((1, 4, 16, 16), np.uint8)
    for t in range(4):
        clip[0, t, 2 + t, 3 + 2 * t] = 255  # one pixel moving (1, 2) a frame
    cen, mass = track(clip)
    np.testing.assert_allclose(cen[0], [[2, 3], [3, 5], [4, 7], [5, 9]])
    np.testing.assert_allclose(mass[0], 1.0)
    d = descriptors(clip)[0]
    np.testing.assert_allclose(d[:5], [np.sqrt(5), 0.0, np.sqrt(5), 0.0, 3 * np.sqrt(5)])


def test_motion_report_passes_real_clips_and_fails_broken_motion(real):
    clips = real[0][:500]
    report = motion_report(clips)
    assert report["motion_ok"] == 1.0 and abs(report["speed"] - REAL_SPEED) < 0.01  # the demo prints REAL_SPEED
    static = np.repeat(clips[:, :1], FRAMES, axis=1)  # the digit frozen at frame 0
    assert motion_report(static)["moving"] == 0.0
    shuffled = clips[:, np.random.default_rng(0).permutation(FRAMES)]  # jumps back and forth
    assert motion_report(shuffled)["motion_ok"] < 0.15  # measured 0.093: a 4-px course leaves little to shuffle
    fading = (clips.astype(np.float64) * np.linspace(1, 0.1, FRAMES)[None, :, None, None]).astype(np.uint8)
    assert motion_report(fading)["persistent"] == 0.0


def test_per_frame_classifier_reads_real_clips_and_not_wrong_labels(real):
    clips, labels, _ = real
    idx = np.random.default_rng(0).choice(len(clips), 300, replace=False)
    assert centred_crops(clips[idx[:2]]).shape == (2, FRAMES, 28, 28, 1)
    good = per_frame_consistency(clips[idx], labels[idx])
    assert good["frames"] > 0.85
    wrong = per_frame_consistency(clips[idx], (labels[idx] + 1) % 10)
    assert wrong["frames"] < 0.1
