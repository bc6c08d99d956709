"""What the schema agreement sends: no record count, with ``--classes`` no site's own label set, and
gene lists only when the sites' digests of them differ.

Three unopened sessions share one in-process store (as in
tests/test_session_unit.py) and run :func:`~fedsynth.federation.schema.agree_schema`
in threads; the test then reads every value the store holds, which is what
every site (and anyone reaching the store) could read.
"""

from __future__ import annotations

import json
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from fedsynth.errors import InputError
from fedsynth.federation.schema import agree_schema
from fedsynth.federation.session import Session

GENES = [f"g{i}" for i in range(6)]
VOCAB = ("Basal", "Her2", "LumA", "LumB")


def _cohorts(genes=(GENES, GENES, GENES)):
    # distinctive sizes and label sets: site 1 has no Her2, site 2 only LumA
    sizes, labels = [37, 53, 71], [["Basal", "Her2", "LumA", "LumB"], ["Basal", "LumA", "LumB"], ["LumA"]]
    return [SimpleNamespace(genes=list(g), labels=np.resize(np.array(lab), n), input_kind="log", n_samples=n,
                            source=f"site{r}.csv") for r, (n, lab, g) in enumerate(zip(sizes, labels, genes))]


def _agree(classes, genes=(GENES, GENES, GENES), mode="strict", expect_error=False):
    import torch.distributed as dist

    store = dist.HashStore()
    sessions = [Session(r, 3, "tcp://127.0.0.1:1", os.urandom(32), site_name=f"site{r}") for r in range(3)]
    for s in sessions:
        s._store = store
    out, errors = [None] * 3, []

    def run(r):
        try:
            out[r] = agree_schema(sessions[r], _cohorts(genes)[r], mode, classes)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if expect_error:
        return errors, store
    assert not errors, errors
    sent = [json.loads(store.get(k)) for k in (f"x1:schema/{r}" for r in range(3))]
    return out, sent, store


def _numbers(v):
    if isinstance(v, dict):
        return [x for y in v.values() for x in _numbers(y)]
    if isinstance(v, list):
        return [x for y in v for x in _numbers(y)]
    return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else []


def test_no_record_count_and_no_label_set_cross_sites():
    schemas, sent, _ = _agree(VOCAB)
    for r, payload in enumerate(sent):
        assert set(payload) == {"genes_sha256", "classes", "declared", "input_kind", "site"}
        assert payload["classes"] == sorted(VOCAB)  # the declared vocabulary, not the site's own labels
        assert _numbers(payload) == []  # no count of any kind
    assert all(s.n_total is None and s.classes == sorted(VOCAB) for s in schemas)
    assert schemas[0].site_names == ["site0", "site1", "site2"]


def test_without_classes_label_sets_are_exchanged_but_still_no_count():
    """Only allowed with --no-dp (TrainConfig refuses it with DP): the label sets do cross, counts do not."""
    schemas, sent, _ = _agree(None)
    assert [p["classes"] for p in sent] == [sorted(VOCAB), ["Basal", "LumA", "LumB"], ["LumA"]]
    assert all(_numbers(p) == [] for p in sent)


def test_labels_outside_the_vocabulary_are_refused():
    import torch.distributed as dist

    s = Session(0, 1, "tcp://127.0.0.1:1", os.urandom(32))
    s._store = dist.HashStore()
    with pytest.raises(InputError, match="site0.csv: labels not in --classes: Her2"):
        agree_schema(s, _cohorts()[0], "strict", ("Basal", "LumA", "LumB"))


def test_dp_requires_classes():
    from fedsynth.errors import ParameterError
    from fedsynth.generators.protocol import TrainConfig

    with pytest.raises(ParameterError, match="--classes is required with DP"):
        TrainConfig().validate()
    TrainConfig(no_dp=True).validate()
    TrainConfig().validate(classes_from_data=True)  # simulate: it declares the labels of the data it splits
    TrainConfig(classes=VOCAB).validate()


def _exchanged(store, name, n=3):
    keys = [f"x2:{name}/{r}" for r in range(n)]
    return [json.loads(store.get(k)) for k in keys] if store.check(keys) else None


def test_equal_gene_lists_cross_as_digests_only():
    """At 20,000 genes a list is ~200 KB and the store relays every site's message through rank 0: only
    the SHA-256 of each ordered list crosses when they agree."""
    schemas, sent, store = _agree(VOCAB)
    assert len({p["genes_sha256"] for p in sent}) == 1 and len(sent[0]["genes_sha256"]) == 64
    assert not any(g in json.dumps(p) for p in sent for g in GENES)
    assert _exchanged(store, "schema genes") is None
    assert all(s.genes == GENES for s in schemas)


def test_different_gene_lists_are_exchanged_then_refused_or_intersected():
    lists = (GENES, GENES[::-1], GENES[:4])
    errors, store = _agree(VOCAB, lists, "strict", expect_error=True)
    assert len(errors) == 3 and all(isinstance(e, InputError) for e in errors)
    assert all("sites disagree on 2 genes (e.g. g4, g5)" in str(e) for e in errors)
    assert _exchanged(store, "schema genes") == [list(g) for g in lists]
    schemas, _, _ = _agree(VOCAB, lists, "intersect")
    assert all(s.genes == GENES[:4] for s in schemas)  # rank 0's order, the shared genes
    # the same genes in another order are not a disagreement
    schemas, _, _ = _agree(VOCAB, (GENES, GENES[::-1], GENES), "strict")
    assert all(s.genes == GENES for s in schemas)
