"""The scaling bench's ingest mix in a process of its own, as `serve` runs ingest apart from its
worker (timers, delivery): `bench.scaling` starts it while its timers fall due.

    python -m bench.scaling_load --redis-url URL --seed N --first-group G

Seeds N groups (so the mix has repeats), prints `ready`, then sends the mix (bench/scaling.py's:
20 % new groups, 32 at a time) until its stdin closes, and prints what it sent as JSON.
"""

import argparse
import asyncio
import itertools
import json
import sys

from bench.scaling import Growing
from engine import gctune
from engine.logs import configure_logging
from engine.store.connect import connect
from engine.store.redis import RedisStore


async def run(url: str, seed: int, first_group: int) -> dict[str, float | int]:
    configure_logging("warning", "json")
    store = RedisStore(await connect(url))
    try:
        mix = Growing(store, None)
        mix.next_group = itertools.count(first_group)  # apart from the bench process's groups
        await mix.seed(seed)
        gctune.tune()  # as serve does once started
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        closed = asyncio.create_task(stdin.read())
        return await mix.load_while(closed)
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--first-group", type=int, default=1 << 40)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.redis_url, args.seed, args.first_group))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
