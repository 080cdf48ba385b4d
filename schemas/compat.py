"""Schema compatibility against the last released version, by the Avro reference implementation's checker.

BACKWARD: the new schema reads data written with the released one (consumers upgrade first).
FORWARD:  the released schema reads data written with the new one (producers upgrade first).
FULL:     both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import avro.compatibility as avro_compat
import avro.schema

from guardian.schemas.codec import RELEASED_DIR, SCHEMA_DIR


class Mode(StrEnum):
    BACKWARD = "BACKWARD"
    FORWARD = "FORWARD"
    FULL = "FULL"


@dataclass(frozen=True)
class Verdict:
    schema: str
    released: str | None
    compatible: bool
    problems: tuple[str, ...]

    def describe(self) -> str:
        if self.released is None:
            return f"{self.schema}: no released version yet (nothing to compare)"
        if self.compatible:
            return f"{self.schema}: compatible with {self.released}"
        return f"{self.schema}: INCOMPATIBLE with {self.released}: " + "; ".join(self.problems)


def latest_released(stem: str, released_dir: Path) -> Path | None:
    versions = sorted(released_dir.glob(f"{stem}.v*.avsc"), key=lambda p: int(p.stem.rsplit(".v", 1)[1]))
    return versions[-1] if versions else None


def _problems(reader: avro.schema.Schema, writer: avro.schema.Schema, direction: str) -> list[str]:
    result = avro_compat.ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is avro_compat.SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted(i.value for i in result.incompatibilities))
    fields = ", ".join(sorted(result.messages))
    locations = ", ".join(sorted(result.locations))
    return [f"{direction}: {kinds} (field {fields} at {locations})"]


def check(
    schema_dir: Path = SCHEMA_DIR, released_dir: Path = RELEASED_DIR, mode: Mode = Mode.BACKWARD
) -> list[Verdict]:
    verdicts = []
    for path in sorted(schema_dir.glob("*.avsc")):
        released_path = latest_released(path.stem, released_dir)
        if released_path is None:
            verdicts.append(Verdict(path.name, None, True, ()))
            continue
        new = avro.schema.parse(path.read_text())
        old = avro.schema.parse(released_path.read_text())
        problems: list[str] = []
        if mode in (Mode.BACKWARD, Mode.FULL):
            problems += _problems(new, old, "new schema cannot read released data")
        if mode in (Mode.FORWARD, Mode.FULL):
            problems += _problems(old, new, "released schema cannot read new data")
        verdicts.append(Verdict(path.name, released_path.name, not problems, tuple(problems)))
    return verdicts
