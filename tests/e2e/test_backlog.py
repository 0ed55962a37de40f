"""bench/backlog.py at a small size against a real `serve`: P0 pages get through while a slow
endpoint's backlog of P3 pages fills the same channel's queue and connections, and every page of
both arrives."""

import pytest

from bench.backlog import measure, parse_args

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(240)
async def test_p0_pages_arrive_before_the_backlog_in_front_of_them_drains() -> None:
    # 400 bulk pages at 3 s each through 80 connections: the first ones arrive 3 s in, the
    # backlog takes 15 s to drain; the 5 P0 pages are sent within the first 1.5 s
    result = await measure(parse_args(["--bulk", "400", "--bulk-delay", "3", "--p0", "5", "--drain", "60"]))
    assert result["p0_arrived"] == result["p0_pages"] == 5
    assert result["bulk_arrived"] == 400
    # ahead of the backlog, not behind it (7119c5a: 166 of 400 had arrived, P0 latency 2.5 s)
    assert result["bulk_arrived_when_last_p0_arrived"] < 80
