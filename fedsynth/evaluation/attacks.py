"""Empirical privacy of a synthetic data set: distance to closest record and
membership-inference attacks.

Differential privacy bounds what *any* attack can learn; this module runs a
few concrete attacks so a reader can see the bound is not vacuous (or that a
non-private model leaks). The setting is the one of the DOMIAS paper (van
Breugel et al., AISTATS 2023) and of the CAMDA 2025 Health Privacy
Challenge:

* **members** are the real records the generator was trained on
  (``X_train``), **non-members** are real records from the same population
  that it never saw (``X_holdout``);
* the attacker holds the released synthetic data and, for the reference-based
  attacks, some reference records from the population (here: part of the
  holdout, never the record being scored -- see cross-fitting below);
* an attack gives every candidate record a score, higher meaning "more likely
  a member"; its AUROC over members vs non-members is the headline: 0.5 is
  guessing, 1.0 is certain membership.

Attacks (:data:`ATTACKS`), one per family:

``distance``
    Distance-based (GAN-leaks / DCR attack): ``-min_s ||x - s||`` over
    synthetic records ``s``. A generator that memorises its training records
    puts synthetic records on top of them.
``distance_ratio``
    Distance-based, calibrated: the distance to the closest synthetic record
    divided by the distance to the closest reference record, so records in
    dense regions (close to everything) do not look like members.
``domias_kde``
    Density ratio (DOMIAS): ``log p_syn(x) - log p_ref(x)``, with Gaussian
    kernel density estimates (:class:`scipy.stats.gaussian_kde`, Scott's
    bandwidth) of the synthetic and the reference data in the space of the
    synthetic data's first principal components. Overfitting shows as
    synthetic density that is high where the population density is not.
``classifier``
    Classifier-based: extremely randomised trees (100, fully grown, classes
    balanced) trained to tell synthetic records from reference records; the
    predicted probability of "synthetic" is the score (on the first 50
    principal components of the synthetic data when there are more genes).
    It flags records near which the generator puts unusually much mass.

All attacks work in one space chosen from what an attacker sees: genes
z-scored by the mean and standard deviation of the synthetic and reference
data together (the density attack then projects on principal components of
the synthetic data).

Cross-fitting: the holdout is split into ``n_folds`` random folds and the
members into as many. Fold ``f``'s members and non-members are scored with
the holdout minus fold ``f`` as reference, so no record is ever scored
against a reference that contains it, and every record is scored once.

:func:`distance_to_closest_record` is the non-adversarial companion: how
close synthetic records come to training records compared with equally many
holdout records (a synthetic set that copies its training data is much
closer to it).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy import stats
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.metrics import pairwise_distances_argmin_min, roc_auc_score, roc_curve

from fedsynth.errors import InputError, ParameterError

__all__ = ["ATTACKS", "auroc_ci", "distance_to_closest_record", "membership_inference"]

ATTACKS = ("distance", "distance_ratio", "domias_kde", "classifier")
"""Membership-inference attacks run by :func:`membership_inference`."""

FAMILIES = {"distance": "distance-based", "distance_ratio": "distance-based",
            "domias_kde": "density-ratio (DOMIAS)", "classifier": "classifier-based"}
"""Attack family of each attack (for reports)."""

_COPY_DECIMALS = 6  # records equal to this many decimals count as copies
_MAX_CANDIDATES = 2000  # members / non-members scored at most (subsampled beyond)
_MAX_SYNTHETIC = 5000  # synthetic records used by the attacks at most
_ROC_POINTS = 101  # ROC curve resolution kept for reports
_TREE_PCS = 50  # the classifier attack works on this many principal components


def _check(X, what):
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{what} must be a non-empty samples x genes matrix, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise InputError(f"{what} has {int(np.sum(~np.isfinite(X)))} missing or non-finite value(s)")
    return X


def _check_all(X_syn, X_train, X_holdout):
    X_syn = _check(X_syn, "synthetic matrix")
    X_train = _check(X_train, "real training matrix")
    X_holdout = _check(X_holdout, "real holdout matrix")
    if not X_syn.shape[1] == X_train.shape[1] == X_holdout.shape[1]:
        raise InputError(f"gene counts differ: synthetic {X_syn.shape[1]}, training {X_train.shape[1]}, "
                         f"holdout {X_holdout.shape[1]}")
    return X_syn, X_train, X_holdout


def _attacker_scale(X_syn, X_ref):
    """z-scoring from data an attacker holds (synthetic and reference records)."""
    both = np.vstack([X_syn, X_ref])
    mu = both.mean(axis=0)
    sd = both.std(axis=0)
    pos = sd[sd > 0]
    floor = 1e-3 * float(np.median(pos)) if pos.size else 1.0
    return mu, np.maximum(sd, floor)


def _subsample(n, cap, rng):
    if n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, cap, replace=False))


def _nn_dist(A, B):
    """Euclidean distance from each row of A to its nearest row of B."""
    return pairwise_distances_argmin_min(A, B, metric="euclidean")[1]


def _row_keys(X):
    R = np.round(X, _COPY_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    return {r.tobytes() for r in R}


def auroc_ci(auc, n_pos, n_neg, z=1.959964):
    """Approximate 95% confidence interval of an AUROC (Hanley & McNeil, 1982).

    Returns ``[low, high]`` clipped to [0, 1]; ``None`` if ``auc`` is None.
    """
    if auc is None or n_pos < 1 or n_neg < 1:
        return None
    a = float(auc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    se = math.sqrt(max(var, 0.0))
    # at a = 0 or 1 the formula gives 0; keep a minimal width of one "rank"
    se = max(se, 0.5 / math.sqrt(n_pos * n_neg))
    return [max(0.0, a - z * se), min(1.0, a + z * se)]


# ---------------------------------------------------------------------------
# distance to closest record
# ---------------------------------------------------------------------------


def distance_to_closest_record(X_syn, X_train, X_holdout, *, seed=0, return_distances=False):
    """Distance from each synthetic record to its closest real record.

    Distances are Euclidean on genes z-scored by the real data (training and
    holdout together).

    Two comparisons that are fair whatever the sizes of the two real sets:

    * *nearest-record share*: for each synthetic record, is its nearest real
      record (among training and holdout together) a training record? If the
      generator did not memorise, every real record is equally likely to be
      the nearest, so the expected share is ``n_train / (n_train +
      n_holdout)``; a share above that means synthetic records sit closer to
      the records they were trained on;
    * *size-matched distances*: the median distance to the closest of a random
      subsample of training records as large as the holdout, beside the median
      distance to the closest holdout record (equal under no memorisation).

    Parameters
    ----------
    X_syn, X_train, X_holdout : ndarray, shape (n, n_genes)
        Synthetic, real training (members) and real holdout records.
    seed : int
        Seed of the training subsample.
    return_distances : bool
        Also return per-record distances (for plots).

    Returns
    -------
    dict
        * ``median_to_train`` -- median distance from a synthetic record to
          the closest training record (all of them); 0 when the synthetic
          data copy the training data;
        * ``median_to_train_matched``, ``median_to_holdout`` -- the
          size-matched pair; ``median_ratio`` is their ratio (1 is ideal, far
          below 1 means synthetic records hug training records);
        * ``p05_to_train``, ``p05_to_holdout`` -- 5th percentiles (matched);
        * ``closer_to_train`` -- the nearest-record share (ties count one
          half), ``closer_to_train_expected`` its value without memorisation,
          ``closer_to_train_excess`` = ``(share - expected) / (1 - expected)``:
          0 is ideal, 1 = every synthetic record is nearest to a training
          record, negative = nearer to the holdout than chance;
          ``distinct_nearest`` -- how many distinct real records are the
          nearest of some synthetic record. When synthetic data are less
          spread than real data, a few central "hub" records are everyone's
          nearest and the share rests on whether those few were trained on,
          so it is noisy; the size-matched distances are then the steadier
          reading;
        * ``exact_copies`` -- synthetic records equal to a training record
          (to 6 decimals, on the input scale); ``exact_copy_fraction`` the same
          over the number of synthetic records;
        * ``n_synthetic``, ``n_train``, ``n_train_matched``, ``n_holdout``.

        With ``return_distances``, a second dict ``{"to_train", "to_holdout"}``
        (size-matched distances).
    """
    X_syn, X_train, X_holdout = _check_all(X_syn, X_train, X_holdout)
    rng = np.random.default_rng(seed)
    real = np.vstack([X_train, X_holdout])
    mu = real.mean(axis=0)
    sd = real.std(axis=0)
    pos = sd[sd > 0]
    sd = np.maximum(sd, 1e-3 * float(np.median(pos)) if pos.size else 1.0)
    S, T, H = (X_syn - mu) / sd, (X_train - mu) / sd, (X_holdout - mu) / sd
    S = S[_subsample(len(S), _MAX_SYNTHETIC, rng)]
    tr_idx = _subsample(len(T), len(H), rng)
    d_tr_all = _nn_dist(S, T)
    d_tr = _nn_dist(S, T[tr_idx]) if len(tr_idx) < len(T) else d_tr_all
    d_ho = _nn_dist(S, H)
    share = float(np.mean(d_tr_all < d_ho) + 0.5 * np.mean(d_tr_all == d_ho))
    distinct = len(set(pairwise_distances_argmin_min(S, np.vstack([T, H]))[0].tolist()))
    expected = len(T) / (len(T) + len(H))
    train_keys = _row_keys(X_train)
    copies = int(sum(r.tobytes() in train_keys for r in (np.round(X_syn, _COPY_DECIMALS) + 0.0)))
    med_tr, med_ho = float(np.median(d_tr)), float(np.median(d_ho))
    out = {
        "median_to_train": float(np.median(d_tr_all)),
        "median_to_train_matched": med_tr,
        "median_to_holdout": med_ho,
        "median_ratio": (med_tr / med_ho) if med_ho > 0 else None,
        "p05_to_train": float(np.percentile(d_tr, 5)),
        "p05_to_holdout": float(np.percentile(d_ho, 5)),
        "closer_to_train": share,
        "closer_to_train_expected": expected,
        "closer_to_train_excess": (share - expected) / (1 - expected),
        "exact_copies": copies,
        "exact_copy_fraction": copies / len(X_syn),
        "distinct_nearest": distinct,
        "n_synthetic": int(len(S)),
        "n_train": int(len(T)),
        "n_train_matched": int(len(tr_idx)),
        "n_holdout": int(len(H)),
    }
    if return_distances:
        return out, {"to_train": d_tr, "to_holdout": d_ho}
    return out


# ---------------------------------------------------------------------------
# membership inference
# ---------------------------------------------------------------------------


def _folds(n, k, rng):
    f = np.arange(n) % k
    rng.shuffle(f)
    return f


def _kde_logpdf(data, points):
    """log density of a Gaussian KDE of ``data`` (rows) at ``points`` (rows)."""
    kde = stats.gaussian_kde(data.T)
    return kde.logpdf(points.T)


def _score_fold(name, S, S_pca, pca, ref, cand, seed):
    """Membership scores of the candidate rows ``cand`` (higher = member)."""
    if name == "distance":
        return -_nn_dist(cand, S)
    if name == "distance_ratio":
        d_s = _nn_dist(cand, S)
        d_r = _nn_dist(cand, ref)
        return -(d_s / np.maximum(d_r, 1e-12))
    if name == "domias_kde":
        mean, comps = pca
        ref_p = (ref - mean) @ comps.T
        cand_p = (cand - mean) @ comps.T
        return _kde_logpdf(S_pca, cand_p) - _kde_logpdf(ref_p, cand_p)
    if name == "classifier":
        if S.shape[1] > _TREE_PCS:  # trees on the synthetic data's leading axes
            mean, comps = _pca(S, _TREE_PCS)
            S, ref, cand = ((A - mean) @ comps.T for A in (S, ref, cand))
        X = np.vstack([S, ref])
        y = np.r_[np.ones(len(S)), np.zeros(len(ref))]
        clf = ExtraTreesClassifier(n_estimators=100, class_weight="balanced", random_state=seed, n_jobs=1)
        clf.fit(X, y)
        return clf.predict_proba(cand)[:, 1]
    raise ParameterError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")


def leading_axes(X, k, seed=0):
    """Mean, the first ``k`` principal axes (rows) and their singular values.

    Exact SVD for small matrices, randomized SVD (Halko et al.) when both
    sides exceed 500, so wide expression matrices stay fast.
    """
    from sklearn.utils.extmath import randomized_svd

    mean = X.mean(axis=0)
    C = X - mean
    k = int(max(0, min(k, *C.shape)))
    if k == 0:
        return mean, np.zeros((0, X.shape[1])), np.zeros(0)
    if min(C.shape) > 500:
        _, s, vt = randomized_svd(C, k, random_state=seed)
    else:
        _, s, vt = np.linalg.svd(C, full_matrices=False)
    return mean, vt[:k], s[:k]


def _pca(X, k):
    """Mean and the first ``k`` principal axes (rows) of ``X``, dropping
    axes without variance."""
    mean, vt, s = leading_axes(X, k)
    k = int(np.sum(s > s[0] * 1e-8)) if s.size and s[0] > 0 else 0
    return mean, vt[:k]


def _roc_points(y, score):
    fpr, tpr, _ = roc_curve(y, score)
    grid = np.linspace(0, 1, _ROC_POINTS)
    return {"fpr": grid.round(4).tolist(), "tpr": np.interp(grid, fpr, tpr).round(4).tolist()}


def _tpr_at(y, score, fpr_max):
    fpr, tpr, _ = roc_curve(y, score)
    ok = fpr <= fpr_max + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def membership_inference(X_syn, X_train, X_holdout, *, attacks=ATTACKS, n_folds=3, n_components=5, seed=0,
                         return_scores=False):
    """Run membership-inference attacks against a synthetic data set.

    Parameters
    ----------
    X_syn : ndarray, shape (n_syn, n_genes)
        The released synthetic data.
    X_train : ndarray, shape (n_train, n_genes)
        Members: the real records the generator was trained on.
    X_holdout : ndarray, shape (n_holdout, n_genes)
        Non-members from the same population; also the attacker's reference
        data (cross-fitted, see the module docstring). At least 4 records.
    attacks : sequence of str
        Any of :data:`ATTACKS`.
    n_folds : int, default 3
        Cross-fitting folds (2 or more, at most ``n_holdout // 2``).
    n_components : int, default 5
        Principal components for the density attack (fewer if the data
        have fewer, or the reference fold is too small for a KDE).
    seed : int
        Seed of the folds, subsamples and the classifier.
    return_scores : bool
        Also return ``{attack: (scores, is_member)}`` for custom plots.

    Returns
    -------
    dict
        ``{"attacks": {name: {"family", "auroc", "auroc_ci95", "advantage",
        "tpr_at_fpr_0.1", "roc"}}, "worst": {"attack", "auroc",
        "auroc_ci95"}, "n_members", "n_non_members", "n_folds",
        "n_components", "seconds"}``.

        * ``auroc`` -- members vs non-members; 0.5 = no better than guessing.
        * ``auroc_ci95`` -- Hanley-McNeil 95% interval.
        * ``advantage`` -- max over thresholds of TPR - FPR (membership
          advantage, Yeom et al. 2018); 0 = none.
        * ``tpr_at_fpr_0.1`` -- members caught when at most 10% of
          non-members are wrongly accused.
        * ``roc`` -- the ROC curve on a 101-point FPR grid.
        * ``worst`` -- the attack with the highest AUROC (a maximum over
          several attacks is biased upwards), with its interval and
          ``auroc_ci95_adjusted``, the interval widened for the number of
          attacks (Bonferroni), which is the one to test 0.5 against.

        An attack that cannot run (e.g. the density attack with a
        reference fold smaller than its dimension + 2) has ``auroc`` None and
        a ``skipped`` reason.

    Raises
    ------
    InputError
        Empty, non-finite or mismatched matrices; fewer than 4 holdout
        records.
    ParameterError
        Unknown attack, bad ``n_folds``.
    """
    X_syn, X_train, X_holdout = _check_all(X_syn, X_train, X_holdout)
    if isinstance(attacks, str):
        attacks = (attacks,)
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise ParameterError(f"attacks: unknown or none {unknown!r}; choose from {', '.join(ATTACKS)}")
    if len(X_holdout) < 4:
        raise InputError(f"membership inference needs at least 4 holdout records, got {len(X_holdout)}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ParameterError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    n_folds = int(min(n_folds, len(X_holdout) // 2))
    mem = X_train[_subsample(len(X_train), _MAX_CANDIDATES, rng)]
    non = X_holdout[_subsample(len(X_holdout), _MAX_CANDIDATES, rng)]
    syn = X_syn[_subsample(len(X_syn), _MAX_SYNTHETIC, rng)]
    mu, sd = _attacker_scale(syn, X_holdout)
    S, M, N = (syn - mu) / sd, (mem - mu) / sd, (non - mu) / sd
    f_mem, f_non = _folds(len(M), n_folds, rng), _folds(len(N), n_folds, rng)
    # the density attack's dimension: at most the synthetic rank and small
    # enough for every reference fold's KDE to have a regular covariance
    min_ref = min(int(np.sum(f_non != f)) for f in range(n_folds))
    pca = _pca(S, min(n_components, max(min_ref - 2, 0), len(S) - 2))
    S_pca = (S - pca[0]) @ pca[1].T
    is_member = np.r_[np.ones(len(M), bool), np.zeros(len(N), bool)]
    results, scores_out = {}, {}
    for name in attacks:
        entry = {"family": FAMILIES[name]}
        if name == "domias_kde" and pca[1].shape[0] < 1:
            entry.update(auroc=None, skipped="too few reference or synthetic records for a density estimate")
            results[name] = entry
            continue
        score = np.empty(len(M) + len(N))
        try:
            for f in range(n_folds):
                ref = N[f_non != f]
                cand = np.vstack([M[f_mem == f], N[f_non == f]])
                s = _score_fold(name, S, S_pca, pca, ref, cand, seed + f)
                score[np.r_[np.flatnonzero(f_mem == f), len(M) + np.flatnonzero(f_non == f)]] = s
        except np.linalg.LinAlgError as e:
            entry.update(auroc=None, skipped=f"singular density estimate ({e})")
            results[name] = entry
            continue
        score = np.nan_to_num(score, nan=0.0, posinf=1e300, neginf=-1e300)
        auc = float(roc_auc_score(is_member, score))
        fpr, tpr, _ = roc_curve(is_member, score)
        entry.update(
            auroc=auc,
            auroc_ci95=auroc_ci(auc, len(M), len(N)),
            advantage=float(np.max(tpr - fpr)),
            **{"tpr_at_fpr_0.1": _tpr_at(is_member, score, 0.1)},
            roc=_roc_points(is_member, score),
        )
        results[name] = entry
        scores_out[name] = (score, is_member)
    ran = [(e["auroc"], n) for n, e in results.items() if e.get("auroc") is not None]
    worst = None
    if ran:
        auc, name = max(ran)
        z = float(stats.norm.ppf(1 - 0.05 / (2 * len(ran))))
        worst = {"attack": name, "auroc": auc, "auroc_ci95": results[name]["auroc_ci95"],
                 "auroc_ci95_adjusted": auroc_ci(auc, len(M), len(N), z=z)}
    out = {"attacks": results, "worst": worst, "n_members": int(len(M)), "n_non_members": int(len(N)),
           "n_folds": n_folds, "n_components": int(pca[1].shape[0]), "seconds": round(time.monotonic() - t0, 3)}
    if return_scores:
        return out, scores_out
    return out
