"""Typed configuration of an indexing run (shared by `coinage index`, `coinage reindex` and the web jobs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.backbones import DEFAULT_BACKBONE
from engine.store import StoreConfig

from .decode import ImageLimits

QUANTIZE_CHOICES = ("int8", "fp16")


@dataclass
class IndexerConfig:
    # Catalog file: .csv, .jsonl/.ndjson or .parquet; rows need id, title, image (+ category, price, attributes).
    catalog: Path
    # Backbone whose image encoder embeds the catalog: registry name, local directory or hf-hub:org/repo.
    backbone: str = DEFAULT_BACKBONE
    # Vector store to write to (embedded directory or Qdrant server).
    store: StoreConfig = field(default_factory=StoreConfig)
    # Live name searches use: an alias that `reindex` re-points; `index` writes into its target.
    alias: str = "products"
    # Images per encoder call.
    batch_size: int = 32
    # Decoder threads (file read, hash, image decode, resize) running ahead of the encoder (in-process path).
    workers: int = 2
    # Ray Data workers (actors per map stage: prepare, embed) for the bulk path (indexer.ray_pipeline);
    # 0: the in-process path (the default: small catalogs, the demo, the web jobs).
    ray_workers: int = 0
    # Ray cluster to run on ("ray://head:10001" or "auto"); None: $COINAGE_RAY_ADDRESS, else a local Ray
    # started with ray_workers CPUs and stopped at the end.
    ray_address: str | None = None
    # Fetch http(s) image URLs named in the catalog; off: rows whose image is a URL are rejected.
    allow_urls: bool = False
    # Seconds an image URL fetch may take in all (connect, headers, body, redirects); a slow drip is cut off.
    url_timeout_s: float = 10.0
    # Fetch image URLs from loopback, private and link-local addresses too (images on your own network); off:
    # refused, so a catalog cannot make the indexer call internal services (SSRF).
    allow_private_urls: bool = False
    # Directory relative image paths resolve against; None: the catalog file's directory. Paths may not leave it.
    image_root: Path | None = None
    # Size and pixel limits for images (decompression bombs are refused before decoding).
    limits: ImageLimits = field(default_factory=ImageLimits)
    # Embed with ONNX Runtime (exported once and cached); False: PyTorch eager.
    onnx: bool = True
    # Reduced-precision ONNX image encoder ('int8' on CPU, 'fp16' on GPU), used only if it passes min_recall.
    quantize: str | None = None
    # Acceptance threshold of a quantised encoder: recall@10 of its retrieval against fp32's.
    min_recall: float = 0.99
    # Catalog images (the first decodable ones) used for that acceptance check.
    eval_images: int = 256
    # ONNX export cache; None: $COINAGE_ONNX_CACHE or var/onnx.
    onnx_cache: Path | None = None
    # Encoder threads (torch and onnxruntime intra-op); None: the runtime's default.
    threads: int | None = None
    # Device for the PyTorch backbone and ONNX provider choice: 'auto', 'cpu' or 'cuda'.
    device: str = "auto"
    # Rejected rows, one JSON object a line (row, id, reason); None: var/indexer/rejects-<collection>-<time>.jsonl.
    rejects_path: Path | None = None
    # index: after a complete run, delete points whose id no longer appears in the catalog.
    prune: bool = False
    # index --prune: refuse to delete more than this fraction of the live collection's points in one run (a
    # truncated or wrong catalog would otherwise empty the index searches use); `force` overrides it.
    max_prune_fraction: float = 0.5
    # index: run even when the catalog yields no usable row, and prune past max_prune_fraction (deliberately).
    force: bool = False
    # reindex: do not switch the alias when more than this fraction of the rows was rejected.
    max_reject_fraction: float = 0.2
    # reindex: keep the previous collection after the switch (default: drop it).
    keep_old: bool = False
    # Show a tqdm progress bar on stderr.
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.catalog = Path(self.catalog)
        if self.image_root is not None:
            self.image_root = Path(self.image_root)
        if self.rejects_path is not None:
            self.rejects_path = Path(self.rejects_path)
        if self.onnx_cache is not None:
            self.onnx_cache = Path(self.onnx_cache)
        for name in ("batch_size", "workers", "eval_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.ray_workers < 0:
            raise ValueError(f"IndexerConfig.ray_workers must be >= 0 (0: in process), got {self.ray_workers}")
        if self.ray_workers and not self.onnx:
            raise ValueError("IndexerConfig.ray_workers needs onnx=True (the Ray embed actors run ONNX Runtime); "
                             "drop --no-onnx or --workers")
        if self.quantize is not None and self.quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"IndexerConfig.quantize={self.quantize!r}: use one of {QUANTIZE_CHOICES} or None")
        if self.quantize is not None and not self.onnx:
            raise ValueError("IndexerConfig.quantize needs onnx=True (quantised encoders are ONNX variants); "
                             "drop --quantize or --no-onnx")
        for name in ("max_reject_fraction", "max_prune_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"IndexerConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.url_timeout_s > 0:
            raise ValueError(f"IndexerConfig.url_timeout_s must be > 0 seconds, got {self.url_timeout_s}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"IndexerConfig.device={self.device!r}: use 'auto', 'cpu' or 'cuda'")
