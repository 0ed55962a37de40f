"""Every store step that commits accepted state is timed and counted as a write, never as a read:
`escalation_store_errors_total{operation="commit"}` is what the alert on refused commits reads."""

import re
from pathlib import Path

from engine.metrics import OTHER_STORE_OPERATION, operation_label

STORE = Path(__file__).resolve().parents[2] / "engine" / "store"


def test_every_durable_step_has_a_write_operation_label() -> None:
    steps = {
        m.group(1)
        for path in STORE.glob("*.py")
        for m in re.finditer(r'\bdurable\(\s*"([^"]+)"', path.read_text())
    }
    assert {"commit decision", "count duplicates", "count repeats", "record heartbeat"} <= steps
    unlabelled = sorted(s for s in steps if operation_label(s) == OTHER_STORE_OPERATION)
    assert not unlabelled, f"store steps counted as reads: {unlabelled}"
