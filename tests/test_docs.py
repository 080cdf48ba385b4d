"""The documentation site builds with no broken link or anchor (mkdocs, strict; `make docs`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from guardian.settings import REPO_ROOT


def test_the_docs_build_strictly(tmp_path: Path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    result = subprocess.run(
        [str(mkdocs), "build", "-f", str(REPO_ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "storage" / "index.html").exists()
