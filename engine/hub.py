"""Hugging Face hub access for backbone weights: the cache first, then one quick reachability probe.

huggingface_hub retries an unreachable hub with backoff (about a minute of warnings per file) before it
gives up. A backbone load instead reads the cache with the hub switched off (no network attempt at all
when the files are there); on a cache miss it probes the hub endpoint once, for a few seconds, and only
downloads when the endpoint answers. With HF_HUB_OFFLINE=1 there is no probe: a miss is the error.
"""
from __future__ import annotations

import logging
import socket
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlparse

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds the reachability probe (DNS lookup + TCP connect to the hub endpoint) may take before the hub
# counts as unreachable.
PROBE_TIMEOUT_S = 3.0

_offline_lock = threading.RLock()


class HubUnreachable(OSError):
    """The weights are not in the hub cache and the hub does not answer (or offline mode is on)."""


def offline_by_environment() -> bool:
    """HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) was set for this process."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def hub_offline() -> Iterator[None]:
    """huggingface_hub refuses every request inside the block (files come from the cache), as with HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    with _offline_lock:
        before = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = before


def unreachable_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the hub endpoint accepts a TCP connection within `timeout` seconds, else why not."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"{type(e).__name__}: {e}")

    # A thread bounds the DNS lookup too, which create_connection's timeout does not cover.
    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0]


def cache_first(load: Callable[[], T], what: str) -> T:
    """Run `load` (which reads hub files) from the cache; on a miss, download only if the hub answers.

    Raises HubUnreachable (an OSError, chained to the cache miss) when the files are not cached and the hub is
    offline by environment or does not answer the probe; the message names `what` was looked for and why.
    """
    try:
        with hub_offline():
            return load()
    except (OSError, RuntimeError, ValueError, KeyError) as miss:
        if offline_by_environment():
            raise HubUnreachable(f"{what} is not in the hub cache and HF_HUB_OFFLINE is set") from miss
        reason = unreachable_reason()
        if reason is not None:
            raise HubUnreachable(f"{what} is not in the hub cache and the hub is unreachable ({reason})") from miss
        log.info("%s is not in the hub cache; downloading it", what)
    return load()
