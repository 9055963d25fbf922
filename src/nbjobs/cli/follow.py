"""`nbjobs logs -f`: a job's log lines as they come, through the server's event stream."""

from __future__ import annotations

import sys

from nbjobs.spec import EXIT_CODES, JobState


def follow_logs(job_id: int) -> int:
    """Print the job's log from its start, live, until it ends; return its exit code."""
    from nbjobs.client import Client, job_has_ended

    with Client() as client:
        for event in client.events(f"/api/jobs/{job_id}/events"):
            if event["kind"] == "log":
                sys.stdout.write(event["text"])
                sys.stdout.flush()
            elif job_has_ended(client, job_id, event):
                return EXIT_CODES[JobState(client.request("GET", f"/api/jobs/{job_id}")["state"])]
    return 0
