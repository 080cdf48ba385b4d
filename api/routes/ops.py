"""`/v1/ops/*`: operators start a replay or a verification (with or without repair) from the API.

Each runs as its own `guardian replay` / `guardian verify` process, exactly as from a shell, at low CPU
priority; the audit names the token (GUARDIAN_AUDIT_ACTOR) and the command's own audit row records
its outcome. The job's state is kept in this API process for an hour (the audit row stays forever).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from guardian.api.auth import Operator
from guardian.sinks.audit import operator as process_owner

router = APIRouter(tags=["operations"])
KEEP_S = 3600
OUTPUT_MAX = 64_000


class ReplayRequest(BaseModel):
    start: str = Field(alias="from", description="ISO 8601 or a duration ago (2h).")
    to: str | None = None
    symbols: list[str] = []
    dry_run: bool = Field(True, description="Only the plan (offsets, event count); false to re-drive.")
    max_rate: float = Field(5000, ge=0)


class VerifyRequest(BaseModel):
    since: str = "1h"
    repair: bool = False


class Job(BaseModel):
    id: str
    kind: Literal["replay", "verify"]
    command: list[str]
    started_by: str
    started_at: datetime
    state: Literal["running", "succeeded", "failed"]
    exit_code: int | None = None
    output: str = Field("", description="The command's output so far (its end, when long).")


class Jobs:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task] = set()  # held: the loop keeps only weak references to tasks

    def start(self, kind: str, args: list[str], actor: str) -> Job:
        for job_id in [j.id for j in self.jobs.values() if time.time() - j.started_at.timestamp() > KEEP_S]:
            self.jobs.pop(job_id)
        command = [sys.executable, "-m", "guardian.cli", *args]
        job = Job(id=uuid.uuid4().hex[:12], kind=kind, command=["guardian", *args], started_by=actor,
                  started_at=datetime.now().astimezone(), state="running")  # fmt: skip
        self.jobs[job.id] = job
        env = {**os.environ, "GUARDIAN_AUDIT_ACTOR": f"{actor} via {process_owner()}"}
        task = asyncio.get_running_loop().create_task(self._run(job, command, env), name=f"ops-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: Job, command: list[str], env: dict[str, str]) -> None:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=lambda: os.nice(10),
        )  # fmt: skip
        assert process.stdout is not None
        async for line in process.stdout:
            job.output = (job.output + line.decode("utf-8", "replace"))[-OUTPUT_MAX:]
        job.exit_code = await process.wait()
        job.state = "succeeded" if job.exit_code == 0 else "failed"


@router.post("/v1/ops/replay", response_model=Job, status_code=202)
async def replay(request: Request, body: ReplayRequest, who: Operator) -> Job:
    """Start `guardian replay` (a dry run unless `dry_run` is false)."""
    args = ["replay", "--from", body.start, "--quiet", "--max-rate", str(body.max_rate)]
    args += ["--to", body.to] if body.to else []
    args += [a for s in body.symbols for a in ("--symbol", s)]
    args += ["--dry-run"] if body.dry_run else []
    return request.app.state.jobs.start("replay", args, who.actor)


@router.post("/v1/ops/verify", response_model=Job, status_code=202)
async def verify(request: Request, body: VerifyRequest, who: Operator) -> Job:
    """Start `guardian verify --json` (with `--repair` when asked)."""
    args = ["verify", "--json", "--since", body.since, *(["--repair"] if body.repair else [])]
    return request.app.state.jobs.start("verify", args, who.actor)


@router.get("/v1/ops/{job_id}", response_model=Job)
async def job(request: Request, job_id: str, _: Operator) -> Job:
    found = request.app.state.jobs.jobs.get(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id!r} in this API process (kept {KEEP_S // 60} min)")
    return found
