"""The local backend: attempts run as tasks of this process, each on its own kernel."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from nbjobs.attempt import Attempt, AttemptPaths, AttemptResult
from nbjobs.backends.base import Backend, FinishedCallback, Launch
from nbjobs.config import Settings
from nbjobs.errors import InvalidInput
from nbjobs.events import EventSink, fan_out
from nbjobs.kernels import KernelProvider
from nbjobs.kernels.registry import ConfiguredProviders
from nbjobs.lifecycle import StoreRecorder, begin_attempt, state_recorder
from nbjobs.notebook.runner import RunOutcome
from nbjobs.prepare import prepare
from nbjobs.spec import JobSpec, JobState
from nbjobs.store import Store


class _CancelledBeforeStart(Exception):
    pass


class LocalBackend(Backend):
    name = "local"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        on_finished: FinishedCallback,
        provider: KernelProvider | None = None,
        events: EventSink | None = None,
        job_events: Callable[[Launch], EventSink] | None = None,
        secrets: Callable[[int, JobSpec], dict[str, str]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_finished = on_finished
        # Long-lived: each Python kernelspec gets a zygote and kernels ready ahead (see nbjobs.kernels).
        self.provider = provider or ConfiguredProviders(settings.config.kernels)
        self.events = events
        self.job_events = job_events  # a sink per launch, for consumers that need the job id (event stream)
        self.secrets = secrets  # the secret values a job's spec names (InvalidInput when one is gone)
        self.host = socket.gethostname()
        self._attempts: dict[int, Attempt] = {}
        self._cancelled: dict[int, str] = {}  # cancel requests that came before the attempt existed
        self._tasks: dict[int, asyncio.Task[None]] = {}

    async def start(self, launch: Launch) -> None:
        self._tasks[launch.job_id] = asyncio.create_task(self._run(launch), name=f"job-{launch.job_id}")

    async def _run(self, launch: Launch) -> None:
        paths: AttemptPaths | None = None
        try:
            try:
                prepared = prepare(JobSpec.model_validate(launch.spec), settings=self.settings)
                secrets = self.secrets(launch.job_id, prepared.spec) if self.secrets else {}
            except InvalidInput as exc:  # e.g. the notebook was deleted after submit
                result = AttemptResult(RunOutcome(JobState.FAILED, f"could not start: {exc}"))
            else:
                if launch.job_id in self._cancelled:
                    reason = self._cancelled[launch.job_id]
                    raise _CancelledBeforeStart(reason)
                paths = begin_attempt(self.store, self.settings, prepared, launch.job_id, launch.attempt, self.host)
                attempt = Attempt(
                    prepared,
                    job_id=launch.job_id,
                    number=launch.attempt,
                    paths=paths,
                    provider=self.provider,
                    emit=fan_out(
                        [
                            StoreRecorder(self.store, launch.job_id, launch.attempt),
                            self.events,
                            self.job_events(launch) if self.job_events else None,
                        ]
                    ),
                    on_state=state_recorder(self.store, launch.job_id),
                    on_kernel=lambda pid: self.store.set_attempt_pid(launch.job_id, launch.attempt, pid),
                    allocation=launch.allocation,
                    sample_interval=self.settings.config.resources.sample_interval,
                    secrets=secrets,
                )
                self._attempts[launch.job_id] = attempt
                try:
                    result = await attempt.run()
                finally:
                    if prepared.snapshot is not None:
                        prepared.snapshot.release()
        except _CancelledBeforeStart as stop:
            result = AttemptResult(RunOutcome(JobState.CANCELLED, f"{stop} before the attempt started"))
        except Exception as exc:  # a bug must end the job, not leave it running
            result = AttemptResult(RunOutcome(JobState.FAILED, f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._cancelled.pop(launch.job_id, None)
            self._attempts.pop(launch.job_id, None)
            self._tasks.pop(launch.job_id, None)
        await self.on_finished(launch, result, paths)

    async def cancel(self, job_id: int, reason: str) -> bool:
        attempt = self._attempts.get(job_id)
        if attempt is not None:
            attempt.cancel(JobState.CANCELLED, reason)
            return True
        if job_id in self._tasks:  # not started yet: the task sees this before it starts the attempt
            self._cancelled[job_id] = reason
            return True
        return False

    def running(self) -> set[int]:
        return set(self._tasks)

    async def close(self) -> None:
        for attempt in list(self._attempts.values()):
            attempt.cancel(JobState.CANCELLED, "server shutting down")
        tasks = list(self._tasks.values())
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=10)
        await self.provider.close()
