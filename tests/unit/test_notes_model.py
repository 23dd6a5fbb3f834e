"""Task ``notes``: public tokenizer and base, GPT-2 full/LoRA states, DP-SGD, scores, bytes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.serde import array_record_to_proto, recorddict_to_proto

from privfed.config import config_from_dict
from privfed.federated.client import count_bytes
from privfed.tasks import get_task
from privfed.tasks.notes.dataset import NotesDataset, encode_notes, pad_batch, per_example_lm_loss
from privfed.tasks.notes.generate import public_corpus
from privfed.tasks.notes.metrics import Continuation, greedy_continue, text_scores
from privfed.tasks.notes.model import BASE_DIGEST, build_notes_model
from privfed.tasks.notes.public import (
    EOS,
    load_public_assets,
    state_digest,
)
from privfed.training import DPSettings, train_local_pass
from tests.conftest import raw_params


def _cfg(**notes: object):
    raw = raw_params()
    raw["base"]["task"] = "notes"
    raw["profiles"]["tiny"]["model"]["notes"] = {
        **raw["profiles"]["tiny"]["model"]["notes"],
        **notes,
    }
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def cfg():
    return _cfg()


@pytest.fixture(scope="module")
def task(cfg):
    return get_task("notes", cfg)


@pytest.fixture(scope="module")
def dataset(cfg, task) -> NotesDataset:
    texts = public_corpus(seed=7, n_notes=24)  # not the pretraining seed: unseen notes
    assets = task.assets()
    ids = encode_notes(
        assets.tokenizer, texts, max_length=cfg.model.notes.max_length, eos_id=assets.eos_id
    )
    return NotesDataset(
        ids,
        pad_id=assets.pad_id,
        note_ids=[f"n{i}" for i in range(len(ids))],
        hospitals=["hospital_1"] * len(ids),
        width=cfg.model.notes.max_length,
    )


def test_tokenizer_round_trips_notes_byte_for_byte(task, cfg):
    # Prepare
    tokenizer = task.assets().tokenizer
    texts = public_corpus(seed=3, n_notes=5) + ["BP 132/84, Na+ 138 mmol/L; naïve µg — ok"]
    # Execute
    decoded = [tokenizer.decode(tokenizer.encode(t).ids) for t in texts]
    # Assert: byte-level BPE is lossless, even for characters the corpus never had
    assert decoded == texts
    assert tokenizer.token_to_id(EOS) == 0
    assert tokenizer.get_vocab_size() <= cfg.model.notes.vocab_size


def test_a_process_on_another_build_is_refused_in_both_modes(cfg, tmp_path, monkeypatch):
    """Hugging Face's BPE trainer breaks ties in a per-process order, so two processes that
    each train the tokenizer can differ: every process must share one build, and a model
    made from another build must not load (its token ids would mean other words)."""
    # Prepare: the session's build, and another tokenizer and base built in an empty cache
    from privfed.tasks.notes import public

    cached = load_public_assets(cfg.model.notes)
    monkeypatch.setenv("PRIVFED_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(public, "_LOADED", {})
    other = load_public_assets(cfg.model.notes.model_copy(update={"vocab_size": 380}))
    assert other.source.startswith(str(tmp_path)) and other.digest == state_digest(other.state_dict)
    for mode in ("full", "lora"):
        mine = build_notes_model(cfg.model.notes, cached, mode=mode)
        theirs = build_notes_model(cfg.model.notes, other, mode=mode).state_dict()
        # Execute / Assert
        with pytest.raises((ValueError, RuntimeError)):
            mine.load_state_dict(theirs)
        mine.load_state_dict(build_notes_model(cfg.model.notes, cached, mode=mode).state_dict())


def test_lora_state_holds_only_adapters_and_the_base_digest(cfg, task):
    # Prepare
    lora = build_notes_model(cfg.model.notes, task.assets(), mode="lora")
    full = build_notes_model(cfg.model.notes, task.assets(), mode="full")
    # Execute
    lora_state, full_state = lora.state_dict(), full.state_dict()
    # Assert: per layer, A and B of c_attn and attn.c_proj; nothing of the frozen base
    layers = cfg.model.notes.n_layer
    adapters = [k for k in lora_state if k != BASE_DIGEST]
    assert len(adapters) == 4 * layers
    assert all(".lora_A." in k or ".lora_B." in k for k in adapters)
    assert all(".attn.c_attn." in k or ".attn.c_proj." in k for k in adapters)
    assert not any("mlp" in k or "wte" in k or "ln_" in k for k in lora_state)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert set(adapters) == trainable
    # full mode sends every weight once (the output layer is tied to the token embedding),
    # and the digest of the build it started from
    assert BASE_DIGEST in full_state
    assert not any(k.endswith("lm_head.weight") for k in full_state)
    n_full = sum(v.numel() for k, v in full_state.items() if k != BASE_DIGEST)
    assert n_full == sum(p.numel() for p in full.parameters())  # tied tensor counted once
    assert sum(lora_state[k].numel() for k in adapters) * 10 < n_full


def test_adapters_from_another_base_or_mode_are_refused(cfg, task):
    # Prepare
    settings = cfg.model.notes
    model = build_notes_model(settings, task.assets(), mode="lora")
    state = model.state_dict()
    other_base = dict(state)
    other_base[BASE_DIGEST] = state[BASE_DIGEST] + 1
    # Execute / Assert
    with pytest.raises(ValueError, match="different base model or tokenizer"):
        model.load_state_dict(other_base)
    full_state = build_notes_model(settings, task.assets(), mode="full").state_dict()
    with pytest.raises(RuntimeError, match="model.notes.mode"):
        model.load_state_dict(full_state)
    model.load_state_dict(state)  # its own state loads
    # as FedAvg returns it: every array averaged in float64, the digest included
    averaged = {k: v.double() * 0.3 + v.double() * 0.3 + v.double() * 0.4 for k, v in state.items()}
    model.load_state_dict(averaged)


def test_each_notes_loss_ignores_padding_and_the_rest_of_the_batch(cfg, task, dataset):
    # Prepare
    model = task.build_model().eval()
    ids = dataset.token_ids[:3]
    # Execute
    with torch.no_grad():
        together = per_example_lm_loss(model(*pad_batch(ids, 1)), *pad_batch(ids, 1))
        alone = [
            float(per_example_lm_loss(model(*pad_batch([x], 1)), *pad_batch([x], 1))) for x in ids
        ]
    # Assert: what DP-SGD's per-sample clipping needs
    assert together.tolist() == pytest.approx(alone, abs=1e-5)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_opacus_per_sample_gradients_match_one_note_at_a_time(cfg, task, dataset, mode):
    """Opacus's per-note gradients (the clipping input) equal each note's own backward pass.

    In full mode this covers the position-embedding work-around: GPT-2's own batch-1
    ``position_ids`` would break per-sample gradients of ``wpe``.
    """
    from opacus import GradSampleModule

    # Prepare
    model = build_notes_model(cfg.model.notes, task.assets(), mode=mode)
    batch = [t[:3] for t in dataset.tensors]
    wrapped = GradSampleModule(model)
    # Execute
    task.loss(wrapped, batch).backward()
    per_sample = {
        n: p.grad_sample.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad
    }
    wrapped._close()
    # Assert
    for i in range(3):
        model.zero_grad()
        task.loss(model, [t[i : i + 1] for t in batch]).backward()
        for name, param in model.named_parameters():
            if param.requires_grad:
                # loss_reduction="mean": Opacus undoes the batch mean, so this is note i's own
                got = per_sample["_module." + name][i]
                assert torch.allclose(got, param.grad, atol=1e-5), name
    assert any("wpe" in n for n in per_sample) == (mode == "full")


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_dp_sgd_trains_both_modes_and_keeps_the_base_frozen(cfg, task, dataset, mode):
    # Prepare
    model = build_notes_model(cfg.model.notes, task.assets(), mode=mode)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sent_before = {k: v.clone() for k, v in model.state_dict().items()}
    # Execute
    result = train_local_pass(
        task,
        model,
        dataset,
        epochs=1,
        batch_size=8,
        lr=1e-2,
        dp=DPSettings(noise_multiplier=1.0, max_grad_norm=1.0),
    )
    # Assert
    assert result.history and result.history[0][0] == 1.0  # accountant saw DP-SGD steps
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, base_before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    state = model.state_dict()
    assert set(state) == set(sent_before)
    assert any(not torch.equal(state[k], sent_before[k]) for k in state if k != BASE_DIGEST)


def test_scores_are_perfect_on_an_exact_continuation():
    items = [
        Continuation("n1", "h", "p", "metoprolol 25 mg PO BID", "metoprolol 25 mg PO BID"),
        Continuation("n2", "h", "p", "troponin 0.04 ng/mL today", "troponin 0.04 ng/mL today"),
    ]
    wrong = [
        Continuation("n1", "h", "p", "metoprolol 25 mg PO BID", "seizure free since march"),
    ]
    assert text_scores(items)["bleu"] == pytest.approx(100.0)
    assert text_scores(items)["rouge_l"] == pytest.approx(1.0)
    assert text_scores(wrong)["rouge_l"] == 0.0
    assert text_scores([])["generated_notes"] == 0


def test_greedy_continuation_stops_at_end_of_text():
    class Script(torch.nn.Module):
        """Predicts token 5, 6, then end of text (0), whatever the input."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            step = ids.shape[1] - 2
            logits = torch.zeros(ids.shape[0], ids.shape[1], 10)
            logits[:, -1, [5, 6, 0][min(step, 2)]] = 1.0
            return logits

    out = greedy_continue(Script(), torch.ones(2, 2, dtype=torch.long), new_tokens=8, eos_id=0)
    assert out == [[5, 6], [5, 6]]


def test_evaluate_reports_perplexity_as_exp_of_the_token_loss(cfg, task, dataset):
    model = task.build_model()
    scores = task.evaluate(model, dataset)
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]))
    assert scores["generated_notes"] == min(cfg.model.notes.generation_notes, len(dataset))
    assert 0.0 <= scores["rouge_l"] <= 1.0 and 0.0 <= scores["bleu"] <= 100.0
    losses = task.example_losses(model, dataset)
    assert losses.shape == (len(dataset),) and np.isfinite(losses).all()


def test_byte_counts_are_the_serialized_message_sizes(cfg, task):
    # Prepare: a LoRA and a full reply as train_reply builds them
    def reply(mode: str) -> RecordDict:
        model = build_notes_model(cfg.model.notes, task.assets(), mode=mode)
        return RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"num-examples": 10, "train_loss": 1.0}),
                "ident": ConfigRecord({"hospital": "hospital_1"}),
            }
        )

    received = RecordDict({"config": ConfigRecord({"privfed-config": json.dumps({"a": 1})})})
    lora, full = reply("lora"), reply("full")
    lora_size = recorddict_to_proto(lora).ByteSize()
    lora_update = array_record_to_proto(lora["arrays"]).ByteSize()
    # Execute
    sizes = count_bytes(received, lora, hospital="hospital_1", server_round=1)
    full_sizes = count_bytes(received, full, hospital="hospital_1", server_round=1)
    # Assert
    assert sizes["bytes_sent"] == lora_size
    assert sizes["bytes_update"] == lora_update
    assert sizes["bytes_received"] == recorddict_to_proto(received).ByteSize()
    assert lora["metrics"]["bytes_sent"] == lora_size
    n_lora = sum(a.numpy().size for a in lora["arrays"].values())
    assert lora_update >= 4 * n_lora  # float32 values, plus names and shapes
    assert full_sizes["bytes_update"] > 10 * sizes["bytes_update"]


def test_ffa_lora_sends_only_b_and_every_hospital_builds_the_same_adapters() -> None:
    # Prepare: FFA-LoRA (A frozen at its public-seed init)
    cfg = _cfg(lora_freeze_a=True)
    task = get_task("notes", cfg)
    # Execute: two "hospitals" build the model independently, with different global RNG states
    torch.manual_seed(1)
    one = task.build_model()
    torch.manual_seed(2)
    two = task.build_model()
    # Assert: only B travels; A is identical everywhere and covered by the digest
    state = one.state_dict()
    adapters = [k for k in state if k != BASE_DIGEST]
    assert adapters and all(".lora_B." in k for k in adapters)
    a_one = {n: p for n, p in one.named_parameters() if ".lora_A." in n}
    a_two = dict(two.named_parameters())
    assert a_one and all(torch.equal(p, a_two[n]) for n, p in a_one.items())
    assert torch.equal(one.base_digest, two.base_digest)
    plain = _cfg()
    assert not torch.equal(one.base_digest, get_task("notes", plain).build_model().base_digest)
    two.load_state_dict(state)


def test_each_mode_trains_with_its_own_step_size() -> None:
    """LoRA's fresh adapters take ``lora_lr``; full fine-tuning of the base takes ``lr``."""
    for mode, expected in (("lora", 0.02), ("full", 0.0007)):
        cfg = _cfg(mode=mode, lr=0.0007, lora_lr=0.02)
        assert get_task("notes", cfg).train_lr() == expected
