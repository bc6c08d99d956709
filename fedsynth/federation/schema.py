"""Schema agreement: the public facts every site must share before any release.

Each site sends its gene list, its label vocabulary (or only the declared
``--classes``), its input kind and its name; every site checks the others
agree (:func:`agree_schema`). No record count is exchanged: under
add/remove neighbours the count is private, so the protocol releases one
noisy total ``N`` through the accountant (``fedsynth.privacy.release``) and
sets :attr:`Schema.n_total` from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, ParameterError

log = logging.getLogger("fedsynth")


@dataclass
class Schema:
    """The agreed public schema: genes, classes, input kind, site names; then the released ``N``.

    ``n_total`` is ``None`` until the protocol has released the noisy
    record count (and then that count, never an exact one); ``n_total_sd``
    is its noise s.d. (0 without DP).
    """
    genes: list[str]
    classes: list[str]
    input_kind: str
    site_names: list[str]
    n_total: int | None = None
    n_total_sd: float = 0.0

    def label_index(self, labels) -> np.ndarray:
        """Class indices (into :attr:`classes`) of ``labels``."""
        return np.array([self.classes.index(str(v)) for v in labels], dtype=np.int64)


# --------------------------------------------------------------- schema
def agree_schema(session, cohort, genes_mode: str, classes: tuple[str, ...] | None = None) -> Schema:
    """Exchange the public schema and check the sites agree; ranks in order.

    With ``classes`` (the public label vocabulary, ``--classes``) each site
    only checks its labels are among them and the sites compare the list; a
    site's own label set is never sent. Without it (only with ``--no-dp``), each site's label set is
    exchanged (revealing which classes each site has) and the union is used.

    Genes: each site first sends only the SHA-256 of its ordered gene list
    (gene names are public, but at 20,000 genes a list is ~200 KB, and the
    store relays every site's message to every site through rank 0, so
    whole lists cost rank 0 ``k^2`` lists). Only when the digests differ
    are the lists exchanged, to name the genes that differ (strict) or to
    intersect them (``--genes intersect``).
    """
    own = sorted(set(map(str, cohort.labels)))
    if classes is not None:
        unknown = sorted(set(own) - set(classes))
        if unknown:
            raise InputError(f"{cohort.source}: labels not in --classes: {', '.join(unknown[:5])}")
    mine = {
        "genes_sha256": _digest(list(cohort.genes)),
        "classes": sorted(classes) if classes is not None else own,
        "declared": classes is not None,
        "input_kind": cohort.input_kind,
        "site": session.site_name,
    }
    views = session.exchange("schema", mine, step="schema agreement")
    kinds = {v["input_kind"] for v in views}
    if len(kinds) > 1:
        raise InputError(
            "schema agreement: sites disagree on --input-kind ("
            + ", ".join(f"rank {r}: {v['input_kind']}" for r, v in enumerate(views))
            + ")"
        )
    if len({v["declared"] for v in views}) > 1 or (
        classes is not None and len({tuple(v["classes"]) for v in views}) > 1
    ):
        raise InputError("schema agreement: sites disagree on --classes (every site must give the same list, or none)")
    if len({v["genes_sha256"] for v in views}) == 1:
        genes = list(cohort.genes)
    else:
        genes = _agree_genes(session, cohort, genes_mode)
    classes = sorted(set().union(*[set(v["classes"]) for v in views]))
    if not views[0]["declared"]:
        for r, v in enumerate(views):
            lacking = sorted(set(classes) - set(v["classes"]))
            if lacking:
                log.warning("schema agreement: rank %d (%s) has no samples of %s; the other sites' data "
                            "alone carry those classes", r, v["site"], ", ".join(lacking))
    if len(classes) < 2:
        raise InputError(f"schema agreement: only one label ({classes[0]}) across all sites")
    return Schema(genes, classes, views[0]["input_kind"], [v["site"] for v in views])


def _digest(genes: list[str]) -> str:
    return hashlib.sha256(json.dumps(genes).encode()).hexdigest()


def _agree_genes(session, cohort, genes_mode: str) -> list[str]:
    """The gene lists themselves, exchanged when the digests differ: rank 0's order, the shared genes."""
    views = session.exchange("schema genes", list(cohort.genes), step="schema agreement")
    base = views[0]
    shared = set(base).intersection(*[set(v) for v in views[1:]])
    union = set().union(*[set(v) for v in views])
    if genes_mode == "strict" and len(shared) != len(union):
        differ = sorted(union - shared)
        raise InputError(
            f"schema agreement: sites disagree on {len(differ)} genes "
            f"(e.g. {', '.join(differ[:5])}); pass --genes intersect to use the "
            f"{len(shared)} genes all sites share"
        )
    if not shared:
        raise InputError("schema agreement: the sites share no gene at all")
    return [g for g in base if g in shared]


def join_schema(session, cohort, *, genes_mode: str, classes: tuple[str, ...] | None, max_colluders: int):
    """Every generator's first step at a site: agree the schema, keep its genes.

    Returns the agreed :class:`Schema` and the cohort restricted to (and
    ordered by) its genes; refuses ``--max-colluders`` >= k before anything
    is revealed beyond the schema.
    """
    schema = agree_schema(session, cohort, genes_mode, classes)
    if list(cohort.genes) != schema.genes:
        cohort = cohort.subset_genes(schema.genes)
    k = session.world_size
    if max_colluders >= k:
        raise ParameterError(f"--max-colluders must be below the number of sites ({k})")
    return schema, cohort
