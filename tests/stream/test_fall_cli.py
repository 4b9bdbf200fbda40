"""``carewatch fall`` on small synthetic files in the SisFall npz format (no dataset)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_profiles.pendant_trigger import TriggerConfig
from stream.fall import evaluate as evaluate_module
from stream.fall import synthetic as S
from stream.fall.cli import main
from stream.fall.data import load_recordings
from stream.fall.errors import FallDataError
from stream.fall.model import FallClassifier

CONTRACT_KEYS = {
    "recordings",
    "falls",
    "adls",
    "sensitivity",
    "specificity",
    "false_alarms_per_hour",
    "per_activity",
}


def _recordings(rate: int, seed: int, subjects: tuple[str, ...] = ("SA01", "SE01")) -> list[Any]:
    rng = np.random.default_rng(seed)
    out = []
    for subj in subjects:
        out.append((S.with_noise(S.fall(rate, peak_g=6.0), rng), subj, "F01", True))
        out.append((S.with_noise(S.fall(rate, peak_g=5.0, freefall_g=0.2), rng), subj, "F06", True))
        out.append((S.with_noise(S.walking(30, rate, step_g=0.9), rng), subj, "D03", False))
        out.append((S.with_noise(S.still(20, rate), rng), subj, "D16", False))
    return out


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    # 100 Hz and 1/512 g per count: eval must not assume SisFall's 200 Hz and 1/256.
    path = tmp_path / "small.npz"
    S.write_recordings(path, _recordings(100, 0), rate_hz=100, g_per_count=1 / 512)
    return path


def test_eval_prints_the_contract_summary(
    small_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--data", str(small_file)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    summary = json.loads(out[0])
    assert set(summary) >= CONTRACT_KEYS
    assert summary["recordings"] == 8
    assert summary["falls"] == 4 and summary["adls"] == 4
    assert summary["sensitivity"] == 1.0
    assert summary["specificity"] == 1.0
    assert summary["false_alarms_per_hour"] == 0.0
    assert summary["per_activity"]["F01"]["alerted"] == 2
    assert summary["per_activity"]["D03"]["alerted"] == 0


def test_eval_per_recording_lines(small_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--data", str(small_file), "--per-recording"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["index"] for x in lines] == list(range(8))
    for line in lines:
        assert {"index", "subject", "activity", "is_fall", "alerts", "max_score"} <= set(line)
        assert (line["alerts"] > 0) == line["is_fall"]
        assert 0.0 <= line["max_score"] <= 1.0
    assert lines[3]["max_score"] == 0.0  # still: no window was uploaded at all


def test_eval_bad_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--data", str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, signals=np.zeros((4, 3), np.int16))
    assert main(["eval", "--data", str(bad)]) == 2
    assert "missing keys" in capsys.readouterr().err
    assert main(["eval", "--data", str(bad), "--model", str(tmp_path)]) == 2
    assert main(["frobnicate"]) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"offsets": np.array([0, 5, 3])},
        {"signals": np.zeros((3, 2), np.int16), "offsets": np.array([0, 3])},
        {"rate_hz": np.float64(0)},
        {"subject": np.array(["A", "B", "C"])},
    ],
)
def test_malformed_recordings_are_named(tmp_path: Path, change: dict[str, Any]) -> None:
    base = {
        "signals": np.zeros((3, 3), np.int16),
        "offsets": np.array([0, 3]),
        "subject": np.array(["A"]),
        "activity": np.array(["D01"]),
        "is_fall": np.array([False]),
        "rate_hz": np.int64(50),
        "g_per_count": np.float64(1 / 256),
    }
    path = tmp_path / "x.npz"
    np.savez(path, **(base | change))
    with pytest.raises(FallDataError):
        load_recordings(path)


def _base_recordings() -> dict[str, Any]:
    return {
        "signals": np.zeros((3, 3), np.int16),
        "offsets": np.array([0, 3]),
        "subject": np.array(["A"]),
        "activity": np.array(["D01"]),
        "is_fall": np.array([False]),
        "rate_hz": np.int64(50),
        "g_per_count": np.float64(1 / 256),
    }


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"subject": np.array(["A"], dtype=object)}, "'subject'"),
        ({"trial": np.array(["one"])}, "'trial' must be an integer array"),
        ({"trial": np.array([1.5])}, "'trial' must be an integer array"),
        ({"is_fall": np.array(["False"])}, "'is_fall' must be a bool array"),
        ({"is_fall": np.array([0])}, "'is_fall' must be a bool array"),
    ],
)
def test_eval_names_a_bad_key_instead_of_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], words: str
) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, **(_base_recordings() | change), allow_pickle=True)
    assert main(["eval", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("carewatch fall eval: ")
    assert str(path) in err and words in err


def test_eval_on_a_damaged_zip_exits_2(
    small_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, raw in (
        ("garbage.npz", b"PK\x03\x04 not really a zip file"),
        ("truncated.npz", small_file.read_bytes()[:-200]),
    ):
        path = tmp_path / name
        path.write_bytes(raw)
        assert main(["eval", "--data", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("carewatch fall eval: ") and str(path) in err


def test_train_quick_writes_a_model_that_eval_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "train.npz"
    subjects = ("SA01", "SA02", "SA03")
    S.write_recordings(data, _recordings(50, 1, subjects), rate_hz=50, g_per_count=1 / 256)
    out = tmp_path / "model"
    assert main(["train", "--data", str(data), "--out", str(out), "--quick", "--no-cache"]) == 0
    clf = FallClassifier.load(out)
    assert clf.metadata["training"]["recordings"] == 12
    assert clf.metadata["cv"]["protocol"].startswith("leave-one-subject-out")
    capsys.readouterr()
    assert main(["eval", "--data", str(data), "--model", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["recordings"] == 12
    assert main(["info", "--model", str(out)]) == 0
    assert '"feature_version"' in capsys.readouterr().out


def _eval_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["eval", *args]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    result: dict[str, Any] = json.loads(out[0])
    return result


def test_eval_with_the_lorawan_profile_uploads_only_posture_changes(
    small_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _eval_json(["--data", str(small_file)], capsys)
    assert model["trigger"]["source"] == "model" and model["trigger"]["profile"] is None
    assert model["trigger"]["min_turn_deg"] == 0
    assert model["windows_suppressed"] == 0
    # The 1.9 g steps of the walk fire the trigger many times.
    assert model["windows_per_hour_adl"] > 100

    lora = _eval_json(["--data", str(small_file), "--profile", "oem-lorawan-pendant"], capsys)
    assert lora["trigger"]["source"] == "profile"
    assert lora["trigger"]["profile"] == "oem-lorawan-pendant"
    assert lora["trigger"]["min_turn_deg"] == 20
    # Upright walking never changes posture: nothing of it goes up; every fall does.
    assert lora["windows_per_hour_adl"] == 0.0
    assert lora["windows_suppressed"] > 0
    assert lora["windows"] + lora["windows_suppressed"] == model["windows"]
    assert lora["windows"] >= lora["falls"]
    for key in CONTRACT_KEYS - {"per_activity"}:
        assert lora[key] == model[key], key
    assert lora["per_activity"]["F01"]["alerted"] == 2
    assert lora["per_activity"]["D03"]["alerted"] == 0

    # An RF pendant has no airtime limit and uploads what the model's trigger does.
    rf = _eval_json(["--data", str(small_file), "--profile", "oem-rf433-button-pendant"], capsys)
    assert rf["trigger"]["min_turn_deg"] == 0
    assert (rf["windows"], rf["windows_per_hour_adl"]) == (
        model["windows"],
        model["windows_per_hour_adl"],
    )


def test_eval_per_recording_with_a_profile_keeps_its_lines(
    small_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", "--data", str(small_file), "--per-recording"]
    assert main(args) == 0
    plain = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert main([*args, "--profile", "oem-lorawan-pendant"]) == 0
    lora = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [set(x) for x in lora] == [set(x) for x in plain]
    for a, b in zip(plain, lora, strict=True):
        assert b["windows"] <= a["windows"]
        assert b["windows"] == (a["windows"] if a["is_fall"] else 0)
        assert (b["alerts"] > 0) == b["is_fall"]
    assert any(a["windows"] > 0 and not a["is_fall"] for a in plain)


def test_eval_profile_at_another_rate_is_resampled_and_noted(
    small_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pendant sampling at 100 Hz: its windows are scored resampled to the model's
    # 50 Hz, as the processor scores such an upload, and the command says the model was
    # not trained on such windows.
    fast = TriggerConfig(rate_hz=100, min_turn_deg=20)
    monkeypatch.setattr(evaluate_module, "profile_trigger", lambda name, registry=None: fast)
    assert main(["eval", "--data", str(small_file), "--profile", "fast-pendant"]) == 0
    out, err = capsys.readouterr()
    assert "note: profile fast-pendant triggers unlike the model's training (rate_hz)" in err
    result = json.loads(out)
    assert result["rate_hz"] == 100 and result["trigger"]["rate_hz"] == 100
    assert result["sensitivity"] == 1.0 and result["specificity"] == 1.0
    assert result["windows_per_hour_adl"] == 0.0


def test_eval_profile_errors_exit_2(small_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--data", str(small_file), "--profile", "no-such-pendant"]) == 2
    assert "unknown profile 'no-such-pendant'" in capsys.readouterr().err
    assert main(["eval", "--data", str(small_file), "--profile", "aqara-rtcgq11lm"]) == 2
    assert "no impact trigger" in capsys.readouterr().err
