"""Static check of the Galaxy tools (no Galaxy needed): every ``argument=`` of
a tool's ``<param>`` (its own or from macros.xml) is an option of the
``fedsynth`` command the tool runs, and the tool's command passes it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "galaxy_tools" / "fedsynth"
MACROS = ET.parse(TOOLS / "macros.xml").getroot()


def expanded(tool: ET.Element) -> tuple[list[str], str]:
    """The tool's param arguments and its command, with macros.xml's xml macros and tokens expanded."""
    xml = {m.get("name"): m for m in MACROS.iter("xml")}
    tokens = {t.get("name"): t.text or "" for t in MACROS.iter("token")}
    arguments = []

    def walk(node, subst):
        for child in node:
            if child.tag == "expand":
                macro = xml[child.get("macro")]
                names = [t.strip() for t in (macro.get("tokens") or "").split(",") if t.strip()]
                walk(macro, {f"@{t.upper()}@": child.get(t, "") for t in names})
            else:
                if child.tag == "param" and child.get("argument"):
                    arg = child.get("argument")
                    for token, value in subst.items():
                        arg = arg.replace(token, value)
                    arguments.append(arg)
                walk(child, subst)

    walk(tool.find("inputs"), {})
    command = tool.find("command").text
    for name, text in tokens.items():
        command = command.replace(name, text)
    return arguments, command


@pytest.mark.parametrize("xml", sorted(p.name for p in TOOLS.glob("fedsynth_*.xml")))
def test_param_arguments_are_options_the_command_passes(xml):
    from fedsynth.cli import main

    tool = ET.parse(TOOLS / xml).getroot()
    arguments, command = expanded(tool)
    assert arguments, f"{xml}: no param has argument="
    subcommand = re.search(r"^fedsynth ([a-z-]+)$", command, re.M).group(1)
    options = {o for p in main.commands[subcommand].params for o in (*p.opts, *p.secondary_opts)}
    assert set(arguments) <= options, f"{xml}: not options of `fedsynth {subcommand}`: {set(arguments) - options}"
    unused = [a for a in arguments if not re.search(rf"^\s*{re.escape(a)}(\s|$)", command, re.M)]
    assert not unused, f"{xml}: the command never passes {unused}"
