"""Outbox -> channels: loop.py (the consumer), plan.py (pure: what goes to whom, skip rules),
retry.py (backoff and outcomes). Import from the modules: plan.py stays importable without I/O."""
