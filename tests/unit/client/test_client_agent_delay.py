"""The agent's schedule: interval plus jitter, doubling after failures, capped."""

from __future__ import annotations

import random

from client.agent import next_delay
from client.config import AgentConfig


def test_jitter_bounds_and_backoff() -> None:
    config = AgentConfig(interval=100.0, jitter=10.0, max_backoff=500.0)
    rng = random.Random(1)
    delays = [next_delay(config, 0, rng) for _ in range(200)]
    assert all(100.0 <= d <= 110.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100  # spread, not a fixed schedule
    assert 200.0 <= next_delay(config, 1, rng) <= 210.0
    assert 400.0 <= next_delay(config, 2, rng) <= 410.0
    assert 500.0 <= next_delay(config, 3, rng) <= 510.0
    assert 500.0 <= next_delay(config, 1000, rng) <= 510.0
