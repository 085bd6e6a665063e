"""TrainConfig.digest: the name of a run folder, stable across new defaulted options."""

from __future__ import annotations

from llm4pr.model.config import ModelConfig
from llm4pr.training.config import TrainConfig


def test_digest_follows_every_setting_that_changes_training() -> None:
    base = TrainConfig()
    assert base.digest() == TrainConfig().digest()
    assert len(base.digest()) == 12
    changed = [
        TrainConfig(seed=1),
        TrainConfig(model=ModelConfig(backbone_layers=15)),
        TrainConfig.model_validate({"post_rank": {"steps": 7}}),
        TrainConfig.model_validate({"model": {"lora": {"r": 4}}}),
    ]
    digests = {config.digest() for config in changed}
    assert base.digest() not in digests and len(digests) == len(changed)
    assert base.digest(True) != base.digest(False) != base.digest()  # a row's data variant counts


def test_digest_ignores_settings_left_at_their_default() -> None:
    """A run folder made before an option existed (so with its default) keeps its name."""
    assert TrainConfig(model=ModelConfig(backbone_layers=None)).digest() == TrainConfig().digest()
    assert TrainConfig.model_validate({"seed": 0, "post_rank": {}}).digest() == TrainConfig().digest()


def test_metrics_at_takes_distinct_positive_cutoffs() -> None:
    import pytest
    from pydantic import ValidationError

    assert TrainConfig().metrics_at == [3, 5] and TrainConfig(metrics_at=[10]).metrics_at == [10]
    for bad, message in (([], "at least one cutoff"), ([0], "positive integer"), ([3, 3], "repeated")):
        with pytest.raises(ValidationError, match=message) as error:
            TrainConfig(metrics_at=bad)
        assert "metrics_at" in str(error.value)
