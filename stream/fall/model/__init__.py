"""Load the fall model and score impact windows (this package also holds the model file).

A model is one JSON file (``fall_model.json``): the feature names and version it was
trained with, the decision threshold, the pendant trigger configuration it expects, the
scorer, training provenance (data hash, library versions, cross-validation results) and a
self-test. The scorer is one of two kinds:

* ``shapes`` (format version 2, shipped): a logistic regression over the window's shape
  features (:mod:`stream.fall.shapes`); its self-test is a few real windows with the
  scores they had at training time, so loading re-runs the whole path from the
  accelerometer samples;
* ``trees`` (every format-1 file, and format 2 with ``kind: trees``): gradient-boosted
  tree ensembles (averaged) over the hand-made features; its self-test is feature rows
  with scikit-learn's scores.

The hand-made features are computed for every window either way: they give the facts of
an alert's reason ("impact 4.8 g, after 0.30 s of falling, ...") and its severity.
Loading checks all of it:

* another model format or feature version -> :class:`ModelVersionError` (never scored
  with features it was not trained on);
* the self-test not reproduced -> :class:`ModelError`;
* another scikit-learn release than the one that trained it is *reported*
  (:attr:`FallClassifier.notes`) and is harmless: scoring uses only numpy and the exported
  trees, and the self-test proves the scores are the trained model's.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources as ilr
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from device_profiles.errors import ProfileError
from device_profiles.pendant_trigger import ImpactWindow, TriggerConfig
from stream.fall.data import resample_array
from stream.fall.errors import FallDataError, ModelError, ModelVersionError
from stream.fall.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    impact_window_array,
    window_features,
    window_from_values,
)
from stream.fall.shapes import ShapeModel, align, channels, segments
from stream.fall.trees import TreeEnsemble

FloatArray = npt.NDArray[np.float64]

MODEL_FORMAT = "carewatch.fall.model"
MODEL_FORMAT_VERSION = 2
#: Format versions this release reads: 1 (trees), 2 (trees or shapes).
READABLE_FORMAT_VERSIONS = (1, 2)
MODEL_FILENAME = "fall_model.json"
SELFTEST_TOLERANCE = 1e-9


def shipped_model_path() -> Path:
    """Path of the model shipped in the package."""
    return Path(str(ilr.files("stream.fall").joinpath("model", MODEL_FILENAME)))


def installed_sklearn_version() -> str | None:
    """The installed scikit-learn version, or None (scoring does not need it)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("scikit-learn")
    except PackageNotFoundError:
        return None


@dataclass(frozen=True, slots=True)
class FallAssessment:
    """A scored window with the facts behind it (for alert reasons and severity)."""

    score: float
    is_fall: bool
    still_after: bool  # no movement in the seconds after the impact (raises severity)
    peak_g: float
    freefall_s: float
    orientation_change_deg: float
    reason: str  # e.g. "impact 4.8 g, after 0.30 s of falling, body turned 88 degrees, ..."


def members_digest(members: Any) -> str:
    """SHA-256 of the tree ensembles in canonical JSON (stored as ``members_sha256``)."""
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class FallClassifier:
    """Scores pendant impact windows: probability-like fall score in [0, 1]."""

    def __init__(self, doc: Mapping[str, Any], source: str = "<model>") -> None:
        self.source = source
        if not isinstance(doc, Mapping):
            raise ModelError(f"{source}: a fall model is a JSON object")
        fmt = doc.get("format")
        if fmt != MODEL_FORMAT:
            raise ModelVersionError("format", MODEL_FORMAT, str(fmt), source)
        fv = doc.get("format_version")
        if fv not in READABLE_FORMAT_VERSIONS:
            raise ModelVersionError(
                "format_version", str(MODEL_FORMAT_VERSION), str(fv), f"{source}: retrain it"
            )
        feat_v = doc.get("feature_version")
        if feat_v != FEATURE_VERSION:
            raise ModelVersionError(
                "feature_version",
                str(FEATURE_VERSION),
                str(feat_v),
                f"{source}: the features changed since it was trained; retrain it "
                "with 'carewatch fall train'",
            )
        names = tuple(doc.get("feature_names") or ())
        if names != FEATURE_NAMES:
            raise ModelVersionError(
                "feature_names", ",".join(FEATURE_NAMES), ",".join(map(str, names)), source
            )
        try:
            threshold = float(doc["threshold"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{source}: missing or bad 'threshold'") from None
        if not 0.0 < threshold < 1.0:
            raise ModelError(f"{source}: threshold {threshold} outside (0, 1)")
        try:
            self.trigger = TriggerConfig.from_options(doc.get("trigger") or {})
        except ProfileError as exc:
            raise ModelError(f"{source}: bad trigger configuration: {exc}") from None
        self.kind = str(doc.get("kind", "trees"))
        self.members: tuple[TreeEnsemble, ...] = ()
        self.shape: ShapeModel | None = None
        if self.kind == "trees":
            members = doc.get("members")
            if not isinstance(members, Sequence) or not members:
                raise ModelError(f"{source}: no tree ensembles ('members')")
            # The self-test below checks a few rows only; the digest covers every split and
            # leaf, so an edited or damaged tree is refused, not silently used.
            if doc.get("members_sha256") != members_digest(members):
                raise ModelError(
                    f"{source}: the trees do not match their recorded digest "
                    "('members_sha256'): file damaged or edited; retrain or reinstall it"
                )
            self.members = tuple(TreeEnsemble.from_dict(m, len(FEATURE_NAMES)) for m in members)
        elif self.kind == "shapes" and fv == 2:
            shape = doc.get("shape")
            # As for trees: the self-test checks a few windows, the digest every number.
            if doc.get("shape_sha256") != members_digest(shape):
                raise ModelError(
                    f"{source}: the shape model does not match its recorded digest "
                    "('shape_sha256'): file damaged or edited; retrain or reinstall it"
                )
            try:
                self.shape = ShapeModel.from_dict(shape)
            except ValueError as exc:
                raise ModelError(f"{source}: bad shape model: {exc}") from None
            expected = segments(self.trigger.pre_n, self.window_n, self.trigger.rate_hz)
            if self.shape.segs != expected:
                raise ModelError(f"{source}: shape model segments do not fit its trigger")
        else:
            raise ModelVersionError("kind", "trees or shapes", self.kind, source)
        self.threshold = threshold
        self.metadata: dict[str, Any] = {
            k: v for k, v in doc.items() if k not in ("members", "selftest", "shape")
        }
        self.notes: list[str] = []
        trained_with = (doc.get("training") or {}).get("sklearn_version")
        installed = installed_sklearn_version()
        if trained_with and installed and trained_with != installed:
            self.notes.append(
                f"trained with scikit-learn {trained_with}, {installed} installed: not used "
                "for scoring (exported trees, scored with numpy; self-test passed)"
            )
        self._selftest(doc.get("selftest"))

    @property
    def window_n(self) -> int:
        """Samples of a window at the model's rate (impact at ``trigger.pre_n``)."""
        return self.trigger.pre_n + self.trigger.post_n

    def _selftest(self, selftest: Any) -> None:
        if not isinstance(selftest, Mapping):
            raise ModelError(f"{self.source}: missing 'selftest'")
        if self.shape is not None:
            self._selftest_shapes(selftest)
            return
        try:
            X = np.asarray(selftest["features"], dtype=np.float64)
            expected = np.asarray(selftest["scores"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{self.source}: malformed 'selftest'") from None
        if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES) or len(X) != len(expected):
            raise ModelError(f"{self.source}: malformed 'selftest'")
        got = self.score_features(X)
        if not np.allclose(got, expected, rtol=0, atol=SELFTEST_TOLERANCE):
            raise ModelError(
                f"{self.source}: self-test failed: the stored trees do not give the scores "
                "recorded at training time (file damaged or edited)"
            )

    def _selftest_shapes(self, selftest: Mapping[str, Any]) -> None:
        try:
            windows = np.asarray(selftest["windows"], dtype=np.float64)
            index = [int(i) for i in selftest["trigger_index"]]
            expected = np.asarray(selftest["scores"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{self.source}: malformed 'selftest'") from None
        if (
            windows.ndim != 3
            or windows.shape[2] != 3
            or not len(windows) == len(index) == len(expected)
        ):
            raise ModelError(f"{self.source}: malformed 'selftest'")
        got = self.score_arrays(list(zip(windows, index, strict=True)))
        if not np.allclose(got, expected, rtol=0, atol=SELFTEST_TOLERANCE):
            raise ModelError(
                f"{self.source}: self-test failed: the stored shape model does not give the "
                "scores recorded at training time (file damaged or edited)"
            )

    @classmethod
    def load(cls, path: str | Path | None = None) -> FallClassifier:
        """Load a model file, a directory holding ``fall_model.json``, or (None) the shipped one."""
        p = shipped_model_path() if path is None else Path(path)
        if p.is_dir():
            p = p / MODEL_FILENAME
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelError(
                f"{p}: no fall model here (train one with 'carewatch fall train')"
            ) from None
        except OSError as exc:
            raise ModelError(f"{p}: cannot read the fall model ({exc})") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{p}: not JSON ({exc})") from None
        return cls(doc, str(p))

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the features, in the model's order."""
        return FEATURE_NAMES

    def score_features(self, X: FloatArray) -> FloatArray:
        """Scores of hand-made feature rows (trees only: mean probability of the ensembles).

        A shape model scores windows (:meth:`score_arrays`), not feature rows: it raises
        :class:`ModelError`.
        """
        if not self.members:
            raise ModelError(f"{self.source}: a {self.kind} model scores windows, not features")
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != len(FEATURE_NAMES):
            raise FallDataError(f"expected {len(FEATURE_NAMES)} features, got {X.shape[1]}")
        total = np.zeros(len(X))
        for member in self.members:
            total += member.proba(X)
        return np.asarray(total / len(self.members), dtype=np.float64)

    def score_arrays(self, windows: Sequence[tuple[FloatArray, int]]) -> FloatArray:
        """Scores of windows at the model's rate, each (samples (N, 3) in g, impact index)."""
        if not windows:
            return np.zeros(0)
        if self.shape is not None:
            n, pre = self.window_n, self.trigger.pre_n
            try:
                aligned = np.stack([align(acc, index, pre, n) for acc, index in windows])
            except ValueError as exc:
                raise FallDataError(f"bad impact window: {exc}") from None
            if not np.all(np.isfinite(aligned)):
                raise FallDataError("bad impact window: samples must be finite numbers")
            return self.shape.score(channels(aligned))
        rate = float(self.trigger.rate_hz)
        rows = [window_features(acc, index, rate) for acc, index in windows]
        return self.score_features(np.vstack(rows))

    def window_array(self, window: ImpactWindow | Mapping[str, Any]) -> tuple[FloatArray, int]:
        """(samples (N, 3) in g, impact index) of a window at the model's rate.

        An :class:`ImpactWindow` carries no rate and is taken to be at the model's
        (``trigger.rate_hz``); an ``impact`` reading's values say their ``rate_hz``.
        Raises :class:`FallDataError` when the window is malformed.
        """
        if isinstance(window, ImpactWindow):
            acc, index, rate = (
                impact_window_array(window),
                window.trigger_index,
                float(self.trigger.rate_hz),
            )
        else:
            acc, index, rate = window_from_values(window)
        target = float(self.trigger.rate_hz)
        if not math.isclose(rate, target):
            acc = resample_array(acc, rate, target)
            index = min(len(acc) - 1, round(index * target / rate))
        return acc, index

    def features(self, window: ImpactWindow | Mapping[str, Any]) -> FloatArray:
        """Hand-made feature vector of a window (resampled to the model's rate when needed)."""
        acc, index = self.window_array(window)
        return window_features(acc, index, float(self.trigger.rate_hz))

    def score(self, window: ImpactWindow | Mapping[str, Any]) -> float:
        """Fall score in [0, 1] of an :class:`ImpactWindow` or an ``impact`` reading's values.

        Raises :class:`FallDataError` when the window is malformed.
        """
        return float(self.score_arrays([self.window_array(window)])[0])

    def assess(self, window: ImpactWindow | Mapping[str, Any]) -> FallAssessment:
        """Score a window and describe it in words a responder understands.

        Raises :class:`FallDataError` when the window is malformed.
        """
        acc, index = self.window_array(window)
        f = window_features(acc, index, float(self.trigger.rate_hz))
        score = float(self.score_arrays([(acc, index)])[0])
        named = dict(zip(FEATURE_NAMES, (float(v) for v in f), strict=True))
        still = named["after_still_frac"] >= 0.8 and named["after_std_g"] < 0.05
        parts = [f"impact {named['peak_g']:.1f} g"]
        if named["freefall_s"] >= 0.06:
            parts.append(f"after {named['freefall_s']:.2f} s of falling")
        if named["orientation_change_deg"] >= 45:
            parts.append(f"body turned {named['orientation_change_deg']:.0f} degrees")
        parts.append("no movement after it" if still else "moving after it")
        return FallAssessment(
            score=score,
            is_fall=self.is_fall(score),
            still_after=still,
            peak_g=named["peak_g"],
            freefall_s=named["freefall_s"],
            orientation_change_deg=named["orientation_change_deg"],
            reason=", ".join(parts),
        )

    def is_fall(self, score: float) -> bool:
        """True when ``score`` reaches the model's decision threshold."""
        return score >= self.threshold
