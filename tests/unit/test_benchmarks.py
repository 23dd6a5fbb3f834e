"""The benchmark harness's own logic (no timing assertions: benchmarks measure, tests check)."""

from __future__ import annotations

import json
import math

import pytest
from benchmarks.__main__ import BENCHMARKS, main
from benchmarks.common import fit_fixed_proportional, median_spread
from benchmarks.overhead import round_breakdown
from benchmarks.profiling import summarize_collapsed
from benchmarks.report import refresh
from benchmarks.secure_aggregation import summarize


def test_fit_recovers_fixed_latency_and_factor() -> None:
    # Prepare: y = 3 + 1.2 x exactly (3 s per round, 20 % slower work)
    x = [1.0, 2.0, 4.0]
    y = [4.2, 5.4, 7.8]
    # Execute
    fit = fit_fixed_proportional(x, y)
    # Assert
    assert fit["fixed_s"] == pytest.approx(3.0)
    assert fit["factor"] == pytest.approx(1.2)
    assert fit["r2"] == pytest.approx(1.0)


def test_fit_least_squares_on_noisy_points() -> None:
    # x = 0, 2; y = 1, 3 and 2, 4 at each: mean line through (0, 1.5) and (2, 3.5)
    fit = fit_fixed_proportional([0.0, 0.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0])
    assert fit["fixed_s"] == pytest.approx(1.5)
    assert fit["factor"] == pytest.approx(1.0)
    # residuals ±0.5 at each of 4 points: 1 - 1.0 / 5.0
    assert fit["r2"] == pytest.approx(0.8)


def test_fit_needs_two_workload_sizes() -> None:
    with pytest.raises(ValueError, match="two or more distinct"):
        fit_fixed_proportional([2.0, 2.0], [1.0, 1.1])


def test_median_spread() -> None:
    assert median_spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert math.isnan(median_spread([])["median"])


def test_round_breakdown_takes_the_slowest_hospital_and_leaves_the_rest_to_transport() -> None:
    phases = {"load_s": 0.1, "deserialize_s": 0.01, "validate_s": 0.2, "serialize_s": 0.01}
    run = {
        "rounds": [
            {"round": 0, "train": {}},
            {
                "round": 1,
                "seconds": 5.0,
                "aggregate_seconds": 0.02,
                "train": {
                    "h1": {"seconds": {**phases, "train_s": 1.0}},
                    "h2": {"seconds": {**phases, "train_s": 2.0}},
                },
            },
        ]
    }
    b = round_breakdown(run)
    assert b["train_s"] == pytest.approx(2.0)
    assert b["aggregate_s"] == pytest.approx(0.02)
    # 5.0 - (0.1 + 0.01 + 0.2 + 2.0 + 0.01) - 0.02
    assert b["transport_and_polling_s"] == pytest.approx(2.66)
    assert b["rounds_s"] == pytest.approx(5.0)


def test_dispatcher_lists_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in BENCHMARKS:
        assert name in listed
    figures = {what.split(".")[0] for _, what in BENCHMARKS.values() if what[0].isdigit()}
    assert figures == {"1", "2", "3", "4", "5", "6"}


def test_dispatcher_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_pyspy_summary_counts_self_and_inclusive_samples() -> None:
    raw = (
        "main (a.py:1);loop (b.py:10);sleep (time.py:5) 6\n"
        "main (a.py:1);loop (b.py:12);pull (c.py:3) 2\n"
        "main (a.py:1);work (d.py:7) 2\n"
    )
    text = summarize_collapsed(raw)
    assert text.startswith("10 samples")
    assert " 60.0%  sleep (time.py:5)" in text
    assert " 80.0%  loop (b.py)" in text  # lines 10 and 12 are one function


def test_report_replaces_only_marked_tables() -> None:
    doc = (
        "intro\n<!-- results:scale -->\nold\n<!-- /results:scale -->\n"
        "<!-- results:x -->\nkeep\n<!-- /results:x -->\n"
    )
    out = refresh(doc, {"scale": "| new |\n"})
    assert "| new |\n<!-- /results:scale -->" in out
    assert "old" not in out
    assert "keep" in out


def test_report_nests_a_results_headings_under_the_section_that_holds_it() -> None:
    doc = (
        "## 12. Extraction\n```\n# not a heading\n```\n"
        "<!-- results:a -->\nold\n<!-- /results:a -->\n"
        "<!-- results:b -->\nold\n<!-- /results:b -->\n"
        "### 12.1 Detail\n<!-- results:c -->\nold\n<!-- /results:c -->\n"
    )
    table = "| t |\n\n## Evaluation settings\n\n### In-domain\n"
    out = refresh(doc, {"a": table, "b": table, "c": table})
    # both blocks of section 12 (the second after the first's nested headings) and the subsection's
    a, b, c = (out.split(f"<!-- results:{n} -->")[1] for n in "abc")
    assert "\n### Evaluation settings\n" in a and "\n#### In-domain\n" in a
    assert "\n### Evaluation settings\n" in b.split("<!-- /results:b")[0]
    assert "\n#### Evaluation settings\n" in c and "\n##### In-domain\n" in c
    assert "\n## Evaluation" not in out


def test_secure_aggregation_summary_slopes_bytes_and_ratios_seconds() -> None:
    # Prepare: 3 hospitals; runs of 2 and 4 rounds per variant; bytes grow 600 / 1200 per round
    stages = {"setup": 1.0, "share_keys": 1.0, "collect_masked_vectors": 4.0, "unmask": 0.5}
    runs = {
        "off": [
            {"rounds": 2, "per_round_s": [5.0, 5.0], "total_bytes": 2000},
            {"rounds": 4, "per_round_s": [5.0, 5.0, 5.0, 5.0], "total_bytes": 3200},
        ],
        "on": [
            {
                "rounds": 2,
                "per_round_s": [8.0, 8.0],
                "total_bytes": 3000,
                "secagg": [{"stages": stages}, {"stages": stages}],
            },
            {"rounds": 4, "per_round_s": [8.0] * 4, "total_bytes": 5400, "secagg": []},
        ],
    }
    # Execute
    s = summarize(runs, hospitals=3)
    # Assert: (3200 - 2000) / 2 / 3 = 200; (5400 - 3000) / 2 / 3 = 400
    assert s["off"]["bytes_per_round_per_hospital"] == pytest.approx(200.0)
    assert s["on"]["bytes_per_round_per_hospital"] == pytest.approx(400.0)
    assert s["bytes_ratio"] == pytest.approx(2.0)
    assert s["seconds_ratio"] == pytest.approx(8.0 / 5.0)
    assert s["on"]["stage_s"]["collect_masked_vectors"]["median"] == 4.0
    assert "stage_s" not in s["off"]


def test_notes_summary_ratios() -> None:
    from benchmarks.notes import summarize as notes_summary

    rows = {
        "full": {
            "centralized_tokens_per_s": 1000.0,
            "federated_tokens_per_s": 500.0,
            "bytes_sent": 4000.0,
            "federated_perplexity": 10.0,
        },
        "lora": {
            "centralized_tokens_per_s": 2000.0,
            "federated_tokens_per_s": 1500.0,
            "bytes_sent": 50.0,
            "federated_perplexity": 11.0,
        },
    }
    out = notes_summary(rows)
    assert out["full_federated_to_centralized_tokens_per_s"] == pytest.approx(0.5)
    assert out["lora_federated_to_centralized_tokens_per_s"] == pytest.approx(0.75)
    assert out["bytes_full_to_lora"] == pytest.approx(80.0)
    assert out["perplexity_lora_to_full"] == pytest.approx(1.1)


def test_privacy_utility_keeps_other_tasks_studies_through_json(tmp_path, monkeypatch) -> None:
    """A run of one task keeps the studies of others as written (ε = ∞ comes back as "inf")."""
    import benchmarks.privacy_utility as pu

    from privfed.io import write_json

    # Prepare: an earlier run's file with one study holding ∞ rows
    def study(task: str) -> dict:
        rows = {
            "public_only": {"epsilon": 0.0, "scores": [0.5]},
            "federated": {"epsilon": math.inf, "scores": [0.9, 0.8], "spent": [math.inf] * 2},
            "federated_dp ε=1": {"epsilon": 1.0, "scores": [0.7, 0.8], "spent": [0.99, 0.98]},
        }
        for row in rows.values():
            row["spread"] = pu.spread(row["scores"])
        return {"task": task, "metric": "m", "pooled_test_n": 3, "seeds": [1, 2], "rows": rows}

    monkeypatch.setattr(pu, "RESULTS", tmp_path)
    write_json(
        {"profile": "default", "studies": [study("old"), study("redo")]},
        tmp_path / "privacy_utility.json",
    )
    # Execute
    kept = pu._kept_studies("default", ["redo"])
    plot = pu._plot([*kept, study("redo")])
    # Assert: only the other task kept, with numbers again, and plotted beside the new one
    assert [s["task"] for s in kept] == ["old"]
    assert kept[0]["rows"]["federated"]["epsilon"] == math.inf
    assert kept[0]["rows"]["federated"]["spent"] == [math.inf, math.inf]
    assert (tmp_path / plot).is_file()
    assert pu._kept_studies("tiny", []) == []  # another profile's results are never mixed in


def test_peers_rounds_from_client_timelines(tmp_path) -> None:
    # Prepare: two hospitals, three rounds; round 2 starts 5 s after round 1 at the first
    # hospital to receive it, and its slowest hospital works 1.5 s
    from benchmarks.peers import _read_timeline, _timeline_rows, summarize

    lines = [
        {"hospital": "h1", "round": 1, "t_start": 100.0, "t_end": 101.0},
        {"hospital": "h2", "round": 1, "t_start": 100.2, "t_end": 101.7},
        {"hospital": "h1", "round": 2, "t_start": 105.0, "t_end": 106.0},
        {"hospital": "h2", "round": 2, "t_start": 105.1, "t_end": 106.2},
        {"hospital": "h2", "round": 3, "t_start": 109.0, "t_end": 110.0},
        {"hospital": "h1", "round": 3, "t_start": 109.3, "t_end": 110.0},
    ]
    (tmp_path / "timeline-x.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    # Execute
    rows = _timeline_rows(_read_timeline(tmp_path, "x"))
    # Assert: the last round has no next receipt to end it, so it is left out
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["round_s"] == pytest.approx(5.0)
    assert rows[0]["work_s"] == pytest.approx(1.5)
    assert rows[1]["round_s"] == pytest.approx(4.0)
    assert rows[1]["work_s"] == pytest.approx(1.1)
    s = summarize([{"rounds": rows, "wall_s": 20.0, "val_loss_before_last_round": 0.5}])
    assert s["overhead_median_s"] == pytest.approx(((5.0 - 1.5) + (4.0 - 1.1)) / 2)


def test_peer_workload_trains_the_exported_model_and_records_each_round(tmp_path) -> None:
    # Prepare: a workload folder laid out as `peers` exports it (a small readmission model,
    # one hospital whose label is the sign of a static feature)
    import torch
    from benchmarks.common import ROOT
    from benchmarks.peer_apps.workload import WorkloadModel, load_workload

    from privfed.tasks.readmission.model import ReadmissionNet

    torch.manual_seed(0)
    model = ReadmissionNet(n_vitals=2, n_labs=2, n_static=3, n_genes=4, hidden=8, dropout=0.0)
    torch.save(model, tmp_path / "model.pt")

    def split(n: int) -> list[torch.Tensor]:
        static = torch.randn(n, 3)
        x = [torch.randn(n, 2, 10), torch.randn(n, 2, 4), static, torch.randn(n, 4)]
        return [*x, (static[:, 0] > 0).long()]

    torch.save({"train": split(64), "val": split(64)}, tmp_path / "hospital_1.pt")
    plan = {"hospitals": ["hospital_1"], "rounds": 2, "epochs": 5, "batch_size": 16}
    plan |= {"lr": 0.01, "weight_decay": 0.0, "seed": 0, "src": str(ROOT / "src")}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    # Execute: two rounds of the local pass every peer app runs
    work = load_workload(tmp_path, "hospital_1")
    trained = work.initial_model()
    first = work.local_round(trained, 1)
    work.record("x", 1, 0.0, val_loss=first["val_loss"])
    second = work.local_round(trained, 2)
    # Assert: it trained (the model it validates in round 2 is the round-1 model, and better),
    # took the planned steps, and wrote one timeline line
    assert second["val_loss"] < first["val_loss"]
    assert first["steps"] == 5 * 4 and first["n"] == 64
    lines = (tmp_path / "timeline-x.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1]
    # FLARE's wrapper holds the exported weights under net.
    wrapped = WorkloadModel(str(tmp_path)).state_dict()
    assert set(wrapped) == {f"net.{k}" for k in model.state_dict()}
    assert all(torch.equal(wrapped[f"net.{k}"], v) for k, v in model.state_dict().items())


def test_retina_ablation_overrides_keep_the_profiles_other_retina_keys() -> None:
    from benchmarks.common import make_config
    from benchmarks.retina import _assignments, _model_overrides

    changes, sections = _assignments(
        ["class_weight=0", "ema_decay=0.9", "train_federated.local_epochs=3"]
    )
    assert sections == {"train_federated": {"local_epochs": 3}}
    cfg = make_config(
        "tiny",
        {"base": {"task": "retina"}, "model": _model_overrides(None, changes), **sections},
    )
    r = cfg.model.retina
    # the keys changed; the tiny profile's own keys (32x32, 2 epochs, 2 rounds) still apply
    assert (r.class_weight, r.ema_decay) == (0, 0.9)
    assert (r.image_size, r.baseline_epochs) == (32, 2)
    assert (cfg.train_federated.local_epochs, cfg.train_federated.rounds) == (3, 2)
    for bad in ("class_weight", "train_federated..rounds=1"):
        with pytest.raises(SystemExit, match="KEY=VALUE"):
            _assignments([bad])


def test_benchmark_overrides_merge_into_the_profile_deeply() -> None:
    from benchmarks.common import make_config

    cfg = make_config(
        "tiny",
        {
            "base": {"task": "notes", "seed": 7},
            "model": {"notes": {"mode": "full"}},
            "generate_data": {"retina": {"images_per_hospital": 12}},
        },
    )
    # the overridden keys change; the tiny profile's sibling keys (and base's) stay
    assert (cfg.model.notes.mode, cfg.model.notes.n_layer, cfg.model.notes.n_embd) == (
        "full",
        1,
        32,
    )
    assert (cfg.generate_data.retina.images_per_hospital, cfg.generate_data.retina.image_size) == (
        12,
        32,
    )
    assert (cfg.base.task, cfg.base.seed, cfg.base.profile) == ("notes", 7, "tiny")
    assert cfg.model.hidden == 8
