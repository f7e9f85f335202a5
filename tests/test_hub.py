"""Hub access offline: a clear error in seconds (no retry storm), and cached weights with no network attempt."""
import logging
import socket
import time

import pytest

from engine.backbones import BackboneConfig, get_backbone_config
from engine.errors import BackboneUnavailable
from engine.loading import _load_diffusion, load_backbone, save_backbone

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The hub as an offline user has it: HF_HUB_OFFLINE unset, an empty cache, and every connection attempt
    (name lookup or connection) counted and refused. Yields (cache dir, attempts)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    attempts: list = []

    def refuse(sock, address):
        attempts.append(address)
        raise ConnectionRefusedError(f"refused {address!r}")

    def unresolvable(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(socket.EAI_NONAME, f"cannot resolve {host!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    return cache, attempts


def cache_repo(cache, repo: str, write) -> None:
    """Put a hub repository in `cache` as huggingface_hub lays it out (refs/main -> snapshots/<commit>/)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    write(root / "snapshots" / COMMIT)


def test_unreachable_hub_is_a_clear_error_in_seconds(hub, caplog):
    cache, attempts = hub
    caplog.set_level(logging.INFO)
    start = time.perf_counter()
    with pytest.raises(BackboneUnavailable) as info:
        load_backbone("sd15", device="cpu")
    elapsed = time.perf_counter() - start
    msg = str(info.value)
    assert elapsed < 10, f"the offline error took {elapsed:.1f} s"
    assert "timm/vit_large_patch14_clip_224.openai" in msg and "unreachable" in msg and str(cache) in msg
    assert "--backbone <dir>" in msg and "--clip-weights" in msg
    assert len(attempts) == 1  # one probe, no retries
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]


def test_unreachable_hub_fails_fast_for_the_diffusion_stack(hub):
    _cache, attempts = hub
    start = time.perf_counter()
    with pytest.raises(BackboneUnavailable, match="stable-diffusion-v1-5/stable-diffusion-v1-5.*unreachable"):
        _load_diffusion(get_backbone_config("sd15"))
    assert time.perf_counter() - start < 10 and len(attempts) == 1


def test_offline_mode_does_not_probe(hub, monkeypatch):
    from huggingface_hub import constants

    _cache, attempts = hub
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneUnavailable, match="HF_HUB_OFFLINE is set"):
        load_backbone("sd15", device="cpu")
    assert attempts == []
    assert constants.HF_HUB_OFFLINE is True


def test_cached_backbone_loads_without_a_network_attempt(hub, tiny):
    """A hub backbone repo and a hub diffusers repo in the cache load with HF_HUB_OFFLINE unset and no network."""
    from huggingface_hub import constants

    cache, attempts = hub
    cache_repo(cache, "coinage-test/tiny", lambda d: save_backbone(tiny, d, name="cached"))
    loaded = load_backbone("hf-hub:coinage-test/tiny", device="cpu")
    assert loaded.id == "cached" and loaded.has_diffusion

    def diffusers_repo(d):
        for sub, module in (("unet", tiny.unet), ("vae", tiny.vae), ("scheduler", tiny.scheduler)):
            module.save_pretrained(d / sub)

    cache_repo(cache, "coinage-test/tiny-sd", diffusers_repo)
    unet, vae, scheduler = _load_diffusion(BackboneConfig(name="x", clip_model="x", diffusion="coinage-test/tiny-sd"))
    assert unet.config.cross_attention_dim == tiny.text_width and type(scheduler) is type(tiny.scheduler)
    assert attempts == []
    assert constants.HF_HUB_OFFLINE is False  # the cache-only pass restored the setting
