"""Shape features of impact windows: random-convolution (MiniRocket-style) PPV features.

The hand-made features (:mod:`stream.fall.features`) describe a window by what physics
says a fall is. These describe its *shape*, learned from data: the window is turned into
three orientation-invariant channels, each channel is convolved with a fixed set of small
kernels at several dilations, and a feature is the proportion of positive values (PPV)
of one convolution, minus a bias, over one segment of the window. A linear model on
these (see :class:`ShapeModel`) separates lying down on a bed from a fall from a seat
better than trees on the hand-made features did, with a decision threshold that moves
less from one person to the next (model card).

Channels, at the pendant's rate, with the window aligned so that the impact sample is at
``pre_n`` (edges repeated where a window is shorter):

0. acceleration magnitude divided by the sensor's own resting level (the median
   magnitude, clipped to 0.8-1.25 g: gain errors of a few percent are common);
1. angle (degrees) between the 0.2 s moving average of the acceleration and the mean
   acceleration of the window's first half second (where the body was);
2. the same to the window's last half second (where it ended up).

None depends on how the sensor is worn. Kernels (A. Dempster et al., "MiniRocket",
KDD 2021): length 9, weights -1 except three positions of weight 2 (all 84 choices),
dilations 1-32 samples; biases are quantiles of each convolution's output on training
windows, one or more per convolution, so they are part of the model (:func:`fit_biases`).
Segments: the whole window, the 2 s before the second before the impact, the two seconds
around it and the rest.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Positions of the three weight-2 taps of each length-9 kernel (the other six are -1).
KERNELS: tuple[tuple[int, int, int], ...] = tuple(itertools.combinations(range(9), 3))
DILATIONS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
N_CHANNELS = 3
#: Samples of the moving average (0.2 s at 50 Hz) and of the reference postures (0.5 s).
SMOOTH_N = 10
POSTURE_N = 25
REST_CLIP = (0.8, 1.25)
#: Golden-ratio sequence of bias quantiles: spread evenly over (0, 1) whatever the count.
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
SHAPE_VERSION = 1
#: PPV resolution (features are multiples of 1/PPV_STEPS): cross-validation keeps its
#: per-fold features in one byte each, and the shipped model sees the same values.
PPV_STEPS = 250


def n_convolutions() -> int:
    """Convolutions per window (kernels x dilations x channels)."""
    return len(KERNELS) * len(DILATIONS) * N_CHANNELS


def segments(pre_n: int, n: int, rate_hz: int) -> tuple[tuple[int, int], ...]:
    """(start, end) sample ranges PPV is taken over: the whole window, up to one second
    before the impact, the second either side of it, and from one second after it."""
    s = rate_hz
    return ((0, n), (0, pre_n - s), (pre_n - s, pre_n + s), (pre_n + s, n))


def n_features(pre_n: int, n: int, rate_hz: int, per_conv: int = 1) -> int:
    """Shape features per window with ``per_conv`` biases per convolution."""
    return n_convolutions() * per_conv * len(segments(pre_n, n, rate_hz))


def biases_per_convolution(n_biases: int) -> int:
    """How many biases each convolution has in a bias set of ``n_biases``; ValueError
    when that is not a whole positive number."""
    per_conv, rest = divmod(n_biases, n_convolutions())
    if rest or per_conv < 1:
        raise ValueError(
            f"expected a multiple of {n_convolutions()} biases (one or more per "
            f"convolution), got {n_biases}"
        )
    return per_conv


def align(acc: FloatArray, trigger_index: int, pre_n: int, n: int) -> FloatArray:
    """The window as ``n`` samples with the impact at ``pre_n`` (edges repeated)."""
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or len(a) == 0:
        raise ValueError("a window is an (N, 3) array with N > 0")
    lead = pre_n - int(trigger_index)
    a = np.concatenate([np.repeat(a[:1], lead, axis=0), a]) if lead >= 0 else a[-lead:]
    if len(a) < n:
        a = np.concatenate([a, np.repeat(a[-1:], n - len(a), axis=0)])
    return a[:n]


def channels(windows: npt.NDArray[np.floating]) -> FloatArray:
    """(N, 3, T) channels of (N, T, 3) aligned windows (see the module doc)."""
    w = np.asarray(windows, dtype=np.float64)
    mag = np.linalg.norm(w, axis=2)
    rest = np.clip(np.median(mag, axis=1), *REST_CLIP)
    a = w / rest[:, None, None]
    mag = mag / rest[:, None]
    k = SMOOTH_N
    padded = np.pad(a, ((0, 0), (k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
    csum = np.cumsum(np.concatenate([np.zeros((len(a), 1, 3)), padded], axis=1), axis=1)
    smooth = (csum[:, k:] - csum[:, :-k]) / k
    unit = smooth / np.maximum(np.linalg.norm(smooth, axis=2, keepdims=True), 1e-6)

    def angle_to(ref: FloatArray) -> FloatArray:
        ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-6)
        cos = np.einsum("nti,ni->nt", unit, ref)
        return np.asarray(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    first = angle_to(a[:, :POSTURE_N].mean(axis=1))
    last = angle_to(a[:, -POSTURE_N:].mean(axis=1))
    return np.stack([mag, first, last], axis=1)


def _convolutions(ch: FloatArray) -> Iterator[FloatArray]:
    """Every convolution output, (N, T) each, in the order of the biases and features.

    A generator: the outputs of all 1,512 convolutions of a training set would not fit in
    memory at once (20 MB each for SisFall's 7,335 windows).
    """
    n_t = ch.shape[2]
    for c in range(N_CHANNELS):
        x = ch[:, c, :]
        for d in DILATIONS:
            padded = np.pad(x, ((0, 0), (4 * d, 4 * d)), mode="edge")
            taps = [padded[:, j * d : j * d + n_t] for j in range(9)]
            total = np.sum(taps, axis=0)
            for kernel in KERNELS:
                # weights: 2 at the kernel's three taps, -1 elsewhere (they sum to zero,
                # so a repeated edge gives 0 rather than an artefact)
                yield 3.0 * (taps[kernel[0]] + taps[kernel[1]] + taps[kernel[2]]) - total


def fit_biases(ch: FloatArray, seed: int = 0, per_conv: int = 1) -> FloatArray:
    """``per_conv`` biases per convolution: quantiles of its output on training windows
    ``ch``, as MiniRocket takes several per kernel and dilation: each bias gives the
    regression another threshold on the same shape, meant to make the features depend
    less on the quantiles one draw picks (on SisFall three did not beat one: model card,
    "What was tried").

    Bias ``k = i * per_conv + j`` (convolution ``i``) is the quantile at the fractional
    part of ``(k + 1 + 1000 * seed)`` times the golden ratio; ``seed`` picks another
    spread of quantiles.
    """
    if per_conv < 1:
        raise ValueError("per_conv must be at least 1")
    biases: list[float] = []
    for i, conv in enumerate(_convolutions(ch)):
        ks = np.arange(i * per_conv, (i + 1) * per_conv)
        qs = ((ks + 1 + 1000 * seed) * _GOLDEN) % 1.0
        biases.extend(float(b) for b in np.quantile(conv, qs))
    return np.asarray(biases)


def _steps(positive: npt.NDArray[np.bool_], segs: Sequence[tuple[int, int]]) -> FloatArray:
    """(N, len(segs)) PPV of one thresholded convolution over each segment, in whole
    steps of 1/:data:`PPV_STEPS`: the one place the features are quantized."""
    shares = np.stack([positive[:, lo:hi].mean(axis=1) for lo, hi in segs], axis=1)
    return np.asarray(np.round(shares * PPV_STEPS))


def ppv(
    ch: FloatArray, biases: Sequence[float] | FloatArray, segs: Sequence[tuple[int, int]]
) -> FloatArray:
    """(N, n_features) PPV features of channels ``ch`` with the given biases, in steps of
    1/:data:`PPV_STEPS` (the same float64 values as :func:`ppv_folds` / ``PPV_STEPS``).

    Feature ``(i * per_conv + j) * len(segs) + s``: convolution ``i``, its bias ``j``,
    segment ``s``.
    """
    b = np.asarray(biases, dtype=np.float64)
    per_conv = biases_per_convolution(len(b))
    out = np.empty((ch.shape[0], len(b) * len(segs)), dtype=np.float64)
    n_seg = len(segs)
    for i, conv in enumerate(_convolutions(ch)):
        for k in range(i * per_conv, (i + 1) * per_conv):
            out[:, k * n_seg : (k + 1) * n_seg] = _steps(conv > b[k], segs) / PPV_STEPS
    return out


def ppv_folds(
    ch: FloatArray, bias_sets: FloatArray, segs: Sequence[tuple[int, int]]
) -> npt.NDArray[np.uint8]:
    """PPV features of every window under several bias sets at once, (F, N, n_features),
    in steps of 1/250 (uint8): cross-validation needs one bias set per fold, and each
    convolution is computed once for all of them."""
    sets = np.asarray(bias_sets, dtype=np.float64)
    per_conv = biases_per_convolution(sets.shape[1])
    out = np.empty((len(sets), ch.shape[0], sets.shape[1] * len(segs)), dtype=np.uint8)
    n_seg = len(segs)
    for i, conv in enumerate(_convolutions(ch)):
        for k in range(i * per_conv, (i + 1) * per_conv):
            for f in range(len(sets)):
                steps = _steps(conv > sets[f, k], segs)
                out[f, :, k * n_seg : (k + 1) * n_seg] = steps.astype(np.uint8)
    return out


#: Training windows whose convolution outputs set the biases (a sample: the quantiles of a
#: few hundred windows are as good as those of all, at a fraction of the cost).
BIAS_SAMPLE = 300


@dataclass(frozen=True)
class ShapeModel:
    """Biases, standardization and a logistic regression over the shape features.

    ``score(ch)`` gives the probability of a fall for channels from :func:`channels`.
    Everything is plain numbers (:meth:`to_dict` / :meth:`from_dict`), scored with numpy.
    """

    biases: FloatArray
    mean: FloatArray
    scale: FloatArray
    coef: FloatArray
    intercept: float
    segs: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        n = len(self.biases) * len(self.segs)
        biases_per_convolution(len(self.biases))  # raises when they do not fit the kernels
        if not len(self.mean) == len(self.scale) == len(self.coef) == n:
            raise ValueError("shape model arrays do not match the kernels and segments")

    def score_ppv(self, feats: npt.NDArray[np.floating]) -> FloatArray:
        """Probabilities of PPV feature rows."""
        z = (np.asarray(feats, dtype=np.float64) - self.mean) / self.scale
        logit = z @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-logit)))

    def score(self, ch: FloatArray) -> FloatArray:
        """Probabilities of channel arrays (N, 3, T)."""
        return self.score_ppv(ppv(ch, self.biases, self.segs))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "shape_version": SHAPE_VERSION,
            "segments": [list(s) for s in self.segs],
            "biases": self.biases.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, doc: object) -> ShapeModel:
        """Rebuild from :meth:`to_dict`; raises ValueError when it does not fit."""
        if not isinstance(doc, dict) or doc.get("shape_version") != SHAPE_VERSION:
            raise ValueError(f"not a shape model of version {SHAPE_VERSION}")
        try:
            return cls(
                biases=np.asarray(doc["biases"], dtype=np.float64),
                mean=np.asarray(doc["mean"], dtype=np.float64),
                scale=np.asarray(doc["scale"], dtype=np.float64),
                coef=np.asarray(doc["coef"], dtype=np.float64),
                intercept=float(doc["intercept"]),
                segs=tuple((int(lo), int(hi)) for lo, hi in doc["segments"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed shape model ({exc})") from None


def _bias_sample(n: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    return np.sort(rng.choice(n, size=min(n, BIAS_SAMPLE), replace=False))


def fit_shape_model(
    ch: FloatArray,
    y: npt.NDArray[np.int64],
    segs: Sequence[tuple[int, int]],
    *,
    C: float,
    seed: int = 0,
    per_conv: int = 1,
) -> ShapeModel:
    """Fit biases (``per_conv`` per convolution, on a sample of ``ch``), standardization
    and an L2 logistic regression."""
    rng = np.random.default_rng(seed)
    biases = fit_biases(ch[_bias_sample(len(ch), rng)], seed, per_conv)
    feats = ppv(ch, biases, segs)
    return _fit_linear(feats, y, biases, segs, C)


def _fit_linear(
    feats: npt.NDArray[np.floating],
    y: npt.NDArray[np.int64],
    biases: FloatArray,
    segs: Sequence[tuple[int, int]],
    C: float,
) -> ShapeModel:
    from sklearn.linear_model import LogisticRegression

    f = np.asarray(feats, dtype=np.float64)
    mean = f.mean(axis=0)
    scale = f.std(axis=0) + 1e-3  # a feature constant in training gets no weight to speak of
    lr = LogisticRegression(C=C, max_iter=2000, tol=1e-4)
    lr.fit((f - mean) / scale, y)
    return ShapeModel(
        biases=np.asarray(biases, dtype=np.float64),
        mean=mean,
        scale=scale,
        coef=np.asarray(lr.coef_[0], dtype=np.float64),
        intercept=float(lr.intercept_[0]),
        segs=tuple((int(lo), int(hi)) for lo, hi in segs),
    )


def _fold_biases(
    ch: FloatArray, g: npt.NDArray[np.str_], seed: int, per_conv: int
) -> tuple[list[str], FloatArray]:
    """The groups in order, and each one's biases fitted on the other groups' windows."""
    names = sorted(set(g.tolist()))
    rng = np.random.default_rng(seed)
    sets = []
    for name in names:
        others = np.flatnonzero(g != name)
        sets.append(fit_biases(ch[others[_bias_sample(len(others), rng)]], seed, per_conv))
    return names, np.stack(sets)


@dataclass(frozen=True)
class ShapeLoso:
    """Leave-one-group-out results: every window's out-of-fold score for each ``C``, and
    the models that gave them (``models[C][k]`` was fitted without group ``names[k]``)."""

    names: tuple[str, ...]
    scores: dict[float, FloatArray]
    models: dict[float, tuple[ShapeModel, ...]]

    def cross(
        self, C: float, test_ch: FloatArray, test_groups: Sequence[str] | npt.NDArray[np.str_]
    ) -> FloatArray:
        """Scores of other windows of the same groups (e.g. the recordings as another
        sensor sees them), each by the model fitted without its group. Windows of a group
        the cross-validation did not hold out score 0."""
        models = self.models[float(C)]
        tg = np.asarray(test_groups)
        rows = [np.flatnonzero(tg == name) for name in self.names]
        bias_sets = np.stack([m.biases for m in models])
        out = np.zeros(len(test_ch))
        for k, feats in enumerate(_ppv_grouped(test_ch, bias_sets, rows, models[0].segs)):
            if len(rows[k]):
                out[rows[k]] = models[k].score_ppv(feats)
        return out


def _ppv_grouped(
    ch: FloatArray,
    bias_sets: FloatArray,
    rows: Sequence[npt.NDArray[np.int64]],
    segs: Sequence[tuple[int, int]],
) -> list[FloatArray]:
    """PPV features of the windows ``rows[k]`` under bias set ``k``, for every ``k``: one
    pass over the convolutions, each window compared with its own set only."""
    per_conv = biases_per_convolution(bias_sets.shape[1])
    out = [np.empty((len(r), bias_sets.shape[1] * len(segs))) for r in rows]
    n_seg = len(segs)
    for i, conv in enumerate(_convolutions(ch)):
        for f, r in enumerate(rows):
            part = conv[r]
            for k in range(i * per_conv, (i + 1) * per_conv):
                steps = _steps(part > bias_sets[f, k], segs)
                out[f][:, k * n_seg : (k + 1) * n_seg] = steps / PPV_STEPS
    return out


def shape_loso(
    ch: FloatArray,
    groups: Sequence[str] | npt.NDArray[np.str_],
    label: npt.NDArray[np.int64],
    segs: Sequence[tuple[int, int]],
    *,
    Cs: Sequence[float],
    seed: int = 0,
    per_conv: int = 1,
    progress: Callable[[str], None] | None = None,
) -> ShapeLoso:
    """Leave-one-group-out scores of every window, one array per ``C``, and the models.

    For each held-out group (subject) the biases come from the other groups' windows
    only, and the regression sees only their labelled windows (``label >= 0``).
    """
    g = np.asarray(groups)
    names, bias_sets = _fold_biases(ch, g, seed, per_conv)
    folds = ppv_folds(ch, bias_sets, segs)
    scores = {float(C): np.zeros(len(ch)) for C in Cs}
    models: dict[float, list[ShapeModel]] = {float(C): [] for C in Cs}
    for f, name in enumerate(names):
        test = g == name
        train = (~test) & (label >= 0)
        feats = folds[f].astype(np.float64) / PPV_STEPS
        for C in Cs:
            model = _fit_linear(feats[train], label[train], bias_sets[f], segs, float(C))
            scores[float(C)][test] = model.score_ppv(feats[test])
            models[float(C)].append(model)
        if progress is not None:
            progress(f"  fold {f + 1}/{len(names)}: held out {name}")
    return ShapeLoso(
        names=tuple(names),
        scores=scores,
        models={c: tuple(m) for c, m in models.items()},
    )
