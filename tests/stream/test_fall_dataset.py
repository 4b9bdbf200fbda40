"""The shipped fall model on real SisFall recordings (skipped when the data is absent).

These recordings are among the model's training data, so they guard against regressions
(a broken trigger, feature or export would show at once); the honest, held-out figures
are the leave-one-subject-out results recorded in the model and the model card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.fall.cli import main
from stream.fall.data import load_recordings, resample_array
from stream.fall.model import FallClassifier
from stream.fall.table import random_rotation

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "sisfall"
TRAIN = DATA / "sisfall_train.npz"

pytestmark = [
    pytest.mark.dataset,
    pytest.mark.skipif(not TRAIN.exists(), reason=f"SisFall not found at {DATA}"),
]

SUBJECTS = ("SA06", "SA11", "SE06")


def _subset(tmp_path: Path, *, rotate: bool, rate: int, g_per_count: float) -> Path:
    """Trials 1-2 of every activity of a few subjects, optionally as another device sees them."""
    rec = load_recordings(TRAIN)
    rng = np.random.default_rng(7)
    sigs, subj, act, fall = [], [], [], []
    for i in range(len(rec)):
        if rec.subject[i] not in SUBJECTS or rec.trial[i] > 2:
            continue
        g = rec.raw_g(i)
        if rotate:
            g = g @ random_rotation(rng).T
        if rate != rec.rate_hz:
            g = resample_array(g, rec.rate_hz, rate)
        sigs.append(np.clip(np.round(g / g_per_count), -32768, 32767).astype(np.int16))
        subj.append(rec.subject[i])
        act.append(rec.activity[i])
        fall.append(rec.is_fall[i])
    path = tmp_path / f"subset-{rotate}-{rate}.npz"
    np.savez(
        path,
        signals=np.vstack(sigs),
        offsets=np.concatenate([[0], np.cumsum([len(s) for s in sigs])]),
        subject=np.asarray(subj),
        activity=np.asarray(act),
        trial=np.ones(len(subj), np.int16),
        is_fall=np.asarray(fall),
        rate_hz=np.int64(rate),
        g_per_count=np.float64(g_per_count),
    )
    return path


def _eval(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert main(["eval", "--data", str(path), *extra]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_shipped_model_on_real_recordings(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    s = _eval(_subset(tmp_path, rotate=False, rate=200, g_per_count=1 / 256), capsys)
    assert s["falls"] >= 50 and s["adls"] >= 60
    assert s["sensitivity"] >= 0.99
    assert s["specificity"] >= 0.98


def test_shipped_model_holds_for_a_rotated_sensor_at_another_rate_and_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # The same people seen by a sensor worn at a random angle, sampling at 100 Hz with
    # another count scale: the decisions must hold (orientation-invariant features).
    base = _eval(_subset(tmp_path, rotate=False, rate=200, g_per_count=1 / 256), capsys)
    moved = _eval(_subset(tmp_path, rotate=True, rate=100, g_per_count=1 / 512), capsys)
    assert moved["recordings"] == base["recordings"]
    assert moved["sensitivity"] >= 0.98
    assert moved["specificity"] >= 0.97


def test_lorawan_posture_filter_keeps_the_detected_falls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # The LoRaWAN pendant uploads only windows with a posture change: on real recordings
    # it must keep every fall the classifier detects while cutting the uploads of daily
    # activities by far more than half (about 500 -> 40 an hour on all of SisFall).
    path = _subset(tmp_path, rotate=False, rate=200, g_per_count=1 / 256)
    every = _eval(path, capsys)
    lora = _eval(path, capsys, "--profile", "oem-lorawan-pendant")
    assert lora["trigger"]["min_turn_deg"] > 0
    assert lora["windows"] + lora["windows_suppressed"] == every["windows"]
    for act, entry in every["per_activity"].items():
        if entry["is_fall"]:
            assert lora["per_activity"][act]["alerted"] == entry["alerted"], act
    assert lora["sensitivity"] == every["sensitivity"]
    assert lora["windows_per_hour_adl"] < 0.25 * every["windows_per_hour_adl"]


def test_recorded_loso_results_meet_the_floor() -> None:
    cv = FallClassifier.load().metadata["cv"]
    assert cv["sensitivity"] >= 0.99
    assert cv["specificity"] >= 0.985
