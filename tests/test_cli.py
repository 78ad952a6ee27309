import json

import pytest

from llm4sbr.cli import build_parser, main
from llm4sbr.data.sources import recbole_ml100k_dir


def have_ml100k() -> bool:
    try:
        recbole_ml100k_dir()
    except FileNotFoundError:
        return False
    return True


pytestmark = pytest.mark.usefixtures("reference_path")


def test_help_of_every_command(capsys):
    for command in ("train", "evaluate", "infer-intents", "run", "train-predictor", "recommend"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: llm4sbr " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr-step", "0"], "lr_step must be >= 1"),
        (["--select-metric", "hit@0"], "select_metric must be hit@K"),
        (["--threads", "-1"], "threads must be None or >= 1"),
        (["--patience", "0"], "patience must be >= 1"),
    ],
)
def test_bad_training_flags_fail_before_any_work(tmp_path, capsys, monkeypatch, flags, message):
    import llm4sbr.data.sources

    def no_data_please(*args, **kwargs):
        raise AssertionError("the data was loaded before the flags were checked")

    monkeypatch.setattr(llm4sbr.data.sources, "load_dataset", no_data_please)
    for command in (["train", "--out", str(tmp_path / "t")], ["run", "--out", str(tmp_path / "r")]):
        assert main([*command, *flags]) == 2
        assert message in capsys.readouterr().err


def test_bad_input_gives_a_clear_error_and_exit_code_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "nowhere.csv" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "c.yaml"
    bad.write_text("epochz: 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert "unknown TrainConfig keys" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not have_ml100k(), reason="needs the ml-100k files: pip install --no-deps recbole==1.2.1")
def test_run_on_ml100k_then_serve_and_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--data", "ml-100k", "--out", str(out), "--epochs", "1", "--quiet"]
    args += ["--backend", "fake", "--encoder", "fake"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for row in ("SRGNN", "LLM4SBR, stage-1 LLM intents", "LLM4SBR, predicted intents (no LLM)"):
        assert f"| {row} |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["intents"]["counts"]["samples"] == 6107

    # A rerun resumes: every answer comes from the cache and no model trains again.
    assert main(args) == 0
    assert json.loads((out / "summary.json").read_text())["intents"]["counts"]["generated"] == 0
    capsys.readouterr()

    assert main(["evaluate", "--checkpoint", str(out / "srgnn" / "best.pt"), "--json", "--quiet"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated == pytest.approx(summary["results"]["srgnn"]["test"])

    assert main(["recommend", "--checkpoint", str(out / "llm4sbr" / "best.pt"), "50", "172", "-k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    explain = ["recommend", "--checkpoint", str(out / "llm4sbr" / "best.pt"), "50", "172", "--explain", "2"]
    assert main([*explain, "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[3].startswith("# long-term intent is nearest to: ")
    assert lines[4].startswith("# short-term") and lines[4].count("; ") == 1
    assert main(["recommend", "--checkpoint", str(out / "llm4sbr" / "best.pt"), "no-such-item"]) == 2
    assert "unknown item ids" in capsys.readouterr().err


def test_run_carves_validation_as_train_would(tmp_path, monkeypatch):
    """``run`` loads its dataset with --seed and the train config's valid_fraction."""
    import llm4sbr.data.sources

    calls = []

    class Loaded(Exception):
        pass

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        raise Loaded

    monkeypatch.setattr(llm4sbr.data.sources, "load_dataset", load_dataset)
    config = tmp_path / "train.yaml"
    config.write_text("valid_fraction: 0.25\n")
    with pytest.raises(Loaded):
        main(
            ["run", "--data", "ml-100k", "--seed", "3", "--train-config", str(config), "--out", str(tmp_path)]
        )
    assert calls == [(("ml-100k", None), {"seed": 3, "valid_fraction": 0.25})]


@pytest.mark.skipif(not have_ml100k(), reason="needs ml-100k from the recbole wheel")
def test_run_with_seeds_reports_mean_and_std_of_every_path(tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "small.yaml"
    config.write_text("dim: 8\nbatch_size: 200\n")
    args = ["run", "--data", "ml-100k", "--out", str(out), "--epochs", "1", "--quiet", "--seeds", "0", "1"]
    args += ["--backend", "fake", "--encoder", "fake", "--train-config", str(config)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mean ± std over seeds [0, 1]" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["results"]) == {"seed0", "seed1"}
    for seed in (0, 1):
        result = json.loads((out / f"seed{seed}" / "llm4sbr" / "result.json").read_text())
        assert result["config"]["seed"] == seed and result["config"]["dim"] == 8
    valid = [summary["results"][s]["srgnn"]["valid"] for s in ("seed0", "seed1")]
    assert valid[0] != valid[1]  # each seed carves its own validation split
    hits = [100 * summary["results"][s]["paths"]["predictor"]["hit@20"] for s in ("seed0", "seed1")]
    row = next(line for line in printed.splitlines() if line.startswith("| hit@20 |"))
    assert row.split(" | ")[3].startswith(f"{sum(hits) / 2:.2f} ± ")

    assert main([*args, "--limit", "5"]) == 2
    assert "--limit cannot be combined with --seeds" in capsys.readouterr().err


def test_items_flag_reaches_every_data_command(tmp_path):
    parser = build_parser()
    for argv in (
        ["infer-intents", "--out", str(tmp_path), "--items", "i.csv"],
        ["run", "--items", "i.csv"],
        ["train", "--items", "i.csv"],
    ):
        assert parser.parse_args(argv).items == "i.csv"
    missing = tmp_path / "missing.items.csv"
    code = main(["infer-intents", "--data", "ml-100k", "--out", str(tmp_path / "o"), "--items", str(missing)])
    assert code == 2
