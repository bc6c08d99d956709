"""A site's privacy ledger across runs: every release ever made on its patients.

Hospitals rerun: another epsilon, another generator, a run restarted after
it failed half-way. Every run spends privacy on the same patients, so each
site keeps one persistent ledger per directory (``--ledger-dir``) and
composes every release of every run in the one accountant.

* **Patients, not files.** A run is keyed by the salted hashes
  ``HMAC-SHA256(salt, sample_id)`` of the records it trained on (the salt
  is 32 random bytes made once per ledger, mode 0600), so re-splitting or
  re-normalising the same patients does not reset the spend, and the ledger
  holds no sample ID.
* **Spend of a data set**: for each patient, the composition
  (:func:`~fedsynth.privacy.accounting.compose`) of the releases of every
  run that used it; the data set's spend is the largest
  over this run's patients, at this run's ``delta``.
* **Written before it happens.** A run's line (its patients) is appended
  and fsynced before its first release, and each release's line (name, noise
  multiplier, sample rate) before the secure sum that reveals it: a run that
  aborts after some releases has recorded them.
* **Refusal.** With ``--lifetime-epsilon L``, a run whose planned releases
  would take the spend above ``L`` is refused before any release
  (:class:`~fedsynth.errors.BudgetError`). The plan is checked again once
  the noisy record count is known (:meth:`LifetimeLedger.check`: DP-SGD's
  rate and steps follow it); a run that only then goes over is refused
  with just the count released, and recorded. A ``--no-dp`` run is recorded as
  unbounded spend: afterwards every capped run on those patients is refused.

The file is JSON lines (``ledger.jsonl``), append-only.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import math
import os
import time
import uuid
from pathlib import Path

from ..errors import BudgetError, InputError
from .accounting import Mechanism, compose

LEDGER, SALT = "ledger.jsonl", "salt"


def default_dir() -> Path:
    """``$FEDSYNTH_LEDGER_DIR``, else ``~/.local/share/fedsynth/ledger`` (never a work directory)."""
    env = os.environ.get("FEDSYNTH_LEDGER_DIR")
    return Path(env) if env else Path.home() / ".local" / "share" / "fedsynth" / "ledger"


def _salt(path: Path) -> bytes:
    """The ledger's salt at ``path``, created if missing.

    Sites of one ``simulate`` share a ledger directory and start together, so
    the salt is written whole to a private temporary file and published with
    ``link``, which fails if another process got there first: every process
    then reads the same complete 32 bytes, never a half-written or second salt.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another site published it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    salt = path.read_bytes()
    if len(salt) != 32:
        raise OSError(f"{path.name} holds {len(salt)} bytes, not 32")
    return salt


class LifetimeLedger:
    """The persistent ledger in ``directory`` for the patients ``sample_ids`` (module doc)."""

    def __init__(self, directory, sample_ids):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            salt = _salt(self.dir / SALT)
        except OSError as e:
            raise InputError(f"--ledger-dir {self.dir}: cannot use it ({e.strerror or e})") from None
        self.patients = sorted({hmac.new(salt, str(s).encode(), hashlib.sha256).hexdigest()[:32] for s in sample_ids})
        self.run = uuid.uuid4().hex
        self._history = self._read()

    # ------------------------------------------------------------ reading
    def _read(self) -> list[dict]:
        path = self.dir / LEDGER
        if not path.exists():
            return []
        rows, lines = [], path.read_text().splitlines()
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines):  # a torn last line: the write a crash interrupted
                    break
                raise InputError(f"{path}: line {i} is not JSON; the ledger is damaged") from None
        return rows

    def _mechanisms_by_patient(self, rows: list[dict]) -> dict[str, list[Mechanism]]:
        runs = {r["run"]: set(r["patients"]) for r in rows if r["kind"] == "run"}
        out: dict[str, list[Mechanism]] = {p: [] for p in self.patients}
        mine = set(self.patients)
        for r in rows:
            if r["kind"] != "release":
                continue
            m = Mechanism(r["name"], r["noise_multiplier"], r["sample_rate"], 1)
            for p in runs.get(r["run"], set()) & mine:
                out[p].append(m)
        return out

    def spent(self, delta: float, planned: list[Mechanism] = ()) -> float:
        """Largest spend over this run's patients of every earlier run recorded (plus ``planned``).

        This run's own journal lines are left out: its releases are in ``planned``.
        """
        worst = 0.0
        groups: dict[tuple, list[Mechanism]] = {}
        earlier = [r for r in self._history if r.get("run") != self.run]
        for mechs in self._mechanisms_by_patient(earlier).values():
            groups.setdefault(tuple((m.name, m.noise_multiplier, m.sample_rate) for m in mechs), mechs)
        for mechs in groups.values():
            all_ = list(mechs) + list(planned)
            if any(m.noise_multiplier <= 0 for m in all_):
                return math.inf
            worst = max(worst, compose(_merged(all_), delta))
        return worst

    # ------------------------------------------------------------ writing
    def _append(self, row: dict) -> None:
        """One line, one locked ``write`` in append mode, fsynced: sites sharing a folder never interleave."""
        data = (json.dumps(row, sort_keys=True) + "\n").encode()
        fd = os.open(self.dir / LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        self._history.append(row)

    def begin(self, planned: list[Mechanism], *, delta: float, limit: float | None, generator: str,
              private: bool) -> dict:
        """Refuse a run that would exceed ``limit``; else record it (before any release).

        Returns the spend before and (if all planned releases are made) after
        the run, and the limit, for the run record (``None`` and
        ``unbounded: true`` where a run without DP made it infinite).
        """
        summary = self.check(planned, delta=delta, limit=limit, private=private, when="before any release")
        self._append({"kind": "run", "run": self.run, "time": time.time(), "generator": generator,
                      "private": private, "delta": delta, "patients": self.patients})
        return summary

    def check(self, planned: list[Mechanism], *, delta: float, limit: float | None, private: bool,
              when: str = "after the record count") -> dict:
        """Refuse if earlier runs plus ``planned`` (this run's whole plan) exceed ``limit``; else the summary.

        :meth:`begin` calls it before the first release; the protocol again
        once the final plan is known.
        """
        before = self.spent(delta)
        after = self.spent(delta, planned) if private else math.inf
        if limit is not None and after > limit * (1 + 1e-9):
            raise BudgetError(
                f"--lifetime-epsilon {limit:g}: these patients have spent epsilon {before:.3g} in earlier runs "
                f"(ledger {self.dir}); this run would take them to {after:.3g}. Refused {when}")
        unbounded = not (math.isfinite(before) and math.isfinite(after))
        return {"ledger": str(self.dir), "unbounded": unbounded,  # a --no-dp run: no finite epsilon (JSON null)
                "spent_before": before if math.isfinite(before) else None,
                "spent_after": after if math.isfinite(after) else None, "limit": limit,
                "remaining": None if limit is None or unbounded else max(limit - after, 0.0)}

    def record(self, name: str, noise_multiplier: float, sample_rate: float) -> None:
        """Journal one release, fsynced, before it is made."""
        self._append({"kind": "release", "run": self.run, "name": name, "noise_multiplier": noise_multiplier,
                      "sample_rate": sample_rate})


def _merged(mechs: list[Mechanism]) -> list[Mechanism]:
    """Identical mechanisms as one entry with their repetitions (the accountant's history stays short)."""
    out: dict[tuple, Mechanism] = {}
    for m in mechs:
        key = (m.noise_multiplier, m.sample_rate)
        if key in out:
            out[key].steps += m.steps
        else:
            out[key] = Mechanism(m.name, m.noise_multiplier, m.sample_rate, m.steps)
    return list(out.values())
