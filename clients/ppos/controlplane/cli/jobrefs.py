"""How pposctl names a synced job: `REGION/JOB[@REV]`, as it prints them.

One form for every command: `sync jobs get eu-west-1/job_1@3`,
`policies dry-run --job eu-west-1/job_1`, and in filters `--job [REGION/]JOB`
(the region optional there: a job id alone matches it in every region).
"""

from __future__ import annotations

import argparse

from ppos.controlplane.cli.app import UsageError
from ppos.controlplane.common.v1 import resource_pb2


def parse_job_ref(text: str) -> resource_pb2.JobRef:
    """`REGION/JOB[@REV]`: how pposctl names a synced job everywhere (and prints it)."""
    job = job_filter(text)
    if not job.region:
        raise argparse.ArgumentTypeError(f"{text!r} is not REGION/JOB[@REV]")
    return job


def job_filter(text: str) -> resource_pb2.JobRef:
    """`[REGION/]JOB[@REV]`: a job, its region and revision optional (filters).
    `job/REGION/JOB@REV`, what `-o name` prints, is taken too (for xargs)."""
    if text.count("/") == 2:
        text = text.removeprefix("job/")
    region, sep, rest = text.rpartition("/")
    job_id, _, revision = rest.partition("@")
    if (sep and not region) or not job_id or "/" in region:
        raise argparse.ArgumentTypeError(f"{text!r} is not REGION/JOB[@REV]")
    try:
        number = int(revision) if revision else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the revision after @ is a number") from None
    return resource_pb2.JobRef(region=region, job_id=job_id, revision=number)


def job_filter_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--job",
        type=job_filter,
        default=None,
        metavar="[REGION/]JOB",
        help=f"{what} (a job id, or REGION/JOB as pposctl prints it)",
    )


def job_and_region(job: resource_pb2.JobRef | None, region: str) -> tuple[str, str]:
    """The job id and region to filter on, from `--job [REGION/]JOB` and `--region`."""
    if job is None:
        return "", region
    if job.revision:
        raise UsageError("--job filters by job, not by revision: leave out @REV")
    if job.region and region and region != job.region:
        raise UsageError(f"--job names region {job.region}, --region says {region}")
    return job.job_id, job.region or region
