"""The run record (``run.json``) of ``train`` and ``simulate``, written in one place."""

from __future__ import annotations

from ..generators.protocol import TrainConfig
from . import options


def run_record(command: str, cfg: TrainConfig, meta: dict, *, sites: list[dict], wall_seconds: dict,
               **extra) -> dict:
    """``run.json``: the command, the options (from the one table), the DP record and timings.

    ``meta`` is the model file's metadata (generator, its parameters, DP
    record); ``extra`` adds the command's own entries (site, rank,
    communication, evaluation, ...).
    """
    dp = meta["dp"]
    return {
        "command": command,
        "generator": meta.get("generator", "cvae"),
        "generator_params": meta.get("generator_params"),
        "options": options.record(cfg),
        "budget_split": [{"name": m["name"], "noise_multiplier": m["noise_multiplier"]}
                         for m in dp.get("mechanisms", [])],
        "epsilon": dp["epsilon"],
        "epsilon_spent": dp["epsilon_spent"],
        # against one participating site (it knows its own noise); None without DP or with one site
        "epsilon_vs_site": dp.get("epsilon_vs_site"),
        "delta": dp["delta"],
        "private": dp["private"],
        "max_colluders": dp["max_colluders"],
        "sites": sites,
        **extra,
        "wall_seconds": {k: round(v, 3) for k, v in wall_seconds.items()},
        "dp": dp,
    }


def privacy_phrase(dp: dict) -> str:
    """``epsilon 0.999 of 1, delta 1e-05`` or ``NOT PRIVATE (--no-dp)``, for summary lines."""
    if not dp["private"]:
        return "NOT PRIVATE (--no-dp)"
    return f"epsilon {dp['epsilon_spent']:.3f} of {dp['epsilon']:g}, delta {dp['delta']:g}"
