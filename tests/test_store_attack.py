"""An unauthenticated writer on the rendezvous store (issue #11, "Privacy hardening": done when).

Threat: anyone who reaches rank 0's store port can connect as a plain
``torch.distributed.TCPStore`` client (no secret needed: the store is not
access-controlled) and read or write any key. The claim tested: such a
client cannot change what any site computes without every site aborting
and naming the step.

Three sites, each its own OS process over 127.0.0.1, open a session, agree
a "schema" (an :meth:`~fedsynth.federation.session.Session.exchange` under
the step name of the real schema agreement, ``x3:schema/<rank>`` in the
store: hello and proof are exchanges 1 and 2; the raw key is
``fedsynth//x3:schema/<rank>``), then run a secure sum. What
a site computes is the total of the exchanged record counts and the secure
sum. The test process plays the attacker: it connects to the store port as
a client and writes a forged schema payload for rank 1 (a record count of
1000, where rank 1 has 11), in the old protocol's format (a forged MAC, or
a valid value moved from another key or session, are refused the same way:
``tests/test_store.py``). Order is made deterministic with a go-file the sites wait for:

``before``
    the attacker writes rank 1's key while rank 1 is held back; ranks 0
    and 2 read the forgery, rank 1's honest write replaces it later;
``after``
    rank 1 writes first, the attacker overwrites its value, then the others
    (and rank 1 itself) read it.

Every site must either exit 0 with exactly what it computes without an
attacker (a control run), or exit non-zero with a message naming the step
``schema agreement``; at least one site must have caught the forgery
itself. Without the MACs (the protocol before v3) ranks 0 and 2 silently
compute a total of 1022 and exit 0: the test fails.

Not tested here: gloo's own address keys (``fedsynth/pg/...``), which torch
writes and reads; an outsider who rewrites them can make gloo fail (every
site aborts) or point it at itself (gloo traffic is not integrity-protected;
see the README's trust section). Nor the heartbeat/claim/done counters,
which carry no result.

This file is also the party program (``python tests/test_store_attack.py
--rank R --world-size K --port P --secret F --out OUT.npz [--go FILE]
[--delay S]``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

K = 3
VICTIM = 1
KEY = f"fedsynth//x3:schema/{VICTIM}"  # PrefixStore("fedsynth/") adds "fedsynth/" + "/"


# --------------------------------------------------------------- the party
def party_main(argv: list[str]) -> int:
    import torch
    from testkit import parse_party_args, party_session

    from fedsynth.errors import FedsynthError
    from fedsynth.federation.secure_sum import SecureSum

    a = parse_party_args(argv, go=("", "wait for this file before the schema exchange"),
                         delay=("0", "then wait this many seconds more"))
    try:
        with party_session(a, timeout=60) as session:
            if a.go:
                while not Path(a.go).exists():
                    time.sleep(0.05)
            time.sleep(float(a.delay))
            views = session.exchange("schema", {"n": 10 + a.rank}, step="schema agreement")
            total_n = sum(v["n"] for v in views)
            total = SecureSum(session).sum(torch.tensor([float(a.rank + 1), float(total_n)]),
                                           step="secure sum").numpy()
    except FedsynthError as e:
        print(f"fedsynth: error: {e}", file=sys.stderr)
        return e.exit_code
    np.savez(a.out, total_n=np.array(total_n), total=total)
    return 0


if __name__ == "__main__":
    sys.exit(party_main(sys.argv[1:]))


# ------------------------------------------------------------------ the test
def _start(tmp_path: Path, tag: str, go: Path, victim_waits: bool):
    from testkit import PY, free_port, start_process, write_secret

    secret = write_secret(tmp_path / f"{tag}.key")
    port = free_port()
    procs = []
    for r in range(K):
        cmd = [PY, __file__, "--rank", str(r), "--world-size", str(K), "--port", str(port),
               "--secret", str(secret), "--out", str(tmp_path / f"{tag}{r}.npz")]
        if r != VICTIM or victim_waits:
            cmd += ["--go", str(go)]
        if r == VICTIM and victim_waits:
            cmd += ["--delay", "5"]
        procs.append(start_process(cmd, tmp_path / "logs", f"{tag}_rank{r}"))
    return procs, port


def _attacker(port: int, procs):
    """A plain TCPStore client of the store (no secret), once the store is up."""
    import socket
    from datetime import timedelta

    import torch.distributed as dist

    deadline = time.monotonic() + 90
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "no store came up"
            time.sleep(0.1)
    return dist.TCPStore("127.0.0.1", port, None, is_master=False, timeout=timedelta(seconds=60),
                         wait_for_workers=False)


def _wait_key(store, key: str, procs) -> None:
    deadline = time.monotonic() + 90
    while not store.check([key]):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), f"{key} never appeared"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    """What each site computes in the same session without the attacker."""
    from testkit import describe, wait_all

    d = tmp_path_factory.mktemp("control")
    go = d / "go"
    go.touch()
    procs, _ = _start(d, "control", go, victim_waits=False)
    assert wait_all(procs, 180) == [0] * K, describe(procs)
    return [dict(np.load(d / f"control{r}.npz")) for r in range(K)]


@pytest.mark.multiprocess
@pytest.mark.timeout(600)
@pytest.mark.parametrize("when", ["before", "after"])
def test_an_unauthenticated_store_writer_cannot_change_any_result(tmp_path, control, when):
    from testkit import describe, wait_all

    expected = control
    assert all(int(e["total_n"]) == 33 for e in expected)
    np.testing.assert_allclose(expected[0]["total"], [6.0, 99.0])

    go = tmp_path / "go"
    procs, port = _start(tmp_path, "attack", go, victim_waits=when == "before")
    store = _attacker(port, procs)
    if when == "before":
        store.set(KEY, b'{"n": 1000}')  # rank 1 is still held back: the others will read this
    else:
        _wait_key(store, KEY, procs)  # rank 1's honest value is there; replace it
        store.set(KEY, b'{"n": 1000}')
    go.touch()
    codes = wait_all(procs, 240)

    caught = 0
    for r, (p, code) in enumerate(zip(procs, codes)):
        if code == 0:
            got = dict(np.load(tmp_path / f"attack{r}.npz"))
            assert int(got["total_n"]) == 33, f"rank {r} computed with the forged value\n{describe(procs)}"
            np.testing.assert_allclose(got["total"], expected[r]["total"])
            continue
        last = p.stderr_text().strip().splitlines()[-1]
        assert last.startswith("fedsynth: error: ") and "schema agreement" in last, (r, describe(procs))
        caught += last == ("fedsynth: error: schema agreement: store value for schema agreement from rank "
                           f"{VICTIM} failed authentication; someone else wrote to the rendezvous store")
    assert caught >= 1, describe(procs)
    assert codes[0] != 0 and codes[2] != 0, describe(procs)  # both read the forgery
