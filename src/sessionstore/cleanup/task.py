"""`TaskCleanup`: purge expired sessions from an asyncio task (for `AsyncStore`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref

from ._schedule import AsyncPurger, Schedule, logger


class TaskCleanup(Schedule):
    """Purge an `AsyncStore`'s expired sessions every `interval`, from an asyncio task.

    When the store starts it, its options, its failures and a store dropped without
    closing: docs/cleanup.md.

    Raises:
        ValueError: If `interval` is not positive (use `NoCleanup` instead).
    """

    _task: asyncio.Task[None] | None = None

    def start(self, store: AsyncPurger) -> None:
        """Start the cleanup task for `store` on the running loop; the store calls this.

        Raises:
            RuntimeError: If no event loop is running, or this strategy already
                serves a store.
        """
        loop = asyncio.get_running_loop()
        self.attach(store)
        name = store.name
        task = loop.create_task(
            self._run(weakref.ref(store), name), name=f"sessionstore-cleanup {name}"
        )
        self._task = task
        weakref.finalize(store, _store_dropped, loop, task, name)

    async def astop(self) -> None:
        """Cancel the task and any purge in flight; wait up to `stop_timeout` seconds."""
        task = self._task
        if task is None or task.done():
            return
        if asyncio.get_running_loop() is not task.get_loop():
            ended = self._cancel_threadsafe(task)
            if not await asyncio.to_thread(ended.wait, self.stop_timeout):
                self._warn_still_running(task)
            return
        task.cancel()
        if task is asyncio.current_task():
            return  # called from a purge's on_error: the task ends when it next awaits
        done, _ = await asyncio.wait({task}, timeout=self.stop_timeout)
        if not done:
            self._warn_still_running(task)

    def stop(self) -> None:
        """`astop` from a plain thread; from the loop's own thread it only asks to cancel."""
        task = self._task
        if task is None or task.done():
            return
        with contextlib.suppress(RuntimeError):  # no running loop: from a plain thread
            if asyncio.get_running_loop() is task.get_loop():
                task.cancel()
                return  # waiting here would block the loop the task needs to end
        if not self._cancel_threadsafe(task).wait(self.stop_timeout):
            self._warn_still_running(task)

    def _cancel_threadsafe(self, task: asyncio.Task[None]) -> threading.Event:
        """Ask the task's loop to cancel it; the event is set once the task has ended."""
        ended = threading.Event()

        def cancel() -> None:
            task.add_done_callback(lambda _: ended.set())
            task.cancel()

        try:
            task.get_loop().call_soon_threadsafe(cancel)
        except RuntimeError:  # the loop is closed: the task can never run again
            ended.set()
        return ended

    def _warn_still_running(self, task: asyncio.Task[None]) -> None:
        logger.warning("%s did not end within %g s; leaving it", task.get_name(), self.stop_timeout)

    @property
    def running(self) -> bool:
        """Whether the cleanup task is alive."""
        return self._task is not None and not self._task.done()

    async def _run(self, ref: weakref.ref[AsyncPurger], name: str) -> None:
        delay = 0.0 if self.run_on_start else self._next_delay()
        while True:
            await asyncio.sleep(delay)
            delay = self._next_delay()  # rescheduled first: a failure can't end the loop
            store = ref()
            if store is None:
                return
            clock = self._clock()
            try:
                deleted = await store.try_purge_expired()
            except Exception as exc:
                self._record(name, clock, None, exc)
            else:
                self._record(name, clock, deleted)
            del store


def _store_dropped(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], name: str) -> None:
    if task.done():
        return
    logger.warning("store for %s was garbage-collected without close(); cleanup stopped", name)
    with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing to stop
        loop.call_soon_threadsafe(task.cancel)
