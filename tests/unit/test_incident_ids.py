"""Incident ids: the shard they name, twelve random hex digits, never the same twice, and never
the same in a forked child as in its parent (the random bytes are read ahead in blocks)."""

import os
import re

from engine.store import keys


def test_an_id_names_its_shard_and_twelve_random_hex_digits() -> None:
    for shard in range(keys.SHARDS):
        new = keys.new_incident_id(shard)
        assert re.fullmatch(r"[0-9a-f]+-[0-9a-f]{12}", new), new
        assert keys.shard_of_id(new) == shard


def test_ids_do_not_repeat_across_many_blocks_of_random_bytes() -> None:
    made = [keys.new_incident_id(3) for _ in range(5_000)]  # about five refills of the block
    assert len(set(made)) == len(made)


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    keys.new_incident_id(0)  # the parent's block is read, with most of it still to hand out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running the test process's exit
        try:
            os.close(read)
            os.write(write, " ".join(keys.new_incident_id(0) for _ in range(5)).encode())
        finally:
            os._exit(0)  # never a second pytest, whatever happened
    os.close(write)
    with os.fdopen(read) as pipe:
        childs = set(pipe.read().split())
    os.waitpid(pid, 0)
    parents = {keys.new_incident_id(0) for _ in range(5)}
    assert len(childs) == 5
    assert not childs & parents
