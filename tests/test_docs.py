"""The documentation stays true to the code, checked without building the site (``mkdocs build --strict`` does that).

* every ``spectral-prior COMMAND --flag`` written in README.md or docs/ is an option of that command;
* the options named in a command's own section (docs/training.md for ``train``, a ``### `spectral-prior NAME```
  section of docs/usage.md) are options of it;
* every object the API reference renders (``::: name``) imports, and every public module is rendered;
* the navigation and the links between pages point to pages that exist; the stages and ``push_to_hub``'s signature
  in the docs are the code's.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import spectral_prior
from spectral_prior._moved import MOVED
from spectral_prior.saving import hub
from spectral_prior.cli import build_parser
from spectral_prior.training import STAGES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
UNDOCUMENTED_MODULES = {"spectral_prior.io", "spectral_prior.devices"}  # internal helpers
OPTIONAL_DEPENDENCIES = {"spectral_prior.integrations.timm": "timm"}  # imported only where the extra is installed

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_COMMAND = re.compile(r"(?:spectral-prior|spectral_prior\.cli)((?:\s+--?[\w-]+)*)(?:\s+([a-z]+))?(.*)")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_HEADING = re.compile(r"^(#+)\s+(.*)$")


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    """``{"": the main parser, "train": its train subparser, ...}``."""
    main = build_parser()
    (commands,) = [a for a in main._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": main, **commands.choices}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _code_lines(text: str) -> list[str]:
    """Lines of the fenced code blocks (continuation lines joined) and the inline code spans of the prose."""
    blocks = [block.split("\n", 1)[1].rsplit("```", 1)[0] for block in _FENCE.findall(text)]
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return lines + re.findall(r"`([^`\n]+)`", _FENCE.sub("", text))


def _commands(text: str) -> list[tuple[str, list[str], str]]:
    """``(subcommand or "", flags, the line)`` for every ``spectral-prior ...`` command written in ``text``."""
    found = []
    for line in _code_lines(text):
        line = line.split(" #", 1)[0]
        for match in _COMMAND.finditer(line):
            main_flags, command, rest = match.groups()
            found.append(("", _FLAG.findall(main_flags), line))
            if command:
                found.append((command, _FLAG.findall(rest), line))
    return found


def test_documented_commands_and_their_flags_exist(parsers) -> None:
    checked = 0
    for page in PAGES:
        for command, flags, line in _commands(_text(page)):
            assert command in parsers, f"{page.name}: no command 'spectral-prior {command}' ({line.strip()!r})"
            unknown = sorted(set(flags) - _options(parsers[command]))
            assert not unknown, f"{page.name}: spectral-prior {command} has no option {unknown} ({line.strip()!r})"
            checked += 1
    assert checked > 10  # the docs do show commands


def _sections(text: str) -> list[tuple[str, str]]:
    """``(command, prose)`` for each section whose heading names ``spectral-prior COMMAND``, up to the next
    heading of the same or a higher level."""
    sections, current, level = [], None, 0
    for line in _FENCE.sub("", text).splitlines():
        heading = _HEADING.match(line)
        if heading:
            named = re.search(r"spectral-prior (\w+)", heading.group(2))
            if named:
                current, level = [named.group(1), ""], len(heading.group(1))
                sections.append(current)
            elif current is not None and len(heading.group(1)) <= level:
                current = None
        elif current is not None:
            current[1] += line + "\n"
    return [(command, prose) for command, prose in sections]


def test_flags_in_a_commands_own_section_exist(parsers) -> None:
    scoped = [("train", _FENCE.sub("", _text(DOCS / "training.md")))] + _sections(_text(DOCS / "usage.md"))
    assert {command for command, _ in scoped} >= {"train", "eval", "reconstruct"}
    for command, prose in scoped:
        assert command in parsers, f"docs describe 'spectral-prior {command}', which does not exist"
        spans = re.findall(r"`([^`\n]+)`", prose)
        flags = {flag for span in spans if "spectral-prior" not in span for flag in _FLAG.findall(span)}
        unknown = sorted(flags - _options(parsers[command]))
        assert not unknown, f"the docs of 'spectral-prior {command}' name options it does not have: {unknown}"


def test_every_train_option_is_documented(parsers) -> None:
    documented = set(_FLAG.findall(_text(DOCS / "training.md")))
    missing = sorted(_options(parsers["train"]) - documented - {"-h", "--help"})
    assert not missing, f"docs/training.md does not mention {missing}"


def _api_names() -> list[str]:
    return re.findall(r"^::: ([\w.]+)", _text(DOCS / "api.md"), re.MULTILINE)


def _import_object(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        module, _, attribute = name.rpartition(".")
        return getattr(importlib.import_module(module), attribute)


def test_api_reference_objects_import() -> None:
    names = _api_names()
    assert "spectral_prior.sdp.inject" in names
    for name in names:
        needs = OPTIONAL_DEPENDENCIES.get(name)
        if needs is not None and importlib.util.find_spec(needs) is None:
            assert importlib.util.find_spec(name) is not None, f"docs/api.md renders {name}, which does not exist"
            continue
        _import_object(name)


def test_every_public_module_is_in_the_api_reference() -> None:
    documented = set(_api_names())
    modules = {
        info.name
        for info in pkgutil.walk_packages(spectral_prior.__path__, "spectral_prior.")
        if not any(part.startswith("_") for part in info.name.split("."))
        and info.name.count(".") == 1  # top-level modules; adapters' submodules are documented through the package
    }
    missing = sorted(modules - documented - UNDOCUMENTED_MODULES - set(MOVED))
    assert not missing, f"docs/api.md does not render {missing}"


def test_navigation_and_links_point_to_pages() -> None:
    nav = re.findall(r"^\s*- [^:\n]+:\s*(\S+\.md)\s*$", _text(ROOT / "mkdocs.yml"), re.MULTILINE)
    pages = {page.name for page in DOCS.glob("*.md")}
    assert set(nav) == pages, "mkdocs.yml's nav and the pages in docs/ differ"
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([\w-]+\.md)(?:#[\w.-]*)?\)", _FENCE.sub("", _text(page))):
            assert target in pages, f"{page.name} links to {target}, which does not exist"


def test_stages_and_push_to_hub_signature_match_the_code() -> None:
    training = _text(DOCS / "training.md")
    documented = set(re.findall(r"^\| `(\w+)` \|", training, re.MULTILINE))
    assert documented == set(STAGES) | {"all"}

    written = re.search(r"`push_to_hub\((.*?)\)`", _text(DOCS / "hub.md"), re.DOTALL).group(1)
    names = [re.split(r"[=\s]", part.strip())[0] for part in written.split(",") if part.strip() not in ("*", "")]
    names = [name for name in names if name.isidentifier()]
    assert names == list(inspect.signature(hub.push_to_hub).parameters)
