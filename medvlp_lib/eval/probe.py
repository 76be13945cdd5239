"""Linear-probe AUC with 1 % / 10 % / 100 % of the training labels (MGCA / GLoRIA protocol, multi-label).

Frozen features, one L2-regularised logistic regression per label (scikit-learn, lbfgs) on standardised
features (mean / std of the training subset), AUC on the full test set.

Subsampling (our reading for multi-label data): for fraction ``f`` and seed ``s`` we draw
``n = max(1, round(f * N))`` training rows: first, visiting labels in a seeded random order, one positive and
one negative row per label is added if the subset does not have one yet (so every label that has both
classes in the full training set can be fitted -- this can make tiny subsets slightly larger than ``n``);
then the subset is filled with uniformly random rows up to ``n``. ``f = 1`` uses every row.
Labels with one class in the test set are skipped (``skipped_test``), labels with one class in the
training subset are skipped for that seed (``skipped_train`` counts (label, seed) pairs); both are reported.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

__all__ = ["linear_probe_auc", "stratified_subsample", "multiclass_probe_accuracy"]


def _np2(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    return x


def stratified_subsample(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Row indices of a subset of ``y`` [N, L] (see module docstring); sorted, deterministic in seed."""
    n_total = y.shape[0]
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction >= 1:
        return np.arange(n_total)
    n = max(1, int(round(fraction * n_total)))
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for j in rng.permutation(y.shape[1]):
        for value in (1.0, 0.0):
            rows = np.flatnonzero(y[:, j] == value)
            if len(rows) and not any(y[i, j] == value for i in chosen):
                chosen.add(int(rng.choice(rows)))
    rest = np.setdiff1d(np.arange(n_total), np.fromiter(chosen, dtype=int, count=len(chosen)))
    extra = max(0, n - len(chosen))
    if extra:
        chosen.update(int(i) for i in rng.choice(rest, size=min(extra, len(rest)), replace=False))
    return np.sort(np.fromiter(chosen, dtype=int, count=len(chosen)))


def linear_probe_auc(train_x, train_y, test_x, test_y, fractions: Sequence[float] = (0.01, 0.1, 1.0),
                     seeds: Sequence[int] = (0,), label_names: Sequence[str] | None = None, C: float = 1.0,
                     max_iter: int = 1000, standardize: bool = True) -> dict:
    """Linear-probe AUC per fraction of training labels.

    Returns ``{fraction: {"mean", "std", "per_label", "per_label_std", "n_train", "skipped_test",
    "skipped_train", "n_not_converged"}}``: ``mean`` = mean over labels of the AUC, averaged over seeds;
    ``std`` = standard deviation over seeds of that mean (0 for one seed); ``per_label`` = seed-averaged
    AUC per label; ``n_train`` = subset size per seed.
    """
    xtr, xte = _np2(train_x, "train_x"), _np2(test_x, "test_x")
    ytr, yte = _np2(train_y, "train_y"), _np2(test_y, "test_y")
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise ValueError(f"features and labels must have the same rows: train {xtr.shape[0]} vs {ytr.shape[0]}, "
                         f"test {xte.shape[0]} vs {yte.shape[0]}")
    if xtr.shape[1] != xte.shape[1] or ytr.shape[1] != yte.shape[1]:
        raise ValueError(f"train/test column mismatch: x {xtr.shape[1]} vs {xte.shape[1]}, "
                         f"y {ytr.shape[1]} vs {yte.shape[1]}")
    for name, y in (("train_y", ytr), ("test_y", yte)):
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError(f"{name} must be binary 0/1 labels")
    L = ytr.shape[1]
    names = list(label_names) if label_names is not None else [str(j) for j in range(L)]
    if len(names) != L:
        raise ValueError(f"label_names has {len(names)} names but the labels have {L} columns")
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence")
    skipped_test = [names[j] for j in range(L) if yte[:, j].min() == yte[:, j].max()]
    results = {}
    for frac in fractions:
        per_seed_mean, per_label = [], {n: [] for n in names}
        n_train, skipped_train, not_conv = [], 0, 0
        for seed in seeds:
            idx = stratified_subsample(ytr, float(frac), int(seed))
            n_train.append(int(len(idx)))
            x = xtr[idx]
            mu, sd = (x.mean(0), x.std(0) + 1e-8) if standardize else (0.0, 1.0)
            xs, xt = (x - mu) / sd, (xte - mu) / sd
            aucs = []
            for j, name in enumerate(names):
                if name in skipped_test:
                    continue
                y = ytr[idx, j]
                if y.min() == y.max():
                    skipped_train += 1
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    clf = LogisticRegression(C=C, max_iter=max_iter).fit(xs, y)
                not_conv += any(issubclass(w.category, ConvergenceWarning) for w in caught)
                auc = float(roc_auc_score(yte[:, j], clf.decision_function(xt)))
                aucs.append(auc)
                per_label[name].append(auc)
            per_seed_mean.append(float(np.mean(aucs)) if aucs else float("nan"))
        results[float(frac)] = {
            "mean": float(np.mean(per_seed_mean)),
            "std": float(np.std(per_seed_mean)),
            "per_label": {n: float(np.mean(v)) for n, v in per_label.items() if v},
            "per_label_std": {n: float(np.std(v)) for n, v in per_label.items() if v},
            "n_train": n_train, "skipped_test": skipped_test, "skipped_train": skipped_train,
            "n_not_converged": not_conv,
        }
    return results


def multiclass_probe_accuracy(xtr, ytr, xte, yte, fractions, seed: int, C: float = 1.0) -> dict:
    """Accuracy of a multinomial logistic regression on standardised features, per label fraction.

    ``xtr`` [N, F], ``ytr`` int [N] in 0..K-1 (likewise ``xte``, ``yte``); the training rows of fraction ``f``
    are drawn by :func:`stratified_subsample` on the one-hot labels (every class present). Returns
    ``{f: {"acc": float, "n_train": int}}``."""
    k = int(max(ytr.max(), yte.max())) + 1
    onehot = np.eye(k)[ytr]
    out = {}
    for f in fractions:
        rows = stratified_subsample(onehot, f, seed)
        sc = StandardScaler().fit(xtr[rows])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(C=C, max_iter=1000).fit(sc.transform(xtr[rows]), ytr[rows])
        out[f] = {"acc": float((clf.predict(sc.transform(xte)) == yte).mean()), "n_train": int(len(rows))}
    return out
