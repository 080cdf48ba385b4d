"""`guardian schemas check`: compatible evolutions pass, incompatible ones are refused naming the field."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from guardian.schemas.cli import schemas
from guardian.schemas.codec import RELEASED_DIR, SCHEMA_DIR
from guardian.schemas.compat import Mode, check


def working_copy(tmp_path, change) -> tuple:
    work, released = tmp_path / "avro", tmp_path / "released"
    shutil.copytree(SCHEMA_DIR, work)
    shutil.copytree(RELEASED_DIR, released)
    schema = json.loads((work / "guardian_event.avsc").read_text())
    change(schema)
    (work / "guardian_event.avsc").write_text(json.dumps(schema))
    return work, released


def test_current_schemas_are_compatible_with_the_released_ones():
    result = CliRunner().invoke(schemas, ["check"])
    assert result.exit_code == 0, result.output
    assert "guardian_event.avsc: compatible" in result.output


def test_added_field_with_default_is_accepted(tmp_path):
    work, released = working_copy(
        tmp_path, lambda s: s["fields"].append({"name": "desk", "type": "string", "default": "unknown"})
    )
    assert all(v.compatible for v in check(work, released, Mode.FULL))


def test_added_field_without_default_is_refused_naming_it(tmp_path):
    work, released = working_copy(tmp_path, lambda s: s["fields"].append({"name": "desk", "type": "string"}))
    result = CliRunner().invoke(schemas, ["check", "--schemas-dir", str(work), "--released-dir", str(released)])
    assert result.exit_code == 1
    assert "INCOMPATIBLE" in result.output and "desk" in result.output


def test_changed_type_is_refused_naming_the_field(tmp_path):
    def retype(schema: dict) -> None:
        next(f for f in schema["fields"] if f["name"] == "sequence")["type"] = "string"

    work, released = working_copy(tmp_path, retype)
    (verdict,) = [v for v in check(work, released) if v.schema == "guardian_event.avsc"]
    assert not verdict.compatible
    assert "sequence" in " ".join(verdict.problems) or "/fields/2" in " ".join(verdict.problems)
