"""Gradient-boosted trees as plain data: exported from scikit-learn, scored with numpy.

The shipped fall model is JSON, not a pickle: a pickle ties the model to the exact
scikit-learn release that wrote it (and loading one runs arbitrary code), while these
arrays of split features, thresholds, children and leaf values mean the same thing to
any numpy. Export checks that the numpy scorer reproduces scikit-learn's own decision
function on the training data, so an internal change in a future scikit-learn release
fails the training command instead of shipping a wrong model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stream.fall.errors import ModelError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Tree:
    """One regression tree; node 0 is the root, leaves have ``left == -1``."""

    feature: IntArray
    threshold: FloatArray
    left: IntArray
    right: IntArray
    missing_left: BoolArray
    value: FloatArray

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], n_features: int) -> Tree:
        """Build and check a tree from its JSON form."""
        try:
            tree = cls(
                feature=np.asarray(d["feature"], dtype=np.int64),
                threshold=np.asarray(d["threshold"], dtype=np.float64),
                left=np.asarray(d["left"], dtype=np.int64),
                right=np.asarray(d["right"], dtype=np.int64),
                missing_left=np.asarray(d["missing_left"], dtype=bool),
                value=np.asarray(d["value"], dtype=np.float64),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed tree: {exc}") from None
        n = len(tree.feature)
        arrays = (tree.threshold, tree.left, tree.right, tree.missing_left, tree.value)
        if n == 0 or any(len(x) != n for x in arrays):
            raise ModelError("malformed tree: node arrays of different lengths")
        inner = tree.left >= 0
        if np.any(tree.left[inner] >= n) or np.any(tree.right[inner] >= n):
            raise ModelError("malformed tree: child index out of range")
        if np.any(tree.right[inner] < 0):
            raise ModelError("malformed tree: inner node without a right child")
        if np.any(inner & ((tree.feature < 0) | (tree.feature >= n_features))):
            raise ModelError("malformed tree: split on an unknown feature")
        idx = np.arange(n)
        if np.any(inner & ((tree.left <= idx) | (tree.right <= idx))):
            # Children after parents: guarantees that scoring terminates.
            raise ModelError("malformed tree: a child precedes its parent")
        return tree

    def to_dict(self) -> dict[str, list[Any]]:
        """JSON form (floats keep their exact repr)."""
        return {
            "feature": [int(v) for v in self.feature],
            "threshold": [float(v) for v in self.threshold],
            "left": [int(v) for v in self.left],
            "right": [int(v) for v in self.right],
            "missing_left": [bool(v) for v in self.missing_left],
            "value": [float(v) for v in self.value],
        }

    def predict(self, X: FloatArray) -> FloatArray:
        """Leaf value reached by each row of X."""
        node = np.zeros(len(X), dtype=np.int64)
        rows = np.arange(len(X))
        while True:
            inner = self.left[node] >= 0
            if not np.any(inner):
                return np.asarray(self.value[node], dtype=np.float64)
            r = rows[inner]
            nd = node[inner]
            x = X[r, self.feature[nd]]
            go_left = np.where(np.isnan(x), self.missing_left[nd], x <= self.threshold[nd])
            node[inner] = np.where(go_left, self.left[nd], self.right[nd])


@dataclass(frozen=True)
class TreeEnsemble:
    """Sum of trees plus a baseline: a raw log-odds score; probability by the sigmoid."""

    baseline: float
    trees: tuple[Tree, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], n_features: int) -> TreeEnsemble:
        """Build and check an ensemble from its JSON form."""
        try:
            baseline = float(d["baseline"])
            raw_trees = d["trees"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed tree ensemble: {exc}") from None
        if not math.isfinite(baseline) or not isinstance(raw_trees, Sequence):
            raise ModelError("malformed tree ensemble: bad baseline or trees")
        return cls(baseline, tuple(Tree.from_dict(t, n_features) for t in raw_trees))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"baseline": self.baseline, "trees": [t.to_dict() for t in self.trees]}

    def raw(self, X: FloatArray) -> FloatArray:
        """Log-odds of each row."""
        out = np.full(len(X), self.baseline, dtype=np.float64)
        for tree in self.trees:
            out += tree.predict(X)
        return out

    def proba(self, X: FloatArray) -> FloatArray:
        """Probability of the positive class for each row."""
        return np.asarray(1.0 / (1.0 + np.exp(-self.raw(X))), dtype=np.float64)


def export_hist_gradient_boosting(clf: Any, X_check: FloatArray) -> TreeEnsemble:
    """Export a fitted binary ``HistGradientBoostingClassifier`` to a :class:`TreeEnsemble`.

    Reads the fitted predictors' node arrays (scikit-learn >= 1.0 layout); raises
    :class:`ModelError` when the estimator is not supported (categorical splits, more
    than two classes) or when the export does not reproduce ``decision_function`` on
    ``X_check``.
    """
    predictors = getattr(clf, "_predictors", None)
    if predictors is None or len(getattr(clf, "classes_", ())) != 2:
        raise ModelError("only fitted binary HistGradientBoostingClassifier models are exported")
    trees: list[Tree] = []
    for per_iteration in predictors:
        if len(per_iteration) != 1:
            raise ModelError("expected one tree per boosting iteration (binary model)")
        nodes = per_iteration[0].nodes
        if "is_categorical" in nodes.dtype.names and np.any(nodes["is_categorical"]):
            raise ModelError("categorical splits are not supported by the exported format")
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            Tree(
                feature=np.where(leaf, -1, nodes["feature_idx"].astype(np.int64)),
                threshold=np.where(leaf, 0.0, nodes["num_threshold"].astype(np.float64)),
                left=np.where(leaf, -1, nodes["left"].astype(np.int64)),
                right=np.where(leaf, -1, nodes["right"].astype(np.int64)),
                missing_left=nodes["missing_go_to_left"].astype(bool),
                value=np.where(leaf, nodes["value"], 0.0).astype(np.float64),
            )
        )
    baseline = float(np.asarray(clf._baseline_prediction).reshape(-1)[0])
    ens = TreeEnsemble(baseline, tuple(trees))
    expected = np.asarray(clf.decision_function(X_check), dtype=np.float64).reshape(-1)
    got = ens.raw(np.asarray(X_check, dtype=np.float64))
    if not np.allclose(got, expected, rtol=1e-9, atol=1e-9):
        worst = float(np.max(np.abs(got - expected)))
        raise ModelError(
            f"exported trees do not reproduce scikit-learn's decision function (max error "
            f"{worst:.3g}): this scikit-learn release is not supported by the exporter"
        )
    return ens
