"""Outbox -> channels: the loop (loop.py), what goes to whom (plan.py, pure) and retries (retry.py)."""

from engine.delivery.loop import Delivery, DeliveryConfig

__all__ = ["Delivery", "DeliveryConfig"]
