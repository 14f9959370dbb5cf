"""MkDocs hooks: the home page is the README; the kept learning curves are site files.

``docs/index.md`` holds only a marker; at build time it is replaced by ``README.md`` with its
links rewritten for the site: ``docs/x.md`` becomes ``x.md`` (the same page, seen from
``docs/``), and a link to any other repository file (``LICENSE``) becomes the path in code, since
the site has no page for it. The README stays the single source, and its links stay right on
GitHub.

The learning curves the benchmark scripts keep under ``benchmarks/results/curves/`` are served
as ``curves/...``: the result tables that ``docs/results.md`` includes link them as
``curves/x.png``, a path that is right both beside the tables on GitHub and on the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MARKER = "<!-- include: README.md -->"
ROOT = Path(__file__).resolve().parents[2]
CURVES = ROOT / "benchmarks" / "results" / "curves"
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


def _relink(match: re.Match[str]) -> str:
    text, target = match.groups()
    if re.match(r"[a-z][a-z0-9+.-]*:|#", target):  # external or an anchor: unchanged
        return match.group(0)
    if target.startswith("docs/"):
        return f"[{text}]({target.removeprefix('docs/')})"
    return f"`{target}`" if text.strip("`") == target else f"{text} (`{target}`)"


def readme_for_site() -> str:
    return _LINK.sub(_relink, (ROOT / "README.md").read_text(encoding="utf-8"))


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri == "index.md" and MARKER in markdown:
        return markdown.replace(MARKER, readme_for_site())
    return markdown


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    from mkdocs.structure.files import File

    for png in sorted(CURVES.rglob("*.png")):
        uri = "curves/" + png.relative_to(CURVES).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files
