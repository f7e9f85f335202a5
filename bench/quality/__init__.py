"""Quality benchmark: the paper's retrieval, recognition, lambda_CE and norm tables in the demo world.

    coinage bench quality [--world-seed 0] [--concepts 20] [--seeds 0 1 2] [--steps 300] [--jobs 2]
    coinage bench quality --quick            # CI smoke run: small sizes, same code path, same output format

Protocol (docs/method.md "Retrieval evaluation", PerVL-like), from a world seed:
- concepts: held-out products of the world (round-robin over the categories), 5 training photos each
  (the world's concept split), trained as custom tokens by every method for each training seed;
- queries: one caption per query photo of a concept, "a photo of a <p0042> dress on a brick wall"
  (world.captions.query_caption: the context is named, the product only by "<token> <parent>");
- gallery: every photo of the world except the held-out products' training photos (2,320 photos for
  the default world), so each query's target sits among its own product in other contexts, look-alike
  products of its family, the rest of its category and every other category;
- ranking: exact cosine similarity in memory (numpy) against the features the vector store holds
  (engine.images.ImageEncoder, the PyTorch twin of the indexer's fp32 ONNX encoder); full ranks, so
  MRR is exact (a store search returns at most a page of results).

Query vectors come from the engine's QueryService (the same code that serves search): text only and
text + average image are its baselines (`text_only_vector`, `text_image_vector`), a trained token is
`composed_vectors(query, [1.0])`, and GAIR is `choose_weight` (paper Algorithm 1) then q_pool(w*).
Training goes through trainer.ablation.train_world_token (train_concept on a world concept), which also
yields the recognition AUCs (paper Table 3 protocol) and the norm diagnostics of every token.

The report (JSON + markdown) holds: MRR mean and std over training seeds with recall@1/5/10 and training
time per method; recognition AUCs; the lambda_CE ablation (paper Table 1); norms; and diagnostics that say
how hard the world is (caption oracle, image-only query, fixed-w curves, GAIR's choices, distractor counts,
whether the backbone saw the concepts during its own training).

The package: protocol.py (config, rows, concepts, queries, gallery), training.py (tokens in a process pool),
evaluation.py (rankings, table rows, diagnostics, summaries), report.py (the run, its JSON + markdown, the
command line).
"""
from .evaluation import (ERROR_KINDS, NORMS, PER_SEED_KEYS, RECOGNITION, Ranking, Retrieval, diagnostics, error_kind,
                         error_table, evaluate_all, gair_diagnostics, lambda_ablation, ranking, ranks_of,
                         retrieval_metrics, summarise_fixed_w, summarise_retrieval, summarise_tokens, targets)
from .protocol import (GAIR_ROWS, OURS, PAPER_MRR, QUICK, RECALL_AT, ROW_METHOD, ROWS, TRAINED, Protocol, QualityConfig,
                       Query, backbone_exposure, build_protocol, log, pick_concepts, replay_training_pairs)
from .report import RESULTS, Setup, add_arguments, command_line, config_from_args, main, run, run_command, setup
from .training import Run, Task, backbone_key, cache_path, plan, run_jobs, train_all, train_config, workers

__all__ = ["ERROR_KINDS", "GAIR_ROWS", "NORMS", "OURS", "PAPER_MRR", "PER_SEED_KEYS", "QUICK", "RECALL_AT",
           "RECOGNITION", "RESULTS", "ROWS", "ROW_METHOD", "TRAINED", "Protocol", "QualityConfig", "Query", "Ranking",
           "Retrieval", "Run", "Setup", "Task", "add_arguments", "backbone_exposure", "backbone_key", "build_protocol",
           "cache_path", "command_line", "config_from_args", "diagnostics", "error_kind", "error_table", "evaluate_all",
           "gair_diagnostics", "lambda_ablation", "log", "main", "pick_concepts", "plan", "ranking", "ranks_of",
           "replay_training_pairs", "retrieval_metrics", "run", "run_command", "run_jobs", "setup", "summarise_fixed_w",
           "summarise_retrieval", "summarise_tokens", "targets", "train_all", "train_config", "workers"]
