"""The fall model: loading, scoring, version and integrity checks.

The shipped model is a shape model (``kind: shapes``); tree models (``kind: trees``,
and every format-1 file) still load and score. A small tree model is trained here on
synthetic recordings to check that path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_profiles.pendant_trigger import ImpactTrigger, impact_values
from stream.fall import synthetic as S
from stream.fall.data import resample_array, trigger_windows
from stream.fall.errors import FallDataError, ModelError, ModelVersionError
from stream.fall.features import FEATURE_NAMES, FEATURE_VERSION
from stream.fall.model import MODEL_FILENAME, FallClassifier, members_digest, shipped_model_path
from stream.fall.train import PARAM_GRID, train


@pytest.fixture(scope="module")
def clf() -> FallClassifier:
    return FallClassifier.load()


@pytest.fixture(scope="module")
def shipped_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(shipped_model_path().read_text())
    return doc


@pytest.fixture(scope="module")
def trees_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A quickly trained tree model (synthetic recordings of three subjects)."""
    tmp = tmp_path_factory.mktemp("trees")
    rng = np.random.default_rng(3)
    recs = []
    for subj in ("SA01", "SA02", "SA03"):
        for peak in (4.0, 6.0):
            recs.append((S.with_noise(S.fall(50, peak_g=peak), rng), subj, "F01", True))
        recs.append((S.with_noise(S.walking(30, 50, step_g=0.9), rng), subj, "D03", False))
        recs.append((S.with_noise(S.still(20, 50), rng), subj, "D16", False))
    S.write_recordings(tmp / "t.npz", recs, rate_hz=50, g_per_count=1 / 256)
    doc = train(tmp / "t.npz", tmp / "model", grid=PARAM_GRID[:1], members=1, scorer="trees")
    return doc


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    (tmp_path / MODEL_FILENAME).write_text(json.dumps(doc))
    return tmp_path


def test_shipped_model_is_small_complete_and_consistent(clf: FallClassifier) -> None:
    path = shipped_model_path()
    assert path.stat().st_size < 2 * 1024 * 1024
    assert clf.kind == "shapes" and clf.shape is not None and not clf.members
    assert 0 < clf.threshold < 1
    assert clf.trigger.rate_hz == 50
    meta = clf.metadata
    assert meta["feature_version"] == FEATURE_VERSION
    assert meta["training"]["sklearn_version"]
    assert meta["training"]["data_sha256"]
    assert meta["cv"]["protocol"].startswith("leave-one-subject-out")
    assert 0.9 <= meta["cv"]["sensitivity"] <= 1.0
    assert 0.9 <= meta["cv"]["held_out_threshold"]["specificity"] <= 1.0


def test_synthetic_fall_scores_high_and_walking_low(clf: FallClassifier) -> None:
    rng = np.random.default_rng(0)
    (w,) = trigger_windows(S.with_noise(S.fall(50, peak_g=6.0), rng), clf.trigger)
    assert clf.is_fall(clf.score(w))
    walk = trigger_windows(S.with_noise(S.walking(30, 50, step_g=0.9), rng), clf.trigger)
    assert walk
    assert not any(clf.is_fall(clf.score(x)) for x in walk)


def test_score_accepts_impact_reading_values(clf: FallClassifier) -> None:
    rng = np.random.default_rng(1)
    (w,) = trigger_windows(S.with_noise(S.fall(50), rng), clf.trigger)
    values = impact_values(w, clf.trigger)
    assert clf.score(values) == pytest.approx(clf.score(w))
    assert 0.0 <= clf.score(values) <= 1.0


def test_window_at_another_rate_is_resampled(clf: FallClassifier) -> None:
    # A 100 Hz pendant: its window is brought to the model's 50 Hz before scoring.
    rng = np.random.default_rng(2)
    sig = S.with_noise(S.fall(100, peak_g=6.0), rng)
    trig = ImpactTrigger(type(clf.trigger)(rate_hz=100, pre_s=3.0, post_s=4.0))
    (w,) = trig.feed([tuple(r) for r in sig.tolist()])
    values = impact_values(w, trig.cfg)
    s100 = clf.score(values)
    (w50,) = trigger_windows(resample_array(sig, 100, 50), clf.trigger)
    assert clf.is_fall(s100)
    assert s100 == pytest.approx(clf.score(w50), abs=0.1)


def test_malformed_reading_raises_typed_error(clf: FallClassifier) -> None:
    with pytest.raises(FallDataError):
        clf.score({"x": [], "y": [], "z": [], "trigger_index": 0})
    with pytest.raises(FallDataError):
        clf.score({"x": [0.0, math.nan], "y": [0.0, 1.0], "z": [1.0, 0.0], "trigger_index": 1})
    # A shape model scores windows; hand-made feature rows are for tree models.
    with pytest.raises(ModelError, match="scores windows"):
        clf.score_features(np.zeros((1, len(FEATURE_NAMES))))


def test_feature_version_mismatch_is_refused(tmp_path: Path, shipped_doc: dict[str, Any]) -> None:
    doc = dict(shipped_doc, feature_version=FEATURE_VERSION - 1)
    with pytest.raises(ModelVersionError) as err:
        FallClassifier.load(_write(tmp_path, doc))
    assert err.value.what == "feature_version"
    assert "retrain" in str(err.value)


def test_format_version_and_feature_names_mismatch_are_refused(
    tmp_path: Path, shipped_doc: dict[str, Any]
) -> None:
    with pytest.raises(ModelVersionError):
        FallClassifier.load(_write(tmp_path, dict(shipped_doc, format_version=99)))
    names = list(FEATURE_NAMES)
    names[0], names[1] = names[1], names[0]
    with pytest.raises(ModelVersionError):
        FallClassifier.load(_write(tmp_path, dict(shipped_doc, feature_names=names)))


def test_sklearn_version_mismatch_is_reported_not_fatal(
    tmp_path: Path, shipped_doc: dict[str, Any]
) -> None:
    training = dict(shipped_doc["training"], sklearn_version="0.0.1")
    clf = FallClassifier.load(_write(tmp_path, dict(shipped_doc, training=training)))
    assert any("scikit-learn 0.0.1" in n for n in clf.notes)


def test_damaged_trees_fail_the_self_test(tmp_path: Path, trees_doc: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(trees_doc))
    tree = doc["members"][0]["trees"][0]
    tree["value"] = [v + 1.0 if v else v for v in tree["value"]]
    doc["members_sha256"] = members_digest(doc["members"])  # a consistent, wrong file
    with pytest.raises(ModelError, match="self-test"):
        FallClassifier.load(_write(tmp_path, doc))


def test_any_edited_leaf_is_refused_by_the_digest(
    tmp_path: Path, trees_doc: dict[str, Any]
) -> None:
    """One leaf changed slightly: the self-test rows may not notice, the digest does."""
    doc = json.loads(json.dumps(trees_doc))
    tree = doc["members"][-1]["trees"][-1]
    tree["value"][-1] = tree["value"][-1] + 1e-3
    with pytest.raises(ModelError, match="digest"):
        FallClassifier.load(_write(tmp_path, doc))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("members"),
        lambda d: d.update(threshold=1.5),
        lambda d: d.update(trigger={"threshold_g": "x"}),
        lambda d: d["members"][0]["trees"][0].update(left=[5, 1, 2]),
        lambda d: d.pop("selftest"),
        lambda d: d.pop("members_sha256"),
    ],
)
def test_malformed_tree_models_raise_model_error(
    tmp_path: Path, trees_doc: dict[str, Any], mutate: Any
) -> None:
    doc = json.loads(json.dumps(trees_doc))
    mutate(doc)
    with pytest.raises(ModelError):
        FallClassifier.load(_write(tmp_path, doc))


def test_tree_models_still_load_and_score(tmp_path: Path, trees_doc: dict[str, Any]) -> None:
    """A format-1 file (trees, before shape models) loads and scores as it did."""
    old = {k: v for k, v in trees_doc.items() if k != "kind"} | {"format_version": 1}
    for doc in (trees_doc, old):
        clf = FallClassifier.load(_write(tmp_path, doc))
        assert clf.kind == "trees" and clf.shape is None
        rng = np.random.default_rng(9)
        (w,) = trigger_windows(S.with_noise(S.fall(50, peak_g=6.0), rng), clf.trigger)
        assert clf.score(w) == pytest.approx(float(clf.score_features(clf.features(w))[0]))
    with pytest.raises(ModelVersionError) as err:
        FallClassifier.load(_write(tmp_path, dict(old, kind="shapes")))
    assert err.value.what == "kind"


def test_damaged_shape_model_fails_the_self_test(
    tmp_path: Path, shipped_doc: dict[str, Any]
) -> None:
    doc = json.loads(json.dumps(shipped_doc))
    doc["shape"]["intercept"] += 0.5
    doc["shape_sha256"] = members_digest(doc["shape"])  # a consistent, wrong file
    with pytest.raises(ModelError, match="self-test"):
        FallClassifier.load(_write(tmp_path, doc))


def test_any_edited_shape_number_is_refused_by_the_digest(
    tmp_path: Path, shipped_doc: dict[str, Any]
) -> None:
    doc = json.loads(json.dumps(shipped_doc))
    doc["shape"]["coef"][-1] += 1e-6
    with pytest.raises(ModelError, match="digest"):
        FallClassifier.load(_write(tmp_path, doc))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("shape"),
        lambda d: d["shape"].update(coef=d["shape"]["coef"][:-1]),
        lambda d: d["shape"].update(shape_version=99),
        lambda d: d["shape"].update(segments=[[0, 350]]),
        lambda d: d.update(trigger=dict(d["trigger"], pre_s=2.0)),
        lambda d: d["selftest"].update(windows=[[1.0, 2.0]]),
        lambda d: d["selftest"].pop("trigger_index"),
    ],
)
def test_malformed_shape_models_raise_model_error(
    tmp_path: Path, shipped_doc: dict[str, Any], mutate: Any
) -> None:
    doc = json.loads(json.dumps(shipped_doc))
    mutate(doc)
    doc["shape_sha256"] = members_digest(doc.get("shape"))  # only the content is wrong
    with pytest.raises(ModelError):
        FallClassifier.load(_write(tmp_path, doc))


def test_missing_or_non_json_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no fall model"):
        FallClassifier.load(tmp_path)
    (tmp_path / MODEL_FILENAME).write_text("{not json")
    with pytest.raises(ModelError, match="not JSON"):
        FallClassifier.load(tmp_path)


def test_scores_are_probabilities(clf: FallClassifier) -> None:
    rng = np.random.default_rng(4)
    windows = [(rng.normal(size=(350, 3)) * 3, 150) for _ in range(20)]
    windows += [(rng.normal(size=(int(rng.integers(1, 400)), 3)), 0) for _ in range(5)]
    s = clf.score_arrays(windows)
    assert len(s) == 25
    assert np.all((s >= 0) & (s <= 1)) and not any(math.isnan(v) for v in s)


def test_assess_explains_a_fall_and_a_step(clf: FallClassifier) -> None:
    rng = np.random.default_rng(6)
    (w,) = trigger_windows(S.with_noise(S.fall(50, peak_g=6.0), rng, 0.005), clf.trigger)
    a = clf.assess(w)
    assert a.is_fall and a.still_after
    assert a.score == pytest.approx(clf.score(w))
    assert "impact 6.0 g" in a.reason and "turned" in a.reason
    assert "no movement" in a.reason
    step = trigger_windows(S.with_noise(S.walking(20, 50, step_g=0.9), rng), clf.trigger)[2]
    b = clf.assess(step)
    assert not b.is_fall and not b.still_after
    assert "moving after it" in b.reason


def test_shipped_model_card_is_the_docs_card() -> None:
    repo = Path(__file__).resolve().parents[2]
    shipped = repo / "stream" / "fall" / "MODEL_CARD.md"
    assert shipped.read_text() == (repo / "docs" / "fall_model_card.md").read_text()
    assert "Sucerquia" in shipped.read_text()
