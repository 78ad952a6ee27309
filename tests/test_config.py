import pytest

from llm4sbr.config import TrainConfig, from_dict, load_yaml


def test_yaml_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: llm4sbr\nepochs: 4\nlr: 1\nmax_len: null\n")
    config = load_yaml(TrainConfig, path, {"epochs": 2})
    assert (config.model, config.epochs, config.lr, config.max_len) == ("llm4sbr", 2, 1.0, None)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"epochs": "3"}, "epochs must be int"),
        ({"epochs": True}, "epochs must be int"),
        ({"modle": "srgnn"}, "unknown TrainConfig keys"),
        ({"model": "gru"}, "model must be"),
        ({"select_metric": "auc"}, "select_metric"),
        ({"valid_fraction": 1.5}, "valid_fraction"),
    ],
)
def test_bad_values_are_named(values, match):
    with pytest.raises(ValueError, match=match):
        from_dict(TrainConfig, values)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_yaml(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_yaml(TrainConfig, bad)
