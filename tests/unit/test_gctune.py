"""serve and its worker collect garbage less often, and never walk what start-up built."""

import gc

from engine import gctune

CPYTHON_DEFAULT = (700, 10, 10)


def test_tune_freezes_what_exists_and_collects_the_young_generation_less_often() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc.unfreeze()  # whatever ran in this process before (the bench's smoke run tunes it too)
    gc.set_threshold(*CPYTHON_DEFAULT)
    kept = [object() for _ in range(10)]  # noqa: F841 - alive at the freeze
    try:
        gctune.tune()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (gctune.YOUNG_EVERY, 10, 10)
        assert CPYTHON_DEFAULT[0] < gctune.YOUNG_EVERY
    finally:
        gc.set_threshold(*before)
        if not frozen:
            gc.unfreeze()
