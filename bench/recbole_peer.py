"""RecBole's own SRGNN on MovieLens-100k leave-one-out: the peer of ``python -m bench --suite train``.

It runs in RecBole's own virtual environment (RecBole 1.2.1 needs numpy < 2), not the package's,
and imports nothing from llm4sbr:

    python -m venv .venv-recbole
    .venv-recbole/bin/pip install torch==2.13.0 recbole==1.2.1 "setuptools<81" "numpy<2" "pandas<3"
    .venv-recbole/bin/python bench/recbole_peer.py --epochs 2 --anomaly off --out peer.json

Same samples and hyper-parameters as our run: RecBole's sequential leave-one-out split of the
ml-100k it ships (MAX_ITEM_LIST_LENGTH 50: 97,171 training prefixes), SRGNN with CE loss, d = 100,
one GNN step, batch 100, Adam lr 1e-3 with weight decay 1e-5, seed 0; validation MRR@20 after each
epoch and the best epoch on test (full ranking). The JSON holds the seconds of each training
epoch (RecBole's ``Trainer._train_epoch`` timed here, evaluation excluded), test hit@20 / mrr@20,
the peak resident memory, the number of training samples and their fingerprint (the same sha256
as ``bench.train.samples_fingerprint``, so the two sides can be checked to see the same data).

``--anomaly on`` keeps what importing RecBole's sequential models switches on for the whole
process (``torch.autograd.set_detect_anomaly(True)`` in its sine.py): RecBole as shipped.
``--anomaly off`` switches it off after the import.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

# RecBole's checkpoints hold its Config object; torch >= 2.6 refuses them unless told otherwise.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def resident_peak_mib() -> float:
    """This process's peak resident set (Linux ``VmHWM``; ``ru_maxrss`` would also hold the peak
    of the process that started it, kept across fork and exec)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def samples_fingerprint(prefixes: list[list[str]], targets: list[str]) -> str:
    """sha256 of the sorted ``"raw prefix ids > raw target"`` lines (as bench/train.py does)."""
    lines = sorted(" ".join(p) + " > " + t for p, t in zip(prefixes, targets, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def train_fingerprint(train_dataset) -> tuple[int, str]:
    """(number of training samples, fingerprint) of RecBole's augmented training split."""
    inter = train_dataset.inter_feat
    items = inter["item_id_list"].numpy()
    lengths = inter["item_length"].numpy()
    tokens = train_dataset.field2id_token["item_id"]
    prefixes = [tokens[row[:n]].tolist() for row, n in zip(items, lengths, strict=True)]
    targets = tokens[inter["item_id"].numpy()].tolist()
    return len(targets), samples_fingerprint(prefixes, targets)


def run(epochs: int, anomaly: bool, device: str, batch_size: int, dim: int, threads: int) -> dict:
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender.srgnn import SRGNN
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.autograd.set_detect_anomaly(anomaly)
    torch.set_num_threads(threads)
    sys.argv = sys.argv[:1]  # RecBole's Config would also parse this script's flags as its own
    with tempfile.TemporaryDirectory(prefix="recbole-peer-") as tmp:
        config = Config(
            model="SRGNN",
            dataset="ml-100k",
            config_dict={
                "data_path": str(Path(recbole.__file__).parent / "dataset_example"),
                "checkpoint_dir": tmp,
                "use_gpu": device == "cuda",
                "gpu_id": "0" if device == "cuda" else "",
                "seed": 0,
                "reproducibility": True,
                "embedding_size": dim,
                "step": 1,
                "loss_type": "CE",
                "train_neg_sample_args": None,
                "MAX_ITEM_LIST_LENGTH": 50,
                "eval_args": {
                    "split": {"LS": "valid_and_test"},
                    "group_by": "user",
                    "order": "TO",
                    "mode": "full",
                },
                "metrics": ["Hit", "MRR", "NDCG"],
                "topk": [5, 10, 20],
                "valid_metric": "MRR@20",
                "epochs": epochs,
                "stopping_step": epochs,
                "train_batch_size": batch_size,
                "eval_batch_size": 4096,
                "learning_rate": 1e-3,
                "weight_decay": 1e-5,
                "show_progress": False,
            },
        )
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        init_seed(config["seed"], config["reproducibility"])
        model = SRGNN(config, train_data._dataset).to(config["device"])
        trainer = Trainer(config, model)

        epoch_seconds: list[float] = []
        train_epoch = trainer._train_epoch

        def timed_train_epoch(*args, **kwargs):
            start = time.perf_counter()
            out = train_epoch(*args, **kwargs)
            epoch_seconds.append(time.perf_counter() - start)
            return out

        trainer._train_epoch = timed_train_epoch
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        anomaly_during_training = torch.is_anomaly_enabled()
        test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        if device == "cuda":
            peak_mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak_mib = resident_peak_mib()
        n_samples, fingerprint = train_fingerprint(train_data.dataset)
    return {
        "epoch_seconds": epoch_seconds,
        "test": {k.lower(): float(v) for k, v in test.items()},
        "peak_mib": peak_mib,
        "train_samples": n_samples,
        "samples_fingerprint": fingerprint,
        "anomaly_detection": anomaly_during_training,
        "threads": torch.get_num_threads(),
        "recbole": recbole.__version__,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--anomaly", choices=("on", "off"), default="off", help="on = RecBole as shipped")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    result = run(args.epochs, args.anomaly == "on", args.device, args.batch_size, args.dim, args.threads)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
