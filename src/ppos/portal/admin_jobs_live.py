"""Admin jobs with live progress: each running job's one WatchAdminJob stream.

A live topic that shows admin jobs holds the watch of every running job it shows
(shared with every other topic showing it), so a progress change wakes the topic,
and shows each job as its watch last reported it. A job that ended is let go; its
watch is forgotten once no topic holds it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.portal.live import LiveHub
from ppos.portal.upstreams import ADMIN_JOB_DONE, AdminJobWatch


def follow_admin_jobs(
    hub: LiveHub, key: Hashable, jobs: Iterable[res.AdminJob]
) -> list[res.AdminJob]:
    """`jobs` as their watches last saw them; the topic `key` now holds the watch of
    each one running and none other."""
    topic = hub.topics.get(key)
    shown = []
    running: set[str] = set()
    for job in jobs:
        watch = hub.admin_jobs.get(job.admin_job_id)
        latest = watch.job if watch is not None else None
        if latest is not None and _newer_or_same(latest, job):
            job = latest
        shown.append(job)
        if job.state not in ADMIN_JOB_DONE:
            running.add(job.admin_job_id)
    if topic is None:
        return shown
    for upstream in list(topic.upstreams):
        if isinstance(upstream, AdminJobWatch) and upstream.admin_job_id not in running:
            topic.let_go(upstream)
            if upstream.users == 0:
                hub.admin_jobs.pop(upstream.admin_job_id, None)
    for admin_job_id in running:
        topic.hold(hub.admin_job(admin_job_id))
    return shown


def _newer_or_same(watched: res.AdminJob, listed: res.AdminJob) -> bool:
    return watched.update_time.ToNanoseconds() >= listed.update_time.ToNanoseconds()
