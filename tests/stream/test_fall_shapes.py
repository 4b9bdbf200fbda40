"""Shape features of impact windows: alignment, invariance, PPV, the linear model, LOSO."""

from __future__ import annotations

import numpy as np
import pytest

from device_profiles.pendant_trigger import TriggerConfig
from stream.fall import synthetic as S
from stream.fall.data import trigger_windows
from stream.fall.shapes import (
    BIAS_SAMPLE,
    PPV_STEPS,
    ShapeModel,
    _convolutions,
    _fit_linear,
    align,
    biases_per_convolution,
    channels,
    fit_biases,
    fit_shape_model,
    n_convolutions,
    n_features,
    ppv,
    ppv_folds,
    segments,
    shape_loso,
)
from stream.fall.table import random_rotation

CFG = TriggerConfig()
N = CFG.pre_n + CFG.post_n
SEGS = segments(CFG.pre_n, N, CFG.rate_hz)


def _window(sig: np.ndarray) -> np.ndarray:
    (w,) = trigger_windows(sig, CFG)[:1]
    return align(np.column_stack([w.x, w.y, w.z]), w.trigger_index, CFG.pre_n, N)


def _fall(seed: int, **kw: float) -> np.ndarray:
    return _window(S.with_noise(S.fall(50, **kw), np.random.default_rng(seed)))


def _lie_down(seed: int) -> np.ndarray:
    """Sitting, then lying back onto a bed: a turn and a bump, no free fall."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, np.pi / 2, 40)
    turn = np.column_stack([np.sin(t), np.zeros_like(t), np.cos(t)])
    bump = np.tile([2.2, 0.0, 0.0], (4, 1))
    sig = np.vstack([S.still(4, 50), turn, bump, S.still(6, 50, (1, 0, 0))])
    return _window(S.with_noise(sig, rng, 0.02))


def test_align_puts_the_impact_at_pre_n_and_repeats_edges() -> None:
    acc = np.arange(30, dtype=np.float64).reshape(10, 3)
    out = align(acc, trigger_index=2, pre_n=5, n=15)
    assert out.shape == (15, 3)
    assert np.array_equal(out[5], acc[2])  # the impact sample
    assert np.array_equal(out[:3], np.tile(acc[0], (3, 1)))  # front edge repeated
    assert np.array_equal(out[12:], np.tile(acc[-1], (3, 1)))  # back edge repeated
    assert np.array_equal(align(acc, 2, 5, 12)[-1], acc[8])  # longer than n: cut
    late = align(acc, trigger_index=8, pre_n=5, n=6)  # more before the impact than pre_n
    assert np.array_equal(late[5], acc[8]) and np.array_equal(late[0], acc[3])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        align(np.zeros((4, 2)), 0, 5, 12)


@pytest.mark.parametrize("seed", range(4))
def test_channels_do_not_depend_on_how_the_sensor_is_worn(seed: int) -> None:
    w = _fall(seed)
    rot = random_rotation(np.random.default_rng(100 + seed))
    a, b = channels(w[None]), channels((w @ rot.T)[None])
    assert a.shape == (1, 3, N)
    assert np.allclose(a, b, atol=1e-6)
    # A 5 % gain error moves neither the magnitude (divided by the resting level) nor the
    # angles.
    assert np.allclose(a, channels(1.05 * w[None]), atol=1e-6)


def test_channels_say_what_happened() -> None:
    ch = channels(_fall(0)[None])[0]
    pre = CFG.pre_n
    assert ch[0, pre] == pytest.approx(5.0, abs=0.2)  # the impact, in resting levels
    assert ch[0, pre - 5] < 0.6  # free fall just before it
    assert ch[1, 10] < 5 and ch[1, -10] > 80  # turned 90 degrees away from the start
    assert ch[2, -10] < 5 and ch[2, 10] > 80


def test_ppv_features_count_and_resolution() -> None:
    ch = channels(np.stack([_fall(s) for s in range(3)] + [_lie_down(s) for s in range(3)]))
    biases = fit_biases(ch)
    assert biases.shape == (n_convolutions(),)
    f = ppv(ch, biases, SEGS)
    assert f.shape == (6, n_features(CFG.pre_n, N, CFG.rate_hz)) == (6, n_convolutions() * 4)
    assert f.min() >= 0.0 and f.max() <= 1.0
    assert np.allclose(f * PPV_STEPS, np.round(f * PPV_STEPS), atol=1e-4)
    # Several bias sets at once (cross-validation) give the same values, in bytes.
    other = fit_biases(ch, seed=1)
    folds = ppv_folds(ch, np.stack([biases, other]), SEGS)
    assert folds.dtype == np.uint8 and folds.shape == (2, *f.shape)
    assert f.dtype == np.float64  # the values the cross-validation's models were fitted on
    assert np.array_equal(folds[0].astype(np.float64) / PPV_STEPS, f)
    assert np.array_equal(folds[1].astype(np.float64) / PPV_STEPS, ppv(ch, other, SEGS))
    assert not np.array_equal(folds[0], folds[1])
    with pytest.raises(ValueError, match="biases"):
        ppv(ch, biases[:-1], SEGS)


def test_several_biases_per_convolution() -> None:
    """Bias j of convolution i is bias i * per_conv + j, at the golden-ratio quantile of
    that index; its features follow in the same order, whichever function computes them."""
    ch = channels(np.stack([_fall(s) for s in range(3)] + [_lie_down(s) for s in range(3)]))
    three = fit_biases(ch, seed=2, per_conv=3)
    assert three.shape == (3 * n_convolutions(),)
    assert biases_per_convolution(len(three)) == 3
    one = fit_biases(ch, seed=2)
    assert np.array_equal(one, fit_biases(ch, seed=2, per_conv=1))
    # bias 1 of convolution 0 is index 1: the golden-ratio quantile of (1 + 1 + 2000)
    first = next(_convolutions(ch))
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    assert three[1] == np.quantile(first, ((1 + 1 + 2000) * golden) % 1.0)
    assert three[0] == one[0]  # index 0 is index 0 whatever the count
    f = ppv(ch, three, SEGS)
    assert f.shape == (6, n_features(CFG.pre_n, N, CFG.rate_hz, per_conv=3))
    # the features of bias k of a three-bias set are those of a one-bias set holding it
    k = 3 * 7 + 2  # convolution 7, its third bias
    single = one.copy()
    single[7] = three[k]
    assert np.array_equal(f[:, k * 4 : k * 4 + 4], ppv(ch, single, SEGS)[:, 7 * 4 : 7 * 4 + 4])
    folds = ppv_folds(ch, np.stack([three, three]), SEGS)
    assert np.array_equal(folds[1].astype(np.float64) / PPV_STEPS, f)
    with pytest.raises(ValueError, match="multiple of"):
        ppv(ch, three[:-1], SEGS)
    with pytest.raises(ValueError, match="per_conv"):
        fit_biases(ch, per_conv=0)
    y = np.array([1, 1, 1, 0, 0, 0])
    model = fit_shape_model(ch, y, SEGS, C=0.1, per_conv=2)
    assert len(model.biases) == 2 * n_convolutions() and len(model.coef) == f.shape[1] / 3 * 2
    assert np.allclose(ShapeModel.from_dict(model.to_dict()).score(ch), model.score(ch))


def _dataset(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    falls = [_fall(s, peak_g=3.0 + (s % 5), fall_s=0.4 + 0.1 * (s % 4)) for s in range(n)]
    adls = [_lie_down(1000 + s) for s in range(n)]
    ch = channels(np.stack(falls + adls))
    y = np.array([1] * n + [0] * n)
    groups = np.array([f"s{i % 4}" for i in range(n)] * 2)
    return ch, y, groups


def test_shape_model_separates_and_survives_its_json_form() -> None:
    ch, y, _ = _dataset(12)
    model = fit_shape_model(ch, y, SEGS, C=0.1)
    scores = model.score(ch)
    assert scores[y == 1].min() > 0.5 > scores[y == 0].max()
    doc = model.to_dict()
    again = ShapeModel.from_dict(doc)
    assert np.allclose(again.score(ch), scores, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="version"):
        ShapeModel.from_dict({**doc, "shape_version": 99})
    with pytest.raises(ValueError, match="do not match"):
        ShapeModel.from_dict({**doc, "coef": doc["coef"][:-1]})  # type: ignore[index]
    with pytest.raises(ValueError, match="malformed"):
        ShapeModel.from_dict({k: v for k, v in doc.items() if k != "biases"})


def test_leave_one_group_out_scores_never_see_their_group() -> None:
    ch, y, groups = _dataset(12)
    label = y.copy()
    label[0] = -1  # an unlabelled window is scored, never trained on
    loso = shape_loso(ch, groups, label, SEGS, Cs=[0.1, 1.0])
    out = loso.scores
    assert set(out) == {0.1, 1.0}
    for scores in out.values():
        assert scores.shape == (len(ch),)
        assert scores[y == 1].min() > 0.5 > scores[y == 0].max()
    # A held-out group's scores come from models fitted without it: for the first group
    # (whose bias sample is drawn first), fitting on the other groups by hand gives them.
    rows = np.flatnonzero(groups != "s0")
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(rows), size=min(len(rows), BIAS_SAMPLE), replace=False))
    biases = fit_biases(ch[rows][pick])
    feats = ppv(ch, biases, SEGS)
    train = (groups != "s0") & (label >= 0)
    model = _fit_linear(feats[train], label[train], biases, SEGS, 0.1)
    held = groups == "s0"
    assert np.allclose(out[0.1][held], model.score_ppv(feats[held]), rtol=0, atol=1e-9)


def test_cross_scores_are_the_loso_models_on_other_windows() -> None:
    """Scoring the same windows "as another sensor sees them" with the LOSO models: on
    unchanged windows it gives the LOSO scores; on changed ones, other scores."""
    ch, y, groups = _dataset(12)
    loso = shape_loso(ch, groups, y, SEGS, Cs=[0.1])
    assert loso.names == tuple(sorted(set(groups.tolist())))
    assert all(np.array_equal(m.segs, SEGS) for m in loso.models[0.1])
    same = loso.cross(0.1, ch, groups)
    assert np.allclose(same, loso.scores[0.1], rtol=0, atol=1e-12)
    noisy = channels(
        np.stack([_fall(s) for s in range(12)] + [_lie_down(1000 + s) for s in range(12)])
        + np.random.default_rng(5).normal(0, 0.05, (24, N, 3))
    )
    moved = loso.cross(0.1, noisy, groups)
    assert moved.shape == same.shape and not np.allclose(moved, same)
    assert np.all((moved >= 0) & (moved <= 1))
    # each window is scored by its own group's model, whatever order the windows are in
    order = np.random.default_rng(9).permutation(len(ch))
    assert np.allclose(loso.cross(0.1, noisy[order], groups[order]), moved[order], atol=1e-12)
    # and a window of a group the cross-validation never held out scores 0
    stranger = loso.cross(0.1, noisy[:2], np.array(["nobody", groups[1]]))
    assert stranger[0] == 0.0 and stranger[1] == pytest.approx(moved[1], abs=1e-12)
