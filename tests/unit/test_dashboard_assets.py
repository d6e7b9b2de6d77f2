"""The dashboard's files: shipped in the package (the image installs it without the source tree), its vendored
libraries the versions their README names, and no page pulling anything from another host at run time."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "api" / "static"


def test_every_dashboard_file_is_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["api"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            relative = path.relative_to(ROOT / "api").as_posix()
            assert any(fnmatch.fnmatch(relative, g) and relative.count("/") == g.count("/") for g in globs), relative


def test_vendored_libraries_are_the_versions_recorded() -> None:
    readme = (STATIC / "vendor" / "README.md").read_text()
    uplot = re.search(r"uplot\]\(\S+\) ([\d.]+)", readme)
    js_yaml = re.search(r"js-yaml\]\(\S+\) ([\d.]+)", readme)
    assert uplot and js_yaml
    assert f"(v{uplot.group(1)})" in (STATIC / "vendor" / "uPlot.iife.min.js").read_text()[:200]
    assert "MIT" in (STATIC / "vendor" / "uPlot.LICENSE").read_text()
    assert "MIT" in (STATIC / "vendor" / "js-yaml.LICENSE").read_text()


def test_the_pages_load_nothing_from_another_host() -> None:
    page = (STATIC / "index.html").read_text()
    for reference in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert not re.match(r"^(https?:)?//", reference), reference
    # The only absolute URL in the script is SVG's namespace name, which is never fetched.
    urls = set(re.findall(r"https?://[^\s\"'`)]+", (STATIC / "app.js").read_text()))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
