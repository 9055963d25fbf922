"""`nbjobs logs -f`: a job's log lines as they come, through the server's event stream."""

from __future__ import annotations

import sys

from nbjobs.spec import EXIT_CODES, JobState


def follow_logs(job_id: int) -> int:
    """Print the job's log from its start, live, until it ends; return its exit code."""
    from nbjobs.client import Client

    with Client() as client:
        for event in client.events(f"/api/jobs/{job_id}/events"):
            if event["kind"] == "log":
                sys.stdout.write(event["text"])
                sys.stdout.flush()
            elif event["kind"] == "state" and JobState(event["state"]).is_final:
                # An attempt's end is followed by a retry's `queued`: only the job's own state says it is over.
                record = client.request("GET", f"/api/jobs/{job_id}")
                state = JobState(record["state"])
                if state.is_final:
                    return EXIT_CODES[state]
    return 0
