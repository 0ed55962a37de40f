"""serve and its worker collect garbage less often, and never walk what start-up built."""

import gc

from engine import gctune


def test_tune_freezes_what_exists_and_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    kept = [object() for _ in range(10)]  # noqa: F841 - alive at the freeze
    try:
        gctune.tune()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (gctune.YOUNG_EVERY, before[1], before[2])
        assert before[0] < gctune.YOUNG_EVERY
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
