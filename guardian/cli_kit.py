"""What operator commands share: times and durations as people type them, and a progress line."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import click

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1d`, `1w` (or a combination: `1h30m`) in seconds."""
    total, number = 0.0, ""
    for char in text.strip():
        if char.isdigit() or char == ".":
            number += char
        elif char in UNITS and number:
            total += float(number) * UNITS[char]
            number = ""
        else:
            break
    else:
        if not number and total > 0:
            return total
    raise click.BadParameter(f"{text!r}: a duration is a number and s, m, h, d or w (e.g. 30m, 1h30m)")


def parse_time(text: str, now: float | None = None) -> float:
    """A moment as epoch seconds: ISO 8601 (`2026-11-30T08:00:00Z`; no zone means UTC), `now`, or a
    duration meaning that long ago (`2h`)."""
    now = time.time() if now is None else now
    text = text.strip()
    if text == "now":
        return now
    if text and text[-1] in UNITS and text[0].isdigit() and "-" not in text and ":" not in text:
        return now - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use ISO 8601 (2026-11-30T08:00:00Z), `now`, or a duration ago (30m, 2h)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(epoch_s: float) -> str:
    """A moment as operators read it: UTC, to the millisecond."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProgressLine:
    """done/total, rate and ETA of a long phase on one line of stderr; a line every 2 s when stderr is
    not a terminal (logs, CI)."""

    def __init__(self, quiet: bool = False, unit: str = "events") -> None:
        self.quiet = quiet
        self.unit = unit
        self.phase = ""
        self.began = time.monotonic()
        self.base = 0  # done at the phase's first report
        self.shown_at = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase != self.phase:  # the first report of a phase: the rate counts from here
            self.phase, self.began, self.base = phase, now, done
            if done < total:
                return
        if self.quiet or (now - self.shown_at < (0.2 if sys.stderr.isatty() else 2.0) and done < total):
            return
        self.shown_at = now
        rate = (done - self.base) / max(now - self.began, 1e-3)
        eta = (total - done) / rate if rate > 0 else 0.0
        line = f"{phase}: {done:,}/{total:,} {self.unit}  {rate:,.0f}/s  ETA {eta:,.0f} s"
        if sys.stderr.isatty():
            click.echo(f"\r{line}\033[K", nl=done >= total, err=True)
        else:
            click.echo(line, err=True)
