"""`ota-client run`: check and update at an interval, with jitter and backoff.

The first check waits a random part of the jitter so a fleet that powers up together does not
stampede the server; after a failure the wait doubles (up to `max_backoff`). Setting `stop`
(SIGTERM) ends the wait at once and stops a download between two chunks; the download resumes
on the next run.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from client.config import AgentConfig
from client.device import Device
from client.errors import Interrupted, TrialPendingError, UpdateError
from client.update import UpdateResult, update

logger = logging.getLogger(__name__)


def next_delay(config: AgentConfig, failures: int, rng: random.Random) -> float:
    """Seconds until the next check: the interval, doubled per consecutive failure (capped),
    plus a random jitter."""
    base = (
        config.interval
        if failures == 0
        else min(config.max_backoff, config.interval * 2.0 ** min(failures, 32))
    )
    return base + rng.uniform(0, config.jitter)


def run_agent(
    device: Device,
    *,
    stop: threading.Event,
    max_iterations: int | None = None,
    rng: random.Random | None = None,
    on_result: Callable[[UpdateResult], None] | None = None,
) -> int:
    """Loop until `stop` is set (or `max_iterations` checks are done); returns the number of
    checks made."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    config = device.config.agent
    delay = rng.uniform(0, config.jitter)
    failures = 0
    done = 0
    while not stop.wait(delay):
        try:
            result = update(device)
        except Interrupted:
            logger.info("stopping: the download will resume on the next run")
            break
        except TrialPendingError as e:
            logger.info("%s", e)  # an installed update waits for its trial boot: not an error
        except UpdateError as e:
            failures += 1
            logger.warning("update failed (%d in a row): %s", failures, e)
        else:
            failures = 0
            if on_result is not None:
                on_result(result)
            if result.installed:
                device.reboot()
        done += 1
        if max_iterations is not None and done >= max_iterations:
            break
        device.flush_reports()
        delay = next_delay(config, failures, rng)
        logger.info("next check in %.0f s", delay)
    return done
