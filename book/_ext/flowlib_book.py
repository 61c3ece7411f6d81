"""The book's own Sphinx extension.

1. Directive ``flowlib-modules``: the API reference of every public submodule of a package, found at build
time, so a module added to ``flowlib`` appears in the book without editing its pages.

    ```{eval-rst}
    .. flowlib-modules:: flowlib.models
    ```

expands to one section per module (``flowlib.models.flow``, ``flowlib.models.glow``, ...), each an ``automodule``
with its members (autodoc; docstrings read by napoleon). Like ``automodule`` itself, it must sit in an
``eval-rst`` block: autodoc writes reStructuredText, which MyST would otherwise read as Markdown.

2. Each script once per page: Jupyter Book 1.x registers sphinx-thebe's inline configuration script twice, and the
second ``const THEBE_JS_URL`` declaration is a JavaScript error on every page (seen in the browser test).
"""

from __future__ import annotations

import importlib
import pkgutil

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def public_submodules(package_name: str) -> list[str]:
    """The importable, non-private submodules of ``package_name``, sorted by name."""
    package = importlib.import_module(package_name)
    return sorted(
        f"{package_name}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    )


class FlowlibModules(SphinxDirective):
    """``.. flowlib-modules:: PACKAGE`` (add ``:no-members:`` for the modules' own docstrings only, where the
    package page already documents the members it re-exports)."""

    required_arguments = 1
    option_spec = {"no-members": directives.flag}

    def run(self) -> list[nodes.Node]:
        members = [] if "no-members" in self.options else ["   :members:"]
        lines: list[str] = []
        for module in public_submodules(self.arguments[0]):
            lines += [f"``{module}``", "~" * (len(module) + 4), "", f".. automodule:: {module}", *members, ""]
        content = StringList(lines, source=self.get_source_info()[0])
        container = nodes.container()
        nested_parse_with_titles(self.state, content, container)
        return container.children


def drop_duplicate_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Keep the first of identical ``<script>`` entries (same file or inline body, same attributes; the two copies
    of the thebe configuration differ only in their empty file name, None or "")."""
    seen: set[tuple] = set()
    unique = []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})
        filename = str(getattr(script, "filename", script) or "")
        key = (filename, tuple(sorted((name, str(value)) for name, value in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict[str, bool]:
    app.add_directive("flowlib-modules", FlowlibModules)
    app.connect("html-page-context", drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
