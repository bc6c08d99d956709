"""The option lists of the pipeline and the Galaxy tools are the table's, never stale.

``python -m fedsynth.workflows.surfaces`` regenerates them from
:mod:`fedsynth.workflows.options`; this fails while any is out of date, and
checks that what was generated says what the table says.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

from fedsynth.generators import registry
from fedsynth.workflows import options, surfaces
from testkit import REPO


def test_generated_surfaces_are_current():
    stale = surfaces.regenerate(REPO, check=True)
    assert stale == [], f"run `.venv/bin/python -m fedsynth.workflows.surfaces`: stale {stale}"


def test_check_catches_a_stale_file(tmp_path):
    for rel in surfaces.TARGETS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    conf = tmp_path / "conf" / "modules.config"
    conf.write_text(conf.read_text().replace("--marginals-bins", "--marginal-bins"))
    assert surfaces.regenerate(tmp_path, check=True) == ["conf/modules.config"]
    assert surfaces.regenerate(tmp_path) == ["conf/modules.config"]
    assert surfaces.regenerate(tmp_path, check=True) == []


def test_every_option_and_generator_reaches_nextflow_and_galaxy():
    table = options.train_options()
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    group = schema["$defs"][surfaces.GROUP]["properties"]
    assert set(group) == {o.name for o in table}
    assert group["generator"]["enum"] == registry.names()
    params = (REPO / "nextflow.config").read_text()
    ext_args = (REPO / "conf" / "modules.config").read_text()
    macros = ET.parse(REPO / "galaxy_tools" / "fedsynth" / "macros.xml").getroot()
    form = next(x for x in macros.iter("xml") if x.get("name") == "training_options")
    galaxy = {p.get("name") or p.get("argument").lstrip("-").replace("-", "_"): p for p in form.iter("param")}
    args = next(t for t in macros.iter("token") if t.get("name") == "@TRAIN_ARGS@").text
    gen = form.find(".//conditional[@name='gen']")
    assert gen.find("param").get("argument") == "--generator"
    assert [o.get("value") for o in gen.find("param").iter("option")] == registry.names()
    assert {w.get("value") for w in gen.iter("when")} == set(registry.names())
    for o in table:
        assert f"    {o.name} " in params, o.name
        assert o.flag in ext_args, o.name
        if o.name != "no_dp" and o.info.group != "site":  # no_dp: the privacy conditional's "off" branch;
            # site-local settings (the lifetime ledger) are the Galaxy admin's (FEDSYNTH_LEDGER_DIR), not a form's
            assert o.flag in args, o.name
            assert galaxy[o.name].get("argument") == o.flag
        if o.owner is not None:  # a generator's own options sit in its branch of the form
            assert gen.find(f"when[@value='{o.owner}']/param[@argument='{o.flag}']") is not None, o.name
