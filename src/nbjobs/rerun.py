"""Running a recorded job again: its spec, at the commit it ran at.

A job that ran in a repository reruns from a snapshot of the commit it recorded
(whether it ran from the working tree or from a ref), so later commits and
uncommitted edits do not change what runs; a dirty tree's uncommitted changes
cannot be recovered, and the rerun says so. A job outside any repository reruns
the notebook file as it is now.
"""

from __future__ import annotations

from nbjobs.spec import JobSpec
from nbjobs.store import JobRecord


def rerun_spec(record: JobRecord) -> JobSpec:
    """The spec of `record`, pinned to its commit, ready for `prepare`."""
    data = dict(record.spec)
    data.pop("idempotency_key", None)  # with it, the rerun would just return the job it reruns
    git = record.git
    if git is not None and git.commit and git.path:
        data.update(notebook=git.path, repo=git.repo, git_ref=git.commit)
    return JobSpec.model_validate(data)


def rerun_notes(record: JobRecord) -> list[str]:
    """What a person should know about how faithful a rerun of `record` is."""
    git = record.git
    if git is None or not git.commit or not git.path:
        return [f"job {record.id} did not run from a git commit: the rerun uses {record.notebook} as it is now"]
    notes = []
    if git.dirty:
        files = ", ".join(git.modified[:10]) + (", ..." if len(git.modified) > 10 else "")
        notes.append(
            f"job {record.id} ran with uncommitted changes ({files}); "
            f"the rerun uses commit {git.commit[:12]} without them"
        )
    return notes
