"""Small asyncio helpers shared by the server's session kinds (WebRTC and Realtime)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel the tasks (never the caller's own task) and wait until they are all done."""
    current = asyncio.current_task()
    pending = [t for t in tasks if t is not current]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def spawn(tasks: set[asyncio.Task], coro, name: str) -> asyncio.Task:  # noqa: ANN001 - a coroutine
    """Start `coro` as a named task kept in `tasks` until it is done (for `cancel_and_wait`)."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task
