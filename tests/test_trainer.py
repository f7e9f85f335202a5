"""The trainer on the tiny-random backbone: loss terms per method, projection, frozen backbone, CE on a
separable toy case, checkpoint resume, cancel and failure semantics, the diffusers round trip."""
import threading
from dataclasses import replace

import pytest
import torch

from engine.concepts import ConceptRegistry
from engine.text import TextEncoder
from engine.tokens import load_token
from trainer import HeldOut, TrainConfig, TrainingError, TrainRequest, request_from_registry, train_concept
from trainer.subspace import Subspace, initial_vectors, word_embedding

ATTRS = ["red", "old", "worn", "bright", "dark", "pink"]
FAST = TrainConfig(steps=3, batch_size=2, generated_negatives=2, negatives="catalog", samples=False,
                   checkpoint_every=0, lr=1e-2)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def blobs(colour, n, seed):
    """Toy photos: a coloured square on noise, 32 px (tensors in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.rand(3, 32, 32, generator=g) * 0.3
        x[:, 8:24, 8:24] = torch.tensor(colour).view(3, 1, 1)
        out.append(x)
    return out


POS, NEG = blobs((0.9, 0.1, 0.1), 4, 0), blobs((0.1, 0.2, 0.9), 4, 1)


def request(tmp_path, tiny, method="ti+ce+proj", **config):
    return TrainRequest("<aurora>", "dress", POS, backbone=tiny, attributes=ATTRS,
                        config=replace(FAST, method=method, **config), catalog_negatives=NEG,
                        out_dir=tmp_path / method)


@pytest.mark.parametrize("method,present,absent", [
    ("prompt-tuning", {"ce"}, {"sd"}),
    ("textual-inversion", {"sd"}, {"ce"}),
    ("ti+ce", {"sd", "ce"}, set()),
    ("ti+ce+proj", {"sd", "ce"}, set()),
])
def test_each_method_has_exactly_its_loss_terms(tmp_path, tiny, method, present, absent):
    result = train_concept(request(tmp_path, tiny, method, steps=2))
    assert result.status == "ready" and result.steps_done == 2 and len(result.losses) == 2
    for record in result.losses:
        assert present <= set(record) and not (absent & set(record)) and "anchor" not in record
        assert record["loss"] == pytest.approx(sum(w * record[k] for k, w in (("sd", 1.0), ("ce", 0.1)) if k in record),
                                               rel=1e-4)
    negatives = result.metrics["negatives"]
    assert negatives == ({"generated": 0, "catalog": 0} if method == "textual-inversion"
                         else {"generated": 0, "catalog": 4})
    token = load_token(result.token_path, backbone_id=tiny.id, width=tiny.text_width)
    assert token.meta.method == method and token.meta.attributes == ATTRS
    assert (token.meta.basis_id is not None) == (method == "ti+ce+proj")


def test_projection_keeps_the_token_in_the_attribute_subspace(tmp_path, tiny):
    sub = Subspace.from_words(tiny, ATTRS, rank=None)
    assert sub.rank == len(ATTRS) - 1
    torch.testing.assert_close(sub.basis @ sub.basis.T, torch.eye(sub.rank), atol=1e-5, rtol=0)
    projected = train_concept(request(tmp_path, tiny, "ti+ce+proj", lr=0.05))
    free = train_concept(request(tmp_path, tiny, "ti+ce", lr=0.05))
    scale = projected.token.vectors.norm(dim=-1).max()
    assert float(sub.distance(projected.token.vectors).max()) < 1e-5 * float(scale)
    assert float(sub.distance(free.token.vectors).max()) > 1e-3  # without projection it leaves the subspace
    assert projected.metrics["subspace_distance"] < 1e-5 and projected.metrics["rank"] == 5


def test_only_the_token_rows_change(tmp_path, tiny):
    modules = {"clip": tiny.clip, "unet": tiny.unet, "vae": tiny.vae}
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
    result = train_concept(request(tmp_path, tiny, "ti+ce+proj", anchor_weight=0.5))
    assert "anchor" in result.losses[-1]
    for name, module in modules.items():
        after = module.state_dict()
        assert all(torch.equal(before[name][k], after[k]) for k in after), name
        assert not any(p.requires_grad or p.grad is not None for p in module.parameters()), name
        assert not module.training, name
    assert not torch.equal(result.token.vectors, initial_vectors(tiny, "dress", 4))


def test_classification_lowers_the_ce_loss_on_a_separable_toy_case(tmp_path, tiny):
    result = train_concept(request(tmp_path, tiny, "prompt-tuning", steps=25, lr=0.005))
    ce = [r["ce"] for r in result.losses]
    assert ce[-1] < 0.6 * ce[0], ce
    assert result.metrics["final_losses"]["ce"] == ce[-1]


def test_resume_after_a_kill_gives_the_same_token(tmp_path, tiny):
    cfg = dict(steps=4, checkpoint_every=2)
    straight = train_concept(request(tmp_path / "a", tiny, "ti+ce+proj", **cfg))

    class Killed(Exception):
        pass

    def kill_at_step_3(event):
        if event["phase"] == "train" and event["step"] == 3:
            raise Killed("simulated kill")  # step 3 is lost; the last checkpoint is step 2

    killed = request(tmp_path / "b", tiny, "ti+ce+proj", **cfg)
    with pytest.raises(Killed):
        train_concept(killed, progress=kill_at_step_3)
    assert (killed.out_dir / "work" / "checkpoint.pt").is_file()
    with pytest.raises(TrainingError, match="different request"):  # a changed request does not resume silently
        train_concept(replace(killed, config=replace(killed.config, lr=0.5)))
    resumed = train_concept(killed)
    assert resumed.metrics["resumed_at_step"] == 2
    assert torch.equal(resumed.token.vectors, straight.token.vectors)
    assert [r["loss"] for r in resumed.losses] == [r["loss"] for r in straight.losses]
    assert not (killed.out_dir / "work").exists()  # checkpoints go once the version is complete


def registered(tmp_path, tiny):
    root = tmp_path / "registry"
    ConceptRegistry(root).register("<aurora>", "dress", [_png(x) for x in POS], ATTRS, "ti+ce+proj", 2)
    return root, request_from_registry(root, "<aurora>", backbone=tiny, config=FAST, catalog_negatives=NEG)


def _png(x):
    import io

    from trainer.data import to_pil

    buf = io.BytesIO()
    to_pil(x).save(buf, format="PNG")
    return buf.getvalue()


def test_cancel_stops_between_steps_and_leaves_the_active_token(tmp_path, tiny):
    root, req = registered(tmp_path, tiny)
    reg = ConceptRegistry(root)
    first = train_concept(req)
    assert first.activated and reg.get("<aurora>").active_version == first.version == "v0001"
    live = reg.active_tokens(tiny.id, tiny.text_width).get("<aurora>").vectors.clone()

    cancel, steps = threading.Event(), []

    def progress(event):
        if event["phase"] == "train":
            steps.append(event["step"])
            assert {"total", "losses", "eta_s", "elapsed_s"} <= set(event)
            if event["step"] == 2:
                cancel.set()

    retrain = replace(req, config=replace(req.config, steps=5, seed=1))
    result = train_concept(retrain, progress=progress, cancel=cancel)
    assert result.status == "cancelled" and result.steps_done == 2 and steps == [1, 2]
    c = reg.get("<aurora>")
    assert (c.status, c.active_version) == ("cancelled", "v0001")
    assert reg.version("<aurora>", "v0002").status == "cancelled"
    assert torch.equal(reg.active_tokens(tiny.id, tiny.text_width).get("<aurora>").vectors, live)
    resumed = train_concept(retrain)  # picks up the cancelled version where it stopped
    assert (resumed.version, resumed.metrics["resumed_at_step"]) == ("v0002", 2)
    assert reg.get("<aurora>").active_version == "v0002"


@pytest.mark.parametrize("cancel_seen", [True, False])  # whether the worker relayed the delete's cancel in time
def test_a_concept_deleted_while_it_trains_stops_the_run_and_leaves_no_files(tmp_path, tiny, cancel_seen):
    root, req = registered(tmp_path, tiny)
    reg = ConceptRegistry(root)
    cancel = threading.Event()

    def progress(event):
        if event["phase"] == "train" and event["step"] == 1:
            reg.delete("<aurora>")  # what the admin's delete does (web/concepts_admin.py), from another process
            if cancel_seen:
                cancel.set()

    result = train_concept(replace(req, config=replace(req.config, steps=4, checkpoint_every=1)),
                           progress=progress, cancel=cancel)
    assert result.status == "cancelled" and result.concept_deleted and result.steps_done == 1
    assert "<aurora> was deleted while it trained" in result.message and "resume" not in result.message
    assert not reg.concept_dir("<aurora>").exists(), sorted(reg.concept_dir("<aurora>").rglob("*"))
    assert "<aurora>" not in reg


def test_a_failed_job_leaves_live_tokens_untouched(tmp_path, tiny):
    root, req = registered(tmp_path, tiny)
    reg = ConceptRegistry(root)
    train_concept(req)
    live = reg.active_tokens(tiny.id, tiny.text_width).get("<aurora>").vectors.clone()

    def explode(event):
        if event["phase"] == "train":
            raise RuntimeError("worker lost its GPU")

    with pytest.raises(RuntimeError, match="lost its GPU"):
        train_concept(replace(req, config=replace(req.config, seed=7)), progress=explode)
    c = reg.get("<aurora>")
    assert (c.status, c.active_version) == ("failed", "v0001") and "lost its GPU" in c.error
    assert torch.equal(reg.active_tokens(tiny.id, tiny.text_width).get("<aurora>").vectors, live)
    assert not (reg.version_dir("<aurora>", "v0002") / "token.safetensors").exists()


def test_saved_token_loads_into_diffusers_with_equal_conditioning(tmp_path, tiny, encoder):
    from engine.hf_convert import to_diffusers_pipeline

    result = train_concept(request(tmp_path, tiny, "ti+ce+proj", num_vectors=3))
    pipe = to_diffusers_pipeline(tiny, tmp_path / "tok")
    pipe.load_textual_inversion(str(result.token_path))
    prompts = ["a photo of a <aurora> dress on a beach", "<aurora> dress"]
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
    ours = encoder.encode(prompts, {"<aurora>": result.token.vectors}).seq
    assert (ours - theirs).norm() / theirs.norm() < 1e-5


def test_outputs_features_diagnostics_and_samples(tmp_path, tiny):
    from safetensors.torch import load_file

    from engine.images import ImageEncoder
    from trainer.data import to_pil

    held = HeldOut(positives=blobs((0.9, 0.1, 0.1), 3, 5), parent=blobs((0.1, 0.2, 0.9), 3, 6),
                   others=blobs((0.1, 0.9, 0.1), 3, 7))
    req = replace(request(tmp_path, tiny, "ti+ce+proj"), attributes=None, heldout=held,
                  config=replace(FAST, samples=True, num_attributes=5, negatives="both", ce_parent="attributes",
                                 ce_bias=True, sample_contexts=("", "on a beach")))
    result = train_concept(req)
    folder = result.directory
    feats = load_file(str(folder / "features.safetensors"))["features"]
    expected = ImageEncoder(tiny).encode_pil([to_pil(x) for x in POS])
    assert feats.dtype == torch.float32 and feats.shape == (4, tiny.embed_dim)
    torch.testing.assert_close(feats, expected)
    import json

    diag = json.loads((folder / "diagnostics.json").read_text())
    m = diag["metrics"]
    for key in ("auc_target_vs_parent", "auc_target_vs_other", "auc_parent_vs_other", "clf_auc_target_vs_parent",
                "clf_auc_target_vs_other", "token_norm",
                "word_norm_mean", "word_norm_std", "cos_attributes_mean", "seconds_per_step"):
        assert key in m, key
    assert len(diag["attributes"]) == 5 and set(m["cos_attributes"]) == set(diag["attributes"])
    assert diag["loss_curves"]["step"] == [1, 2, 3] and len(diag["loss_curves"]["sd"]) == 3
    from PIL import Image

    with Image.open(folder / "samples.png") as grid:
        assert grid.size == (2 * tiny.config.image_size, 2 * tiny.config.image_size)
    assert result.token.meta.attributes == diag["attributes"]
    assert m["negatives"] == {"generated": 2, "catalog": 4}


def test_requests_are_checked_at_the_boundary(tmp_path, tiny):
    with pytest.raises(TrainingError, match="3 to 50 images"):
        train_concept(replace(request(tmp_path, tiny), images=POS[:2]))
    with pytest.raises(TrainingError, match="at least 2 distinct attribute words"):
        train_concept(replace(request(tmp_path, tiny), attributes=["red"]))
    with pytest.raises(TrainingError, match="at least 2 distinct attribute words; got 1 .*red"):
        train_concept(replace(request(tmp_path, tiny), attributes=["red", "Red", " red "]))
    with pytest.raises(TrainingError, match="rank 3, which needs at least 4 distinct"):
        train_concept(replace(request(tmp_path, tiny, rank=3), attributes=["red", "old", "worn", "RED"]))
    with pytest.raises(TrainingError, match="is its own parent word"):
        train_concept(replace(request(tmp_path, tiny), placeholder="<dress>", parent=" DRESS"))
    with pytest.raises(TrainingError, match="method 'dreambooth' is not one of"):
        TrainConfig(method="dreambooth")
    with pytest.raises(TrainingError, match="lambda_ce is 0"):
        TrainConfig(method="ti+ce", lambda_ce=0)
    with pytest.raises(TrainingError, match="catalog images"):
        train_concept(replace(request(tmp_path, tiny, negatives="catalog"), catalog_negatives=()))
    with pytest.raises(TrainingError, match="exactly one of registry"):
        train_concept(replace(request(tmp_path, tiny), out_dir=None))


def test_a_parent_word_the_tokenizer_splits_trains_with_a_warning_in_the_log_progress_and_metrics(tmp_path, tiny,
                                                                                                   caplog):
    events = []
    result = train_concept(replace(request(tmp_path, tiny, "prompt-tuning", steps=1), parent="xqzvb"),
                           progress=events.append)
    assert result.status == "ready"
    prepare = next(e for e in events if e["phase"] == "prepare")
    assert len(prepare["warnings"]) == 1 and "'xqzvb' is spelled with 4 sub-word pieces" in prepare["warnings"][0]
    assert result.metrics["warnings"] == prepare["warnings"]
    assert any("xqzvb" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_best_intercept_minimises_the_balanced_bce():
    from trainer.loop import balanced_bce, best_intercept

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(12, generator=g) * 3 + 4  # every score positive: a miscalibrated threshold
    labels = (torch.arange(12) < 4).float()
    b = best_intercept(scores, labels)
    loss = balanced_bce(scores + b, labels)
    for delta in (-0.05, 0.05):
        assert loss <= balanced_bce(scores + b + delta, labels)
    assert loss < balanced_bce(scores, labels)


def test_auc_counts_ties_half_and_orders_scores():
    from trainer.diagnostics import auc_roc, recognition_aucs

    assert auc_roc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auc_roc(torch.tensor([1.0]), torch.tensor([1.0, 2.0])) == 0.25
    text, parent = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    pos, par, oth = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.7, 0.7]]), torch.tensor([[0.0, 1.0]])
    aucs = recognition_aucs(text, pos, par, oth, parent_text=parent)
    assert aucs == {"auc_target_vs_parent": 1.0, "auc_target_vs_other": 1.0, "auc_parent_vs_other": 1.0,
                    "clf_auc_target_vs_parent": 1.0, "clf_auc_target_vs_other": 1.0}


def test_caption_initialisation_spreads_words_over_the_vectors(tiny):
    v = initial_vectors(tiny, "red striped dress", 4)
    words = [word_embedding(tiny, w) for w in ("red", "striped", "dress")]
    torch.testing.assert_close(v[0], words[0])
    torch.testing.assert_close(v[3], words[0])  # cycles when there are fewer pieces than vectors
    one = initial_vectors(tiny, "dress", 3)
    assert all(torch.equal(row, words[2]) for row in one)


def test_encoder_is_not_modified_by_training(tmp_path, tiny):
    """A search thread's encoder sees the same features before and after a training job."""
    enc = TextEncoder(tiny)
    before = enc.encode(["a red dress"]).pooled.clone()
    train_concept(request(tmp_path, tiny, "ti+ce", steps=1))
    assert torch.equal(enc.encode(["a red dress"]).pooled, before)
