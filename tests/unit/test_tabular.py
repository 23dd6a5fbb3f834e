"""Task ``tabular``: schema, federated statistics, the model's imputation, metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from privfed.config import config_from_dict
from privfed.federated.server import make_strategy
from privfed.metrics import regression_metrics
from privfed.tasks.tabular.features import encode, local_statistics, normalizers
from privfed.tasks.tabular.model import TabularMLP
from privfed.tasks.tabular.schema import (
    TabularSchema,
    boolean_spelling,
    dominant_values,
    infer_schema,
)
from tests.conftest import raw_params

SCHEMA = TabularSchema.parse(
    {
        "target": {"column": "y", "kind": "classification", "classes": ["no", "yes"]},
        "features": {
            "a": {"type": "numeric", "missing": "impute"},
            "b": {"type": "numeric"},
            "c": {"type": "categorical", "categories": ["x", "y", "z"], "missing": "impute"},
        },
    }
)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["a", "b", "c", "y"])


def test_summed_hospital_statistics_equal_the_pooled_ones() -> None:
    # Prepare: three hospitals of different sizes, with gaps
    rng = np.random.default_rng(0)
    sites = []
    for n, shift in ((30, 0.0), (12, 5.0), (50, -2.0)):
        frame = pd.DataFrame(
            {
                "a": rng.normal(shift, 2.0, n),
                "b": rng.normal(100 + shift, 10.0, n),
                "c": rng.choice(["x", "y", "z"], n, p=[0.2, 0.5, 0.3]),
                "y": rng.choice(["no", "yes"], n),
            }
        )
        frame.loc[rng.random(n) < 0.2, "a"] = np.nan
        frame.loc[rng.random(n) < 0.1, "c"] = None
        sites.append(frame)
    pooled = pd.concat(sites, ignore_index=True)
    # Execute: what the server does — sum each hospital's arrays
    parts = [local_statistics(*encode(f, SCHEMA), SCHEMA) for f in sites]
    summed = {k: sum(p[k] for p in parts) for k in parts[0]}
    federated = normalizers(summed, SCHEMA)
    # Assert: the pooled table's mean, population sd (gaps skipped) and mode
    np.testing.assert_allclose(federated["mean"], pooled[["a", "b"]].mean(), rtol=1e-6)
    np.testing.assert_allclose(federated["std"], pooled[["a", "b"]].std(ddof=0), rtol=1e-5)
    assert federated["mode"].tolist() == [["x", "y", "z"].index(pooled["c"].mode()[0])]


def test_statistics_by_hand() -> None:
    # Prepare: a = [1, 3, NaN] -> mean 2, sd 1; c = [z, z, missing] -> mode z
    frame = _frame([(1.0, 0.0, "z", "no"), (3.0, 0.0, "z", "yes"), (None, 0.0, None, "no")])
    # Execute
    stats = local_statistics(*encode(frame, SCHEMA), SCHEMA)
    norm = normalizers(stats, SCHEMA)
    # Assert
    assert stats["numeric_count"].tolist() == [2.0, 3.0]
    assert stats["numeric_sum"].tolist() == [4.0, 0.0]
    assert stats["numeric_sumsq"].tolist() == [10.0, 0.0]
    assert stats["category_counts"].tolist() == [0.0, 0.0, 2.0]
    assert norm["mean"].tolist() == [2.0, 0.0]
    assert norm["std"].tolist() == [1.0, 1.0]  # b is constant: left unscaled, not divided by 0
    assert norm["mode"].tolist() == [2.0]


def test_model_imputes_mean_and_mode() -> None:
    # Prepare: a model whose first layer shows its input (identity on 2 numeric + 3 one-hot)
    model = TabularMLP(n_numeric=2, category_sizes=[3], hidden=5, dropout=0.0, n_outputs=2)
    model.set_statistics(
        {
            "mean": torch.tensor([2.0, 10.0]),
            "std": torch.tensor([1.0, 5.0]),
            "mode": torch.tensor([2.0]),
        }
    )
    seen = {}
    model.net[0].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    # Execute: a missing number and a missing category
    model(torch.tensor([[float("nan"), 20.0]]), torch.tensor([[-1]]))
    # Assert: mean -> 0 after standardizing, (20-10)/5 = 2, missing category -> mode one-hot
    assert seen["x"].tolist() == [[0.0, 2.0, 0.0, 0.0, 1.0]]


def test_averaged_mode_still_picks_its_category() -> None:
    """FedAvg of identical float32 modes can give 1.9999998; that is still category 2."""
    model = TabularMLP(n_numeric=0, category_sizes=[3], hidden=4, dropout=0.0, n_outputs=2)
    model.set_statistics({"mode": torch.tensor([1.9999998])})
    seen = {}
    model.net[0].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    model(torch.zeros((1, 0)), torch.tensor([[-1]]))
    assert seen["x"].tolist() == [[0.0, 0.0, 1.0]]


def test_schema_rejects_what_would_break_later() -> None:
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        TabularSchema.parse(
            {"target": {"column": "y", "kind": "classification", "classes": ["a"]},
             "features": {"x": {"type": "numeric"}}}
        )  # fmt: skip
    with pytest.raises(ValueError, match="also listed as a feature"):
        TabularSchema.parse(
            {"target": {"column": "x", "kind": "regression"},
             "features": {"x": {"type": "numeric"}}}
        )  # fmt: skip
    with pytest.raises(ValueError, match="min=5.0 is larger than max=1.0"):
        TabularSchema.parse(
            {"target": {"column": "y", "kind": "regression"},
             "features": {"x": {"type": "numeric", "min": 5, "max": 1}}}
        )  # fmt: skip


def test_infer_drafts_types_ranges_categories_and_gaps() -> None:
    # Prepare
    frame = pd.DataFrame(
        {
            "site": ["a", "b", "a", "b"],
            "age": [31.0, 47.5, None, 60.2],
            "smoker": ["no", "yes", "no", "no"],
            "outcome": [0, 1, 1, 0],
        }
    )
    # Execute
    schema = infer_schema(frame, target="outcome", exclude=("site",))
    # Assert
    assert schema["target"] == {
        "column": "outcome",
        "kind": "classification",
        "classes": ["0", "1"],
    }
    assert schema["features"] == {
        "age": {"type": "numeric", "min": 31.0, "max": 60.2, "missing": "impute"},
        "smoker": {"type": "categorical", "categories": ["no", "yes"], "missing": "reject"},
    }


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 6.0]))
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(3.0))
    assert m["r2"] == pytest.approx(1 - 9.0 / 2.0)


@pytest.mark.parametrize(
    ("name", "cls"), [("fedadam", "FedAdam"), ("fedyogi", "FedYogi"), ("fedadagrad", "FedAdagrad")]
)
def test_adaptive_server_optimizers(name: str, cls: str) -> None:
    cfg = config_from_dict(
        raw_params(train_federated={"strategy": name, "server_lr": 0.05, "server_tau": 0.01})
    )
    strategy = make_strategy(cfg, num_nodes=3)
    assert type(strategy).__name__ == cls
    assert (strategy.eta, strategy.tau) == (0.05, 0.01)


def test_infer_drafts_one_boolean_for_mixed_spellings() -> None:
    frame = pd.DataFrame(
        {"smoker": ["0", "1", "True", "False", "1"], "outcome": ["a", "b", "a", "b", "a"]}
    )
    schema = infer_schema(frame, target="outcome")
    assert schema["features"]["smoker"]["categories"] == ["false", "true"]
    assert boolean_spelling(["No", "Yes"]) == {True: "Yes", False: "No"}
    assert boolean_spelling(["G1", "G2"]) is None


def test_value_filling_one_site_but_rare_elsewhere_is_flagged() -> None:
    # Prepare: creatinine is 0 in 12 of site 'b's 20 rows (its missing-value code), 1 of 40
    # rows elsewhere; 'visits' is 0 at half of every site's rows (a real count, not flagged)
    rng = np.random.default_rng(0)
    hospital = ["a"] * 20 + ["b"] * 20 + ["c"] * 20
    creatinine = rng.uniform(0.5, 1.5, 60)
    creatinine[20:32] = 0.0
    creatinine[5] = 0.0
    frame = pd.DataFrame(
        {"hospital": hospital, "creatinine": creatinine, "visits": [0, 1, 2, 3] * 15}
    )
    frame.loc[[0, 1, 40, 41], "visits"] = 0
    # Execute
    found = dominant_values(frame, columns=["creatinine", "visits"])
    # Assert
    assert found == [
        "column 'creatinine': value 0 fills 60% of the rows at site 'b' (12 of 20) but 2.5% "
        "elsewhere; if it codes a missing value, blank it and set missing: impute, and "
        "check min/max"
    ]
