"""The policy set in force, behind one reference so a reload swaps it for every reader at once."""

from dataclasses import dataclass

from engine.policy.models import PolicySet


@dataclass(slots=True)
class PolicyRef:
    """Callers take one snapshot per unit of work: `policies = ref()`; the reloader swaps `current`."""

    current: PolicySet

    def __call__(self) -> PolicySet:
        return self.current
