"""Griffe extension: static API data for the packages that setuptools maps under ``rtrrl``.

``pyproject.toml`` maps the top-level folders ``backends/``, ``envs/`` and ``conformance/`` to
``rtrrl.backends``, ``rtrrl.envs`` and ``rtrrl.conformance`` (``[tool.setuptools.package-dir]``).
Griffe finds ``rtrrl`` in ``rtrrl/`` and looks for its submodules there only, so it cannot see
them. When a package that has mapped children finishes loading, this extension parses each
mapped folder (statically: nothing is imported, so no framework is needed) and attaches it
under its dotted name. The mapping is read from ``pyproject.toml``, so it stays in sync.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[2]

# Sphinx roles in the docstrings (":class:`~rtrrl_spec.Config`") become code spans ("`Config`"):
# Markdown would show the role verbatim; a cross-reference could fail the strict build.
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _role_to_code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"``{target.rsplit('.', 1)[-1] if tilde else target}``"


def _tidy(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        obj.docstring.value = _ROLE.sub(_role_to_code, obj.docstring.value).replace("::\n", ":\n")
    for member in obj.members.values():
        if not member.is_alias:
            _tidy(member)


def _mapped_children() -> dict[str, Path]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir = pyproject["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in package_dir.items() if "." in name}


class PackageDir(griffe.Extension):
    """Attach ``[tool.setuptools.package-dir]`` sub-packages to their loaded parent."""

    def __init__(self) -> None:
        super().__init__()
        self.mapped = _mapped_children()

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for dotted, folder in sorted(self.mapped.items()):
            parent_path, _, name = dotted.rpartition(".")
            if parent_path == pkg.path and name not in pkg.members:
                self._load_package(folder, name, pkg, loader)
        _tidy(pkg)

    def _load_package(
        self, folder: Path, name: str, parent: griffe.Module, loader: griffe.GriffeLoader
    ) -> None:
        init = folder / "__init__.py"
        if init.exists():
            module = self._visit(init, name, parent, loader)
        else:  # a namespace folder
            module = griffe.Module(name, filepath=[folder], parent=parent)
            parent.set_member(name, module)
        for child in sorted(folder.iterdir()):
            if child.is_dir() and any(child.glob("*.py")):
                self._load_package(child, child.name, module, loader)
            elif child.suffix == ".py" and child.name != "__init__.py":
                self._visit(child, child.stem, module, loader)
        loader.expand_exports(module)
        loader.expand_wildcards(module, external=False)

    @staticmethod
    def _visit(
        path: Path, name: str, parent: griffe.Module, loader: griffe.GriffeLoader
    ) -> griffe.Module:
        code = path.read_text(encoding="utf-8-sig")
        loader.lines_collection[path] = code.splitlines(keepends=False)
        module = griffe.visit(
            name,
            path,
            code,
            extensions=loader.extensions,
            parent=parent,
            docstring_parser=loader.docstring_parser,
            docstring_options=loader.docstring_options,
            lines_collection=loader.lines_collection,
            modules_collection=loader.modules_collection,
        )
        parent.set_member(name, module)
        return module
