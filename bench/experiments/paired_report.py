"""The one line the paired experiments print (``paired.py``, ``budget_pair.py``, ``scale_windows.py``)."""
import numpy as np


def report(label: str, base, new) -> None:
    """Print medians of (accuracy, macro-F1, gene-mean r) for both settings and their paired differences.

    ``base`` and ``new`` are runs x 3 arrays from the same splits and noise draws, in the same order.
    """
    base, new = np.asarray(base, float), np.asarray(new, float)
    diff = new - base
    se = diff.std(0) / np.sqrt(len(diff))
    print(f"{label} ({len(diff)} runs): median acc / F1 / gene-mean r {np.median(base, 0).round(3).tolist()} -> "
          f"{np.median(new, 0).round(3).tolist()}; paired mean difference acc {diff[:, 0].mean():+.3f} +- {se[0]:.3f}, "
          f"F1 {diff[:, 1].mean():+.3f} +- {se[1]:.3f}, gene-mean r {diff[:, 2].mean():+.4f} +- {se[2]:.4f}; "
          f"F1 up / down in {int((diff[:, 1] > 0).sum())} / {int((diff[:, 1] < 0).sum())}; lowest gene-mean r "
          f"{base[:, 2].min():.3f} -> {new[:, 2].min():.3f}", flush=True)
