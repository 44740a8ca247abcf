"""A griffe extension for the API reference: Sphinx roles in docstrings become links.

The package's docstrings cross-reference with Sphinx roles (``:func:`inject_prior```, ``:class:`~x.Cube```),
which Markdown would print as they are. This extension rewrites each role, before mkdocstrings renders the
docstring, into an *optional* autorefs link: a link when the target is documented, plain code otherwise (so an
external or undocumented target never fails a ``--strict`` build). Loaded by ``mkdocs.yml``; not part of the package.
"""
from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|data|attr|mod|obj|exc|const):`(~?)([\w.]+)(?:\(\))?`")


def _canonical(obj: griffe.Object, name: str) -> str:
    """The full path ``name`` refers to from ``obj``'s scope (the name itself when it cannot be resolved)."""
    head, _, rest = name.partition(".")
    try:
        path = obj.resolve(head)
    except griffe.NameResolutionError:  # unknown or external name: leave it as written
        return name
    path = f"{path}.{rest}" if rest else path
    try:
        return obj.modules_collection[path].canonical_path
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):  # outside the package
        return path


def _rewrite(obj: griffe.Object) -> None:
    docstring = obj.docstring
    if docstring is None or ":`" not in docstring.value:
        return

    def link(match: re.Match) -> str:
        short, name = match.group(1), match.group(2)
        shown = name.rsplit(".", 1)[-1] if short else name
        return f'<autoref identifier="{_canonical(obj, name)}" optional><code>{shown}</code></autoref>'

    docstring.value = _ROLE.sub(link, docstring.value)


def _walk(obj: griffe.Object) -> None:
    _rewrite(obj)
    for member in obj.members.values():
        if not member.is_alias:
            _walk(member)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles once the whole package is loaded (names then resolve across modules)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # griffe >= 2
        _walk(pkg)

    def on_package_loaded(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # griffe 1.x
        _walk(pkg)
