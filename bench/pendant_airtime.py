"""LoRa airtime of the pendant's impact windows: raw int16 fragments against packed deltas.

    .venv/bin/python bench/pendant_airtime.py [--data FILE.npz] [--profile NAME] [--all-windows]

Runs every SisFall recording (default ``../shared/datasets/sisfall/sisfall_train.npz``;
skipped with a message when absent) through the profile's on-device trigger at its rate,
exactly as the pendant does (posture filter included unless ``--all-windows``), and cuts
every uploaded window into the profile's ``impact`` (raw) and ``impact_packed`` fragments
with the codec the gateway decodes them with. Each packed window is decoded again and
must equal the raw one sample for sample (the run fails otherwise).

For each encoding it prints the CWPL/1 bytes per window (mean, p95, max), the uplinks per
window (mean, max) and the LoRa time on air per window at EU868 DR5 (SF7) and DR3 (SF9),
125 kHz, from Semtech's formula (AN1200.13: preamble 8 symbols, explicit header, CRC on,
coding rate 4/5, low-data-rate optimization off as for SF7-SF10 at 125 kHz) with the 13
bytes LoRaWAN adds to every FRMPayload (MHDR 1, FHDR 7 without FOpts, FPort 1, MIC 4).
DR5 uses the profile's fragment sizes; DR3 carries at most 115 bytes of FRMPayload, so
there the windows are cut again for that limit (raw: 17 samples per fragment; packed:
``max_fragment_bytes`` 115). ``windows/h`` is how many such windows fit the 1 % duty cycle
(36 s of airtime an hour), at the mean airtime. A benchmark, not a test: a few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device_profiles.codecs import codec_for  # noqa: E402
from device_profiles.codecs.base import Reading  # noqa: E402
from device_profiles.codecs.pendant_payload import (  # noqa: E402
    IMPACT_HEADER_SIZE,
    PendantCodecBase,
)
from device_profiles.pendant_trigger import ImpactWindow  # noqa: E402
from device_profiles.profiles import Profile, ProfileRegistry, parse_profile  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "sisfall" / "sisfall_train.npz"
LORAWAN_OVERHEAD = 13  # MHDR 1 + FHDR 7 (no FOpts) + FPort 1 + MIC 4
DUTY_CYCLE_MS_PER_HOUR = 36_000.0  # 1 % of an hour
#: EU868 data rates compared: (name, spreading factor, largest FRMPayload without FOpts).
DATA_RATES = (("DR5", 7, 242), ("DR3", 9, 115))


def time_on_air_ms(
    phy_bytes: int,
    sf: int,
    *,
    bw_hz: int = 125_000,
    coding_rate: int = 1,
    preamble: int = 8,
    explicit_header: bool = True,
    crc: bool = True,
) -> float:
    """LoRa time on air of one PHY payload of ``phy_bytes`` (Semtech AN1200.13).

    Low-data-rate optimization is on only where LoRaWAN mandates it (symbols of 16 ms or
    more: SF11 and SF12 at 125 kHz).
    """
    t_sym = (1 << sf) / bw_hz * 1000
    de = 1 if t_sym >= 16 else 0
    ih = 0 if explicit_header else 1
    num = 8 * phy_bytes - 4 * sf + 28 + 16 * int(crc) - 20 * ih
    symbols = 8 + max(math.ceil(num / (4 * (sf - 2 * de))) * (coding_rate + 4), 0)
    return (preamble + 4.25) * t_sym + symbols * t_sym


def variant(profile: Profile, max_frm: int | None) -> PendantCodecBase:
    """The profile's codec, or one whose fragments fit ``max_frm`` bytes of FRMPayload."""
    if max_frm is not None:
        import yaml

        data = yaml.safe_load(Path(profile.source).read_text(encoding="utf-8"))
        impact = data["codec_options"]["impact"]
        if "samples_per_fragment" in impact:
            impact["samples_per_fragment"] = (max_frm - 1 - IMPACT_HEADER_SIZE) // 6
        if "max_fragment_bytes" in impact:
            impact["max_fragment_bytes"] = max_frm
        profile = parse_profile(data, source=f"{profile.source} (FRMPayload <= {max_frm})")
    codec = codec_for(profile)
    if not isinstance(codec, PendantCodecBase):
        sys.exit(f"profile {profile.name!r} is not a pendant profile")
    return codec


def messages(codec: PendantCodecBase, w: ImpactWindow, encoding: str) -> list[bytes]:
    """The CWPL/1 messages (FRMPayloads) of one window."""
    frags = codec.impact_fragments(
        0,
        w.x,
        w.y,
        w.z,
        trigger_index=w.trigger_index,
        peak_g=w.peak_g,
        encoding="packed" if encoding == "packed" else "raw",
    )
    return [
        codec.encode_message(Reading("impact_fragment", {**v, "counter": i}))
        for i, v in enumerate(frags)
    ]


def decoded(codec: PendantCodecBase, payloads: Sequence[bytes]) -> tuple[list[float], ...]:
    """Decode and reassemble one window's messages, as the gateway does."""
    state = codec.initial_state()
    out: list[Reading] = []
    for i, data in enumerate(payloads):
        for r in codec.decode_message(data, "bench", counter=i, source="p"):
            state, emitted = codec.track(state, r)
            out += emitted
    [imp] = out
    if imp.values["complete"] is not True:
        raise AssertionError("a window came back incomplete")
    axes: list[list[float]] = []
    for name in "xyz":
        axis = imp.values[name]
        assert isinstance(axis, list)
        axes.append([float(v) for v in axis])
    return tuple(axes)


def p95(values: Sequence[float]) -> float:
    """95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--profile", default="oem-lorawan-pendant")
    ap.add_argument(
        "--all-windows",
        action="store_true",
        help="also the windows the posture filter (min_turn_deg) keeps on the pendant",
    )
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"skipped: no SisFall recordings at {args.data}", file=sys.stderr)
        return 0
    # numpy is a dependency of the stream role, not of the device layer: import late.
    from stream.fall.data import load_recordings, trigger_windows

    profile = ProfileRegistry.load().get(args.profile)
    base = variant(profile, None)
    cfg = base.layout.trigger
    if args.all_windows:
        cfg = dataclasses.replace(cfg, min_turn_deg=0.0)
    started = time.monotonic()
    rec = load_recordings(args.data)
    windows: list[ImpactWindow] = []
    for i in range(len(rec)):
        windows += trigger_windows(rec.at_rate(i, cfg.rate_hz), cfg)
    hours = sum(rec.seconds(i) for i in range(len(rec))) / 3600
    print(
        f"{args.profile}: {len(windows)} windows from {len(rec)} SisFall recordings "
        f"({hours:.1f} h; trigger at {cfg.rate_hz} Hz, min_turn_deg {cfg.min_turn_deg:g}, "
        f"{statistics.mean(len(w) for w in windows):.0f} samples a window on average)"
    )
    roles = {"raw": "impact", "packed": "impact_packed"}
    encodings = [e for e, role in roles.items() if role in base.layout.messages]
    header = (
        f"{'encoding':<8} {'rate':<4} {'frag<=':>6} {'bytes/window mean':>17} {'p95':>5} "
        f"{'max':>5} {'uplinks mean':>12} {'max':>3} {'airtime s mean':>14} {'p95':>5} "
        f"{'windows/h at 1 %':>16}"
    )
    print(header)
    for encoding in encodings:
        for dr, sf, max_frm in DATA_RATES:
            codec = base if dr == "DR5" else variant(profile, max_frm)
            imp = codec.layout.impact
            limit = (
                imp.max_fragment_bytes
                if encoding == "packed"
                else 1 + IMPACT_HEADER_SIZE + 6 * (imp.samples_per_fragment or 0)
            )
            sizes: list[int] = []
            uplinks: list[int] = []
            airtime: list[float] = []
            for w in windows:
                payloads = messages(codec, w, encoding)
                if encoding == "packed" and dr == "DR5":
                    got = decoded(codec, payloads)
                    want = (list(w.x), list(w.y), list(w.z))
                    if got != want:
                        raise AssertionError("packed window differs from the raw one")
                sizes.append(sum(len(m) for m in payloads))
                uplinks.append(len(payloads))
                airtime.append(sum(time_on_air_ms(LORAWAN_OVERHEAD + len(m), sf) for m in payloads))
            mean_air = statistics.mean(airtime)
            print(
                f"{encoding:<8} {dr:<4} {limit:>6} {statistics.mean(sizes):>17.0f} "
                f"{p95(sizes):>5.0f} {max(sizes):>5} {statistics.mean(uplinks):>12.2f} "
                f"{max(uplinks):>3} {mean_air / 1000:>14.2f} {p95(airtime) / 1000:>5.2f} "
                f"{DUTY_CYCLE_MS_PER_HOUR / mean_air:>16.1f}"
            )
    print(
        "lossless: every packed window decoded equal to the raw one "
        f"({time.monotonic() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
