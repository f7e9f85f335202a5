"""`coinage world train` on a toy budget: it trains all four phases into a loadable backbone, resumes from its
checkpoints, and refuses checkpoints trained under other settings instead of mixing two trainings."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from world.errors import WorldError
from world.train import WorldTrainConfig, load_ckpt, phase_settings, save_ckpt, train_world


def toy(tmp_path, **kw) -> WorldTrainConfig:
    return WorldTrainConfig(out=str(tmp_path / "backbone"), work=str(tmp_path / "work"), pairs=48, clip_steps=2,
                            clip_batch=8, vae_steps=2, vae_batch=4, decoder_steps=2, decoder_batch=4, unet_steps=4,
                            unet_batch=4, ckpt_every=2,
                            unet_channels=(16, 32), vae_channels=(16, 32, 64), threads=1, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world-train")
    cfg = toy(tmp)
    return cfg, train_world(cfg)


def test_the_phases_give_a_backbone_the_loader_reads_and_samples_from(trained):
    from engine.diffusion import SamplerConfig, generate
    from engine.loading import load_backbone
    from engine.text import TextEncoder

    cfg, report = trained
    assert {"clip_s", "vae_s", "decoder_s", "unet_s", "total_s"} <= set(report["timings"])
    backbone = load_backbone(cfg.out, device="cpu")
    assert tuple(backbone.unet.config.block_out_channels) == (16, 32)
    enc = TextEncoder(backbone)
    image = generate(backbone, enc.encode(["a red dress on a beach"]).seq, enc.encode([""]).seq, seed=0,
                     config=SamplerConfig(steps=2, guidance_scale=4.0))
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_a_rerun_loads_the_finished_phases_instead_of_training_them(trained):
    cfg, report = trained
    again = train_world(cfg)
    # nothing retrained: each phase's seconds are the ones its checkpoint recorded
    for phase in ("clip_s", "vae_s", "decoder_s", "unet_s"):
        assert again["timings"][phase] == report["timings"][phase]


def test_an_interrupted_phase_resumes_at_its_last_checkpoint(tmp_path, monkeypatch):
    import world.train as wt

    cfg = toy(tmp_path)
    real = wt.train_unet
    calls = []

    def interrupted(c, backbone, latents, captions):
        opt_step = torch.optim.AdamW.step

        def step(self, *a, **k):  # die after the 3rd optimizer step, one past the checkpoint at step 2
            calls.append(1)
            if len(calls) > 3:
                raise KeyboardInterrupt
            return opt_step(self, *a, **k)

        monkeypatch.setattr(torch.optim.AdamW, "step", step)
        try:
            return real(c, backbone, latents, captions)
        finally:
            monkeypatch.setattr(torch.optim.AdamW, "step", opt_step)

    monkeypatch.setattr(wt, "train_unet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_world(cfg)
    monkeypatch.setattr(wt, "train_unet", real)
    state = torch.load(tmp_path / "work" / "unet.ckpt", weights_only=True)
    assert state["step"] == 2 and not state["done"]
    train_world(cfg)
    state = torch.load(tmp_path / "work" / "unet.ckpt", weights_only=True)
    assert state["step"] == cfg.unet_steps and state["done"]


def test_checkpoints_of_other_settings_are_refused_with_the_fix(tmp_path):
    cfg = toy(tmp_path)
    module = torch.nn.Linear(2, 2)
    (tmp_path / "work").mkdir()
    save_ckpt(cfg, "unet", 2, {"unet": module})
    assert load_ckpt(cfg, "unet", {"unet": module})[0] == 2
    wider = replace(cfg, unet_channels=(32, 64))
    with pytest.raises(WorldError, match=r"unet_channels.*Delete it to retrain.*--work"):
        load_ckpt(wider, "unet", {"unet": module})
    # the UNet learns on the CLIP's text states and the VAE's latents: their settings count too
    assert phase_settings(replace(cfg, clip_steps=3), "unet") != phase_settings(cfg, "unet")
    assert phase_settings(replace(cfg, unet_steps=9), "clip") == phase_settings(cfg, "clip")


def test_a_missing_phase_names_the_command_that_trains_it(tmp_path):
    with pytest.raises(WorldError, match=r"--phases clip"):
        train_world(toy(tmp_path), phases=("unet",))


def test_base_fine_tunes_the_decoder_alone_and_keeps_every_other_part(trained, tmp_path):
    from engine.loading import load_backbone

    cfg, _ = trained
    again = toy(tmp_path, base=cfg.out, phases=("decoder",))
    report = train_world(again)
    assert report["timings"]["decoder_s"] > 0
    assert report["timings"]["clip_s"] == report["timings"]["vae_s"] == report["timings"]["unet_s"] == 0.0
    assert report["base_report"]["timings"]["unet_s"] > 0  # the reused parts' own training, for the record
    old, new = load_backbone(cfg.out, device="cpu"), load_backbone(again.out, device="cpu")

    def same(a, b):
        a, b = a.state_dict(), b.state_dict()
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert same(old.clip, new.clip) and same(old.unet, new.unet)
    assert same(old.vae.encoder, new.vae.encoder) and same(old.vae.quant_conv, new.vae.quant_conv)
    assert not same(old.vae.decoder, new.vae.decoder)  # the UNet's latent space is untouched; only decoding changed
    assert new.vae.config.scaling_factor == old.vae.config.scaling_factor
    assert "_name_or_path" not in (tmp_path / "backbone" / "vae" / "config.json").read_text()
    # the decoder's checkpoint records which VAE it fine-tuned
    assert set(phase_settings(again, "decoder")) >= {"vae_from_sha256", "decoder_steps"}


def test_base_refuses_to_reuse_a_part_whose_upstream_this_run_retrains(trained, tmp_path):
    cfg, _ = trained
    with pytest.raises(WorldError, match=r"learned on its own vae, which this run retrains; add decoder to --phases"):
        train_world(toy(tmp_path, base=cfg.out, phases=("vae",)))


def test_a_base_without_a_backbone_names_the_fix(tmp_path):
    with pytest.raises(WorldError, match=r"no open_clip_model.safetensors there.*world/backbone"):
        train_world(toy(tmp_path, base=str(tmp_path / "nowhere"), phases=("decoder",)))
