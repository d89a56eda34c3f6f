"""Progress of long operations: admin jobs (streamed) and sync sweeps (polled).

On a terminal a progress bar runs on stderr (stdout stays clean for data);
off a terminal each change of state is one line on stderr. The exit code says
how it ended: 0 succeeded, 14 failed or cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ppos.controlplane.cli import exitcodes
from ppos.controlplane.cli.app import Context
from ppos.controlplane.cli.output import enum_name
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as sync_pb

JOB_ENDED = {
    res.ADMIN_JOB_STATE_SUCCEEDED,
    res.ADMIN_JOB_STATE_FAILED,
    res.ADMIN_JOB_STATE_CANCELLED,
}
SWEEP_ENDED = {
    sync_pb.SWEEP_STATE_SUCCEEDED,
    sync_pb.SWEEP_STATE_FAILED,
    sync_pb.SWEEP_STATE_CANCELLED,
}


def job_state(job: res.AdminJob) -> str:
    return enum_name(res.AdminJobState, job.state, "ADMIN_JOB_STATE_")


def job_kind(job: res.AdminJob) -> str:
    return enum_name(res.AdminJobKind, job.kind, "ADMIN_JOB_KIND_").lower().replace("_", "-")


def sweep_state(sweep: sync_pb.Sweep) -> str:
    return enum_name(sync_pb.SweepState, sweep.state, "SWEEP_STATE_")


def _bar(ctx: Context) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=ctx.out.err,
        transient=False,
    )


def follow_admin_job(ctx: Context, updates: Iterable[res.AdminJob], *, json_lines: bool) -> int:
    """Show updates of one admin job until it ends; the last one decides the exit code."""
    last: res.AdminJob | None = None
    shown_state = ""
    bar = _bar(ctx) if ctx.out.err.is_terminal and not json_lines else None
    task = None
    if bar is not None:
        bar.start()
    try:
        for job in updates:
            last = job
            if json_lines:
                ctx.out.json_line(job)
            elif bar is not None:
                description = f"{job_kind(job)} {job_state(job)} {job.progress.message}".strip()
                total = job.progress.total or None
                if task is None:
                    task = bar.add_task(description, total=total, completed=job.progress.done)
                bar.update(task, description=description, total=total, completed=job.progress.done)
            elif job_state(job) != shown_state:
                shown_state = job_state(job)
                done = f"{job.progress.done}/{job.progress.total or '?'}"
                ctx.out.note(
                    f"admin-job/{job.admin_job_id} {shown_state} {done} {job.progress.message}"
                )
            if job.state in JOB_ENDED:
                break
    finally:
        if bar is not None:
            bar.stop()
    if last is None:
        return exitcodes.SERVER_ERROR
    return finish_admin_job(ctx, last, printed=json_lines)


def finish_admin_job(ctx: Context, job: res.AdminJob, *, printed: bool = False) -> int:
    if ctx.out.is_json and not printed:
        ctx.out.message(job)
    elif not ctx.out.is_json:
        ctx.out.done("admin-job", job.admin_job_id, job_state(job).lower(), job)
        if job.error:
            ctx.out.note(f"error: {job.error}")
        if job.result_json:
            ctx.out.note(f"result: {job.result_json}")
    return (
        exitcodes.OK if job.state == res.ADMIN_JOB_STATE_SUCCEEDED else exitcodes.OPERATION_FAILED
    )


def follow_sweep(
    ctx: Context, sweep_id: str, *, poll: float, expected: dict[str, int] | None = None
) -> int:
    """Poll a sweep until it ends: one bar per region, sized by the lag it had at the start."""
    sweeps = ctx.cp.sync
    expected = expected or {}
    bar = _bar(ctx) if ctx.out.err.is_terminal else None
    tasks: dict[str, TaskID] = {}
    shown_state = ""
    if bar is not None:
        bar.start()
    try:
        while True:
            sweep = sweeps.get_sweep(sweep_id)
            done = sweep.records_synced + sweep.quarantined
            if bar is not None:
                parts = [
                    (
                        p.region,
                        p.records_synced + p.quarantined + p.duplicates_skipped,
                        enum_name(sync_pb.SweepState, p.state, "SWEEP_STATE_"),
                    )
                    for p in sweep.region_progress
                ] or [(", ".join(sweep.regions) or "all", done, sweep_state(sweep))]
                for region, count, state in parts:
                    total = max(expected.get(region, 0), count) or None
                    description = f"sweep {region} {state}"
                    if region not in tasks:
                        tasks[region] = bar.add_task(description, total=total, completed=count)
                    bar.update(tasks[region], description=description, total=total, completed=count)
            elif sweep_state(sweep) != shown_state:
                shown_state = sweep_state(sweep)
                ctx.out.note(f"sweep/{sweep.sweep_id} {shown_state} records={done}")
            if sweep.state in SWEEP_ENDED:
                break
            time.sleep(poll)
    finally:
        if bar is not None:
            bar.stop()
    return finish_sweep(ctx, sweep)


def finish_sweep(ctx: Context, sweep: sync_pb.Sweep) -> int:
    if ctx.out.is_json:
        ctx.out.message(sweep)
    else:
        ctx.out.done("sweep", sweep.sweep_id, sweep_state(sweep).lower())
        ctx.out.note(
            f"records={sweep.records_synced} bytes={sweep.bytes_synced} "
            f"quarantined={sweep.quarantined} pages={sweep.pages}"
        )
        if sweep.error:
            ctx.out.note(f"error: {sweep.error}")
    return (
        exitcodes.OK if sweep.state == sync_pb.SWEEP_STATE_SUCCEEDED else exitcodes.OPERATION_FAILED
    )
