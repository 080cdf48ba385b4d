"""The wheel's package list (pyproject.toml names each one: the folders are mapped into guardian.*)
holds every package of the checkout, so nothing imports in a checkout and fails once installed."""

from __future__ import annotations

import tomllib

from guardian.settings import REPO_ROOT


def test_every_package_folder_is_in_the_wheel():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = {folder: name for name, folder in setuptools["package-dir"].items()}
    found = set()
    for folder, package in [*folders.items(), ("guardian", "guardian")]:
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO_ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found - listed == set()
