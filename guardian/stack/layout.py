"""Where the local stack keeps its files: everything under one ignored folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guardian.settings import REPO_ROOT, Settings


@dataclass(frozen=True)
class StackLayout:
    root: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> StackLayout:
        return cls(settings.stack_dir.resolve())

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def data(self, service: str) -> Path:
        return self.root / service

    @property
    def deploy_local(self) -> Path:
        return REPO_ROOT / "deploy" / "local"
