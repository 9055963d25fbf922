"""One leader among the servers that share a store: it alone starts queued jobs (and fires schedules).

Leadership is a lease: a row in table `leader` naming its holder and until when
the lease holds. The holder renews it well before it lapses; any other server
takes it over once it has lapsed (or at once when the holder is a dead process
on this host). Every change is one conditional UPDATE, so two servers racing
for a lapsed lease cannot both win. Claims of jobs stay compare-and-set on the
job row as well, so even a leader that lost its lease without noticing (a long
pause) can never start a job that another server started.

Others ask `lease.held` (the dispatcher before each pass, the schedules engine
before firing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from nbjobs.store import models as m
from nbjobs.store.repository import Store, utcnow

log = logging.getLogger(__name__)
SCHEDULER = "scheduler"
HOLD_FRACTION = 0.8  # trust the lease for this share of its length: renewals and clocks may lag


class LeaderLease:
    """The lease on role `name` in `store`, as seen by server `holder`."""

    def __init__(
        self,
        store: Store,
        holder: str,
        *,
        ttl: float = 15.0,
        name: str = SCHEDULER,
        holder_is_gone: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.holder = holder
        self.ttl = ttl
        self.name = name
        self.holder_is_gone = holder_is_gone or (lambda _holder: False)
        self._held_until = 0.0  # time.monotonic() until which this server may act as leader

    @property
    def held(self) -> bool:
        """Whether this server is the leader now."""
        return time.monotonic() < self._held_until

    def current_holder(self) -> str | None:
        with self.store.session() as s:
            row = s.execute(select(m.Leader.holder, m.Leader.expires).where(m.Leader.name == self.name)).first()
        return row.holder if row is not None and row.expires > utcnow() else None

    def try_acquire(self) -> bool:
        """Take the lease if it is free or lapsed, renew it if held; whether this server holds it now."""
        asked_at = time.monotonic()
        now = utcnow()
        until = now + timedelta(seconds=self.ttl)
        with self.store.session() as s, s.begin():
            taken = s.execute(
                update(m.Leader)
                .where(m.Leader.name == self.name, or_(m.Leader.holder == self.holder, m.Leader.expires < now))
                .values(holder=self.holder, expires=until)
            ).rowcount
            holder = None
            if not taken:
                holder = s.scalar(select(m.Leader.holder).where(m.Leader.name == self.name))
                if holder is not None and self.holder_is_gone(holder):
                    taken = s.execute(
                        update(m.Leader)
                        .where(m.Leader.name == self.name, m.Leader.holder == holder)
                        .values(holder=self.holder, expires=until)
                    ).rowcount
        if not taken and holder is None:  # no row yet: after the transaction above, which may lock the table
            taken = self._insert(until)
        was_held = self.held
        self._held_until = asked_at + self.ttl * HOLD_FRACTION if taken else 0.0
        if bool(taken) != was_held:
            log.info("%s %s the %s lease", self.holder, "holds" if taken else "lost", self.name)
        return bool(taken)

    def _insert(self, until: object) -> int:
        # Its own transaction: a racing insert fails on the primary key, and that server simply is not leader.
        try:
            with self.store.session() as s, s.begin():
                s.execute(insert(m.Leader).values(name=self.name, holder=self.holder, expires=until))
        except IntegrityError:
            return 0
        return 1

    def release(self) -> None:
        """Give the lease up now (a clean shutdown), so another server takes over without waiting."""
        self._held_until = 0.0
        with self.store.session() as s, s.begin():
            s.execute(
                update(m.Leader)
                .where(m.Leader.name == self.name, m.Leader.holder == self.holder)
                .values(expires=utcnow() - timedelta(seconds=1))
            )

    async def keep(self, on_change: Callable[[bool], None] | None = None) -> None:
        """Hold or seek the lease until cancelled: renew at a third of its length, seek every second."""
        while True:
            was_held = self.held
            try:
                held = await asyncio.to_thread(self.try_acquire)
            except Exception:  # the database is away: act as follower until it answers
                log.warning("could not renew the %s lease", self.name, exc_info=True)
                self._held_until = 0.0
                held = False
            if on_change is not None and held != was_held:
                on_change(held)
            await asyncio.sleep(self.ttl / 3 if held else min(1.0, self.ttl / 3))
