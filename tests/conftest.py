"""Test setup: offline hub, no network beyond loopback, tiny seeded backbones built once per session."""
from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

_real_connect = socket.socket.connect


def _guarded_connect(sock, address):
    """Refuse any connection that leaves this machine: tests never reach for the network."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise OSError(f"test tried to reach {address!r}: tests must not use the network")
    return _real_connect(sock, address)


socket.socket.connect = _guarded_connect


@pytest.fixture(scope="session")
def tiny():
    from engine.loading import load_backbone

    return load_backbone("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def encoder(tiny):
    from engine.text import TextEncoder

    return TextEncoder(tiny)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models (fastest for them, and the test machine is shared); modules
    opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
