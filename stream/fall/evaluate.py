"""``carewatch fall eval``: score a recordings file as pendants and the processor would.

Each recording (any rate, any scale) is converted to g, resampled to the pendant's rate,
run whole through the pendant's on-device trigger, and every window it uploads is scored
by the classifier. A fall recording is detected when at least one of its windows is a
fall alert; a daily-activity recording is a false alarm when any is; every alert in a
daily-activity recording counts in ``false_alarms_per_hour``.

The trigger is the one the model was trained with, or (``trigger_profile``) the one a
device profile configures, e.g. the LoRaWAN pendant's, which uploads only windows across
which the posture changed (``min_turn_deg``): then only what that pendant would upload is
judged. ``windows_per_hour_adl`` is the uploads per hour of daily activities (the airtime
cost), ``windows_suppressed`` the windows the posture filter kept back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device_profiles.codecs import codec_for
from device_profiles.codecs.pendant_payload import PendantCodecBase
from device_profiles.errors import ProfileError
from device_profiles.pendant_trigger import TriggerConfig, impact_values
from device_profiles.profiles import ProfileRegistry
from stream.fall.data import Recordings, load_recordings, run_trigger
from stream.fall.features import impact_window_array
from stream.fall.model import FallClassifier
from stream.fall.train import summarize


def profile_trigger(name: str, registry: ProfileRegistry | None = None) -> TriggerConfig:
    """The on-device trigger a pendant profile configures (``codec_options.trigger``).

    Raises :class:`ProfileError` for an unknown profile or one that is not a pendant's.
    """
    reg = registry if registry is not None else ProfileRegistry.load()
    profile = reg.get(name)
    codec = codec_for(profile)
    if not isinstance(codec, PendantCodecBase):
        raise ProfileError(
            f"profile {name!r} is not a pendant's: it has no impact trigger",
            file=profile.source,
            path="codec",
        )
    return codec.layout.trigger


@dataclass(frozen=True)
class RecordingScore:
    """The classifier's view of one recording."""

    index: int
    subject: str
    activity: str
    is_fall: bool
    windows: int
    alerts: int
    max_score: float
    seconds: float
    suppressed: int = 0  # windows the trigger's posture filter did not upload

    def line(self) -> dict[str, Any]:
        """The ``--per-recording`` JSON object (contract fields first)."""
        return {
            "index": self.index,
            "subject": self.subject,
            "activity": self.activity,
            "is_fall": self.is_fall,
            "alerts": self.alerts,
            "max_score": round(self.max_score, 6),
            "windows": self.windows,
        }


def score_recordings(
    rec: Recordings, clf: FallClassifier, trigger: TriggerConfig | None = None
) -> Iterator[RecordingScore]:
    """Score every recording in file order, triggered by ``trigger`` (default: the model's)."""
    cfg = trigger if trigger is not None else clf.trigger
    for i in range(len(rec)):
        windows, suppressed = run_trigger(rec.at_rate(i, cfg.rate_hz), cfg)
        if cfg.rate_hz == clf.trigger.rate_hz:
            arrays = [(impact_window_array(w), w.trigger_index) for w in windows]
        else:
            # As the processor scores an upload at another rate: resampled to the model's.
            arrays = [clf.window_array(impact_values(w, cfg)) for w in windows]
        scores = clf.score_arrays(arrays)
        yield RecordingScore(
            index=i,
            subject=rec.subject[i],
            activity=rec.activity[i],
            is_fall=rec.is_fall[i],
            windows=len(windows),
            alerts=int(np.sum(scores >= clf.threshold)),
            max_score=float(scores.max()) if len(scores) else 0.0,
            seconds=rec.seconds(i),
            suppressed=suppressed,
        )


def evaluate(
    data: str | Path,
    clf: FallClassifier,
    *,
    trigger_profile: str | None = None,
    on_recording: Callable[[RecordingScore], None] | None = None,
) -> dict[str, Any]:
    """Summary metrics of ``clf`` over a recordings file (see module doc).

    ``trigger_profile`` names a device profile whose trigger replaces the model's.
    """
    cfg = profile_trigger(trigger_profile) if trigger_profile is not None else clf.trigger
    rec = load_recordings(data)
    results = []
    for r in score_recordings(rec, clf, cfg):
        results.append(r)
        if on_recording is not None:
            on_recording(r)
    summary = summarize(
        np.asarray([r.is_fall for r in results], dtype=bool),
        [r.activity for r in results],
        np.asarray([r.seconds for r in results]),
        np.asarray([r.alerts for r in results], dtype=np.int64),
        np.asarray([r.max_score for r in results]),
    )
    summary["threshold"] = clf.threshold
    summary["rate_hz"] = cfg.rate_hz
    summary["source_rate_hz"] = rec.rate_hz
    summary["windows"] = int(sum(r.windows for r in results))
    summary["windows_suppressed"] = int(sum(r.suppressed for r in results))
    adl_hours = sum(r.seconds for r in results if not r.is_fall) / 3600.0
    adl_windows = sum(r.windows for r in results if not r.is_fall)
    summary["windows_per_hour_adl"] = round(adl_windows / adl_hours, 3) if adl_hours else None
    summary["trigger"] = {
        "source": "model" if trigger_profile is None else "profile",
        "profile": trigger_profile,
        **cfg.to_options(),
    }
    return summary
