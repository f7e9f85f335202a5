"""The one mapping between open_clip's text tower and transformers' CLIPTextModel.

Stable Diffusion's text encoder *is* a CLIP text tower in transformers' layout. The mapping:

| open_clip                                    | transformers (text_model.)                     |
|----------------------------------------------|------------------------------------------------|
| token_embedding.weight                       | embeddings.token_embedding.weight              |
| positional_embedding                         | embeddings.position_embedding.weight           |
| transformer.resblocks.i.ln_1 / ln_2          | encoder.layers.i.layer_norm1 / layer_norm2     |
| transformer.resblocks.i.attn.in_proj_*       | encoder.layers.i.self_attn.{q,k,v}_proj (split)|
| transformer.resblocks.i.attn.out_proj        | encoder.layers.i.self_attn.out_proj            |
| transformer.resblocks.i.mlp.c_fc / c_proj    | encoder.layers.i.mlp.fc1 / fc2                 |
| ln_final                                     | final_layer_norm                               |
| text_projection (width, embed)               | text_projection.weight (embed, width), transposed |

SD 1.x conditions on `last_hidden_state` (all layers, then final_layer_norm): cond_layer 'last'.
SD 2.x ships a text encoder with the last layer removed (23 of 24 layers), so its
`last_hidden_state` is final_layer_norm(penultimate hidden state): cond_layer 'penultimate',
converted here by dropping the last block.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch


def hf_text_config(backbone):
    from transformers import CLIPTextConfig

    text_cfg = backbone.clip_cfg["text_cfg"]
    width = backbone.text_width
    layers = len(backbone.clip.transformer.resblocks)
    if backbone.config.cond_layer == "penultimate":
        layers -= 1
    mlp_ratio = text_cfg.get("mlp_ratio", 4.0)
    return CLIPTextConfig(
        vocab_size=backbone.vocab_size, hidden_size=width, intermediate_size=int(width * mlp_ratio),
        projection_dim=backbone.embed_dim, num_hidden_layers=layers,
        num_attention_heads=text_cfg.get("heads", 8), max_position_embeddings=backbone.context_length,
        hidden_act="quick_gelu" if backbone.clip_cfg.get("quick_gelu") else "gelu", layer_norm_eps=1e-5,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407 if backbone.config.pad == "eot" else 0,
    )


def openclip_to_hf_state(clip: torch.nn.Module, layers: int) -> dict[str, torch.Tensor]:
    """open_clip text-tower weights renamed (and q/k/v split) into CLIPTextModelWithProjection keys."""
    out = {
        "text_model.embeddings.token_embedding.weight": clip.token_embedding.weight,
        "text_model.embeddings.position_embedding.weight": clip.positional_embedding,
        "text_model.final_layer_norm.weight": clip.ln_final.weight,
        "text_model.final_layer_norm.bias": clip.ln_final.bias,
    }
    proj = clip.text_projection
    out["text_projection.weight"] = proj.weight if isinstance(proj, torch.nn.Linear) else proj.T
    for i, block in enumerate(clip.transformer.resblocks[:layers]):
        p = f"text_model.encoder.layers.{i}."
        q, k, v = block.attn.in_proj_weight.chunk(3)
        qb, kb, vb = block.attn.in_proj_bias.chunk(3)
        out.update({
            p + "self_attn.q_proj.weight": q, p + "self_attn.q_proj.bias": qb,
            p + "self_attn.k_proj.weight": k, p + "self_attn.k_proj.bias": kb,
            p + "self_attn.v_proj.weight": v, p + "self_attn.v_proj.bias": vb,
            p + "self_attn.out_proj.weight": block.attn.out_proj.weight,
            p + "self_attn.out_proj.bias": block.attn.out_proj.bias,
            p + "layer_norm1.weight": block.ln_1.weight, p + "layer_norm1.bias": block.ln_1.bias,
            p + "layer_norm2.weight": block.ln_2.weight, p + "layer_norm2.bias": block.ln_2.bias,
            p + "mlp.fc1.weight": block.mlp.c_fc.weight, p + "mlp.fc1.bias": block.mlp.c_fc.bias,
            p + "mlp.fc2.weight": block.mlp.c_proj.weight, p + "mlp.fc2.bias": block.mlp.c_proj.bias,
        })
    return {k: v.detach().clone().float() for k, v in out.items()}


def to_hf_text_model(backbone):
    """A transformers CLIPTextModelWithProjection with this backbone's text-tower weights."""
    from transformers import CLIPTextModelWithProjection

    config = hf_text_config(backbone)
    model = CLIPTextModelWithProjection(config)
    missing, unexpected = model.load_state_dict(openclip_to_hf_state(backbone.clip, config.num_hidden_layers),
                                                strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"open_clip -> transformers mapping incomplete: missing {missing}, unexpected {unexpected}")
    return model.eval()


def write_hf_tokenizer(directory: str | Path, context_length: int, pad: str = "eot") -> Path:
    """Write vocab.json + merges.txt built from open_clip's BPE file (the CLIP vocabulary SD ships)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": context_length, "pad_token": "<|endoftext|>" if pad == "eot" else "!",
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "tokenizer_class": "CLIPTokenizer", "do_lower_case": True,
    }))
    return out


def hf_tokenizer(directory: str | Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(directory))


def to_diffusers_pipeline(backbone, tokenizer_dir: str | Path):
    """A diffusers StableDiffusionPipeline made of this backbone's components (text tower converted)."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    if not backbone.has_diffusion:
        raise ValueError(f"backbone {backbone.id!r} has no diffusion stack; load one with diffusion to build a pipeline")
    with_proj = to_hf_text_model(backbone)
    text_encoder = CLIPTextModel(with_proj.config)
    getattr(text_encoder, "text_model", text_encoder).load_state_dict(with_proj.text_model.state_dict())
    write_hf_tokenizer(tokenizer_dir, backbone.context_length, backbone.config.pad)
    return StableDiffusionPipeline(
        vae=backbone.vae, text_encoder=text_encoder.to(backbone.device, backbone.dtype).eval(),
        tokenizer=hf_tokenizer(tokenizer_dir), unet=backbone.unet, scheduler=backbone.scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
