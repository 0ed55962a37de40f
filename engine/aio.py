"""Small asyncio helpers shared by the background loops."""

import asyncio


def raise_if_cancelling() -> None:
    """redis-py can turn a cancelled read into a connection error; do not let a loop swallow the cancel."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
