"""The store: migrations and the repository's guarantees."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from nbjobs.spec import JobSpec, JobState
from nbjobs.store import Store
from nbjobs.store.migrate import HEAD, alembic_config, current_revisions


def test_head_constant_names_the_newest_migration():
    assert set(ScriptDirectory.from_config(alembic_config()).get_heads()) == {HEAD}


def test_new_database_is_migrated_once_and_reopened_cheaply(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = Store(url)
    assert current_revisions(store.engine) == {HEAD}
    store.close()
    Store(url).close()  # already at head: nothing to do


def test_transitions_are_compare_and_set(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = store.create_job(JobSpec(notebook="a.ipynb"), owner="me", host="h")
    assert store.transition(job, JobState.STARTING, expect=[JobState.QUEUED])
    assert not store.transition(job, JobState.STARTING, expect=[JobState.QUEUED])  # someone else was first
    assert store.transition(job, JobState.CANCELLED, "cancelled by user")
    record = store.get(job)
    assert [h.state for h in record.history] == [JobState.QUEUED, JobState.STARTING, JobState.CANCELLED]
    assert record.ended is not None and record.reason == "cancelled by user"
