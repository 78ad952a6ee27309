"""Fault injection: ``kill -9`` at seeded points of ``llm4sbr train``, ``infer-intents`` and
``run``, then resume, and Ctrl-C (SIGINT) of ``train`` and ``infer-intents``.

After every kill the suite checks that nothing complete before the kill was lost (epochs in
last.pt and metrics.jsonl, answer-cache entries), that every file left is readable, that the
resume (``train --resume``, or the same ``infer-intents`` / ``run`` command again) exits 0 and
ends with outputs equal to an uninterrupted run's (checkpoint tensors bit for bit, metrics,
intents.npy), and that no temporary file of an atomic write is left behind.

Kill points, per command:

* timing: SIGKILL after a seeded delay, uniform over the uninterrupted run's measured duration;
  how many landed mid-run (the process had not finished) is counted, and printed (``-s``);
* durable-write events: the process SIGKILLs itself just before or just after its k-th
  ``os.replace`` (every atomic write ends in one), for seeded k. "Before" leaves a complete
  temporary file that never got renamed; "after" lands between two durable writes (e.g. last.pt
  written, metrics.jsonl not yet), and tells exactly what was complete before the kill.

A fresh ``python -m llm4sbr`` pays seconds of imports (torch, then torch._dynamo on the first
optimizer), so the kill runs are forked from one pre-imported process (a "zygote", started
once for the module): each child runs ``llm4sbr``'s ``__main__`` with its own argv, exactly as
``python -m llm4sbr`` would. The SIGINT tests start real ``python -m llm4sbr`` processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fakes import write_log

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="forks a pre-imported process; reads /proc"),
]

ROOT = Path(__file__).resolve().parents[1]
TIMING_POINTS = 10
EVENT_POINTS = 6
RUN_TIMEOUT_S = 180.0

TRAIN_FLAGS = ["--dim", "8", "--epochs", "4", "--batch-size", "16", "--threads", "1", "--device", "cpu"]
STAGE1_FLAGS = ["--backend", "fake", "--encoder", "fake", "--llm-batch-size", "8", "--llm-device", "cpu"]
TIMING_KEYS = {"seconds", "epoch_seconds", "peak_memory_mib"}

ZYGOTE = r"""
import json, os, runpy, signal, sys, traceback
from pathlib import Path
import numpy, torch, torch._dynamo
torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # imports what the first optimizer imports
import llm4sbr.cli, llm4sbr.intent, llm4sbr.pipeline, llm4sbr.serving, llm4sbr.training
print(json.dumps({"threads": len(os.listdir("/proc/self/task"))}), flush=True)


def measure(src, dst):
    # What a durable write brings: answers of a cache shard, epochs of last.pt or metrics.jsonl.
    if Path(dst).parent.name == "answer_cache":
        return len(json.loads(Path(src).read_bytes())["entries"])
    if Path(dst).name == "metrics.jsonl":
        return len(Path(src).read_text().splitlines())
    if Path(dst).name == "last.pt":
        return int(torch.load(src, weights_only=True)["epoch"])
    return None


def hook(spec):
    real_replace, done = os.replace, []

    def replace(src, dst, *args, **kwargs):
        n = len(done) + 1
        if spec.get("kill_at") == n and spec["when"] == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        count = measure(src, dst) if spec.get("record") else None
        real_replace(src, dst, *args, **kwargs)
        done.append({"file": os.path.relpath(dst, spec["root"]), "count": count})
        if spec.get("kill_at") == n and spec["when"] == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    return done


for line in sys.stdin:
    msg = json.loads(line)
    if "poll" in msg:
        pid, status = os.waitpid(msg["poll"], os.WNOHANG)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status) if pid else None}), flush=True)
        continue
    pid = os.fork()
    if pid:
        print(json.dumps({"pid": pid}), flush=True)
        continue
    code = 1
    try:
        log = os.open(msg["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        done = hook(msg["hook"]) if msg.get("hook") else None
        sys.argv = ["llm4sbr", *msg["args"]]
        try:
            runpy.run_module("llm4sbr", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        if done is not None and msg["hook"].get("record"):
            Path(msg["hook"]["record"]).write_text(json.dumps(done))
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    # conftest.py sets TRITON_INTERPRET=1 for the kernel tests; the CLI runs as users run it.
    env.pop("TRITON_INTERPRET", None)
    # One thread everywhere: nothing to fork mid-flight, and numerics never depend on the pool.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


class Zygote:
    """One process with torch and llm4sbr imported that forks a child per command. A child is
    reaped only when polled, so its pid cannot be reused while the test may still kill it."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            cwd=cwd,
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._read()
        assert ready["threads"] == 1, f"the zygote must be single-threaded to fork safely: {ready}"

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        assert line, f"the zygote died (exit code {self.proc.poll()})"
        return json.loads(line)

    def _send(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self, args: list[str], log: Path, hook: dict[str, Any] | None = None) -> int:
        return self._send({"args": args, "log": str(log), "hook": hook})["pid"]

    def poll(self, pid: int) -> int | None:
        """The exit code (negative: killed by that signal) once the child ended, else None."""
        return self._send({"poll": pid})["code"]

    def wait(self, pid: int, timeout: float = RUN_TIMEOUT_S) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll(pid)) is None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)  # not reaped yet: still our child
                self.wait(pid)
                raise AssertionError(f"llm4sbr child {pid} ran over {timeout} s")
            time.sleep(0.01)
        return code

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_log(tmp_path_factory.mktemp("data") / "tiny")


# ---------------------------------------------------------------- reading what a run left


def _plain(value: Any) -> Any:
    """Tensors -> ("tensor", dtype, shape, exact values), containers recursively; for equality."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), value.detach().cpu().numpy().tobytes())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _untimed(value: Any) -> Any:
    """JSON values without wall-clock and memory fields."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def checkpoint_state(path: Path) -> dict[str, Any]:
    from llm4sbr.checkpoint import load_checkpoint

    payload = load_checkpoint(path)
    if "history" in payload:
        payload["history"] = _untimed(json.loads(payload["history"]))
    return _plain(payload)


def metrics_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def train_outputs(out: Path) -> dict[str, Any]:
    result = json.loads((out / "result.json").read_text())
    return {
        "last.pt": checkpoint_state(out / "last.pt"),
        "best.pt": checkpoint_state(out / "best.pt"),
        "metrics.jsonl": _untimed(metrics_lines(out / "metrics.jsonl")),
        "result.json": _untimed(result),
    }


def cache_entries(root: Path) -> dict[str, str]:
    """Valid answer-cache entries, read without touching the folder (AnswerCache would rename
    a torn shard); a shard that does not parse raises."""
    from llm4sbr.intent.cache import _entry_check

    entries = {}
    for shard in sorted(root.glob("*.json")):
        doc = json.loads(shard.read_bytes())
        for e in doc["entries"]:
            if e["check"] == _entry_check(e["key"], e["answer"]):
                entries[e["key"]] = e["answer"]
    return entries


def intent_outputs(out: Path) -> dict[str, Any]:
    from llm4sbr.intent.store import load_catalog, load_intents

    vectors, ids = load_intents(out)
    meta = json.loads((out / "meta.json").read_text())
    return {
        "intents.npy": (out / "intents.npy").read_bytes(),
        "sample_ids.npy": ids.tolist(),
        "vectors": np.asarray(vectors).tobytes(),
        "answers.jsonl": (out / "answers.jsonl").read_text(),
        "catalog.npz": [a.tobytes() for a in load_catalog(out)],
        "meta": {k: meta[k] for k in ("shape", "sample_ids_sha256", "template_hash", "encoder")},
        "answer cache": cache_entries(out / "answer_cache"),
    }


def run_outputs(out: Path) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    return {
        "intents": intent_outputs(out / "intents"),
        "srgnn": train_outputs(out / "srgnn"),
        "llm4sbr": train_outputs(out / "llm4sbr"),
        "intent_predictor.pt": checkpoint_state(out / "llm4sbr" / "intent_predictor.pt"),
        "summary.json results": _untimed(summary["results"]),
        "summary.md": (out / "summary.md").read_text(),
    }


def train_progress(out: Path, sub: str = "") -> dict[str, int]:
    """Finished epochs in ``out/sub``: those in last.pt, and the lines of metrics.jsonl."""
    from llm4sbr.checkpoint import load_checkpoint

    last = out / sub / "last.pt"
    return {
        f"{sub}last.pt epochs": int(load_checkpoint(last)["epoch"]) if last.exists() else 0,
        f"{sub}metrics.jsonl epochs": len(metrics_lines(out / sub / "metrics.jsonl")),
    }


def cache_progress(out: Path, sub: str = "") -> dict[str, int]:
    root = out / sub / "answer_cache"
    return {f"{sub}answer_cache entries": len(cache_entries(root)) if root.exists() else 0}


def run_progress(out: Path) -> dict[str, int]:
    return {
        **cache_progress(out, "intents/"),
        **train_progress(out, "srgnn/"),
        **train_progress(out, "llm4sbr/"),
    }


def progress_after(writes: list[dict[str, Any]], n_done: int) -> dict[str, int]:
    """What is durably on disk after the first ``n_done`` atomic writes of a fresh run, from the
    uninterrupted run's record of its writes (in the same order: the runs are deterministic),
    keyed as :func:`train_progress` and :func:`cache_progress` key it: the answers of every
    shard written, the epochs of the latest last.pt and metrics.jsonl."""
    progress: dict[str, int] = {}
    for i, write in enumerate(writes):
        file = Path(write["file"])
        if file.parent.name == "answer_cache":
            key = f"{file.parent} entries"
            progress[key] = progress.get(key, 0) + (write["count"] if i < n_done else 0)
        elif file.name in ("last.pt", "metrics.jsonl"):
            key = f"{write['file']} epochs"
            progress[key] = write["count"] if i < n_done else progress.get(key, 0)
    return progress


def file_problems(root: Path) -> list[str]:
    """Leftovers that must not survive a resume: temporary files of atomic writes (which a
    SIGKILL between write and rename leaves behind) and cache shards set aside as corrupt."""
    return [
        str(p.relative_to(root))
        for p in sorted(root.rglob("*"))
        if p.is_file() and (p.name.endswith(".tmp") or p.suffix == ".corrupt")
    ]


def readable_problems(root: Path) -> list[str]:
    """Every durable file a killed run left must be whole: checkpoints load, JSON parses."""
    from llm4sbr.checkpoint import load_checkpoint

    problems = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            if p.suffix == ".pt":
                load_checkpoint(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".jsonl":
                [json.loads(line) for line in p.read_text().splitlines()]
            elif p.suffix == ".npy":
                np.load(p, mmap_mode="r")
        except Exception as exc:
            problems.append(f"{p.relative_to(root)} unreadable after the kill: {exc}")
    return problems


# ---------------------------------------------------------------- the kill loop


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}/{k}: missing" for k in expected if k not in actual]
        out += [f"{where}/{k}: unexpected" for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += differences(expected[k], actual[k], f"{where}/{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in differences(e, a, f"{where}[{i}]")
        ]
    if isinstance(expected, list) and isinstance(actual, list):
        return [f"{where}: {len(actual)} entries, the uninterrupted run has {len(expected)}"]
    return [] if expected == actual else [f"{where or '/'}: differs from the uninterrupted run"]


class KillCampaign:
    """Run ``command`` uninterrupted once, then kill it at seeded points and resume each."""

    def __init__(
        self,
        zygote: Zygote,
        work: Path,
        args: list[str],
        resume_args: list[str],
        outputs: Callable[[Path], dict[str, Any]],
        progress: Callable[[Path], dict[str, int]],
    ) -> None:
        self.zygote, self.work, self.args, self.resume_args = zygote, work, args, resume_args
        self.outputs, self.progress = outputs, progress
        self.out = work / "out"  # every run uses the same path, so stored paths compare equal
        self.problems: list[str] = []
        self.mid_run = {"timing": 0, "event": 0}
        self.finished_first = 0

    def _run(self, args: list[str], log: str, hook: dict | None = None) -> tuple[int, float]:
        started = time.monotonic()
        code = self.zygote.wait(self.zygote.start(args, self.work / log, hook))
        return code, time.monotonic() - started

    def reference(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)
        record = self.work / "writes.json"
        code, self.duration = self._run(
            self.args, "reference.log", {"root": str(self.out), "record": str(record)}
        )
        assert code == 0, (self.work / "reference.log").read_text()
        self.writes = json.loads(record.read_text())
        self.expected = self.outputs(self.out)
        assert not file_problems(self.out)
        shutil.move(self.out, self.work / "reference")

    def _resume_and_compare(self, label: str, after_kill: dict[str, int]) -> None:
        problems = [f"{label}: {p}" for p in readable_problems(self.out)]
        code, _ = self._run(self.resume_args, "resume.log")
        log = (self.work / "resume.log").read_text()
        if code != 0 or "Traceback" in log:
            problems.append(f"{label}: resume exited {code}:\n{log[-3000:]}")
        else:
            final = self.progress(self.out)
            for key, value in after_kill.items():
                if final[key] < value:
                    problems.append(f"{label}: {key} went down from {value} to {final[key]} on resume")
            problems += [f"{label}: {d}" for d in differences(self.expected, self.outputs(self.out))]
            problems += [f"{label}: left behind {p}" for p in file_problems(self.out)]
        self.problems += problems

    def _progress(self, label: str, when: str) -> dict[str, int]:
        try:
            return self.progress(self.out) if self.out.exists() else {}
        except Exception as exc:  # a torn file: reported, and readable_problems names it
            self.problems.append(f"{label}: cannot read the progress {when}: {exc!r}")
            return {}

    def _lost(self, label: str, before: dict[str, int], after: dict[str, int]) -> None:
        for key, value in before.items():
            if after.get(key, 0) < value:
                self.problems.append(
                    f"{label}: {key} is {after.get(key, 0)} after the kill, {value} before it"
                )

    def timing_kill(self, seed: int) -> None:
        shutil.rmtree(self.out, ignore_errors=True)
        delay = random.Random(seed).uniform(0.0, self.duration)
        label = f"seed {seed} (SIGKILL after {delay:.3f} s)"
        pid = self.zygote.start(self.args, self.work / "killed.log")
        try:
            time.sleep(delay)
            before = self._progress(label, "just before the kill")
        finally:
            os.kill(pid, signal.SIGKILL)  # not reaped by the zygote yet: the pid is still its child
            code = self.zygote.wait(pid)
        if code == -signal.SIGKILL:
            self.mid_run["timing"] += 1
        elif code == 0:
            self.finished_first += 1
        else:
            self.problems.append(f"{label}: exited {code}: {(self.work / 'killed.log').read_text()[-3000:]}")
            return
        after = self._progress(label, "after the kill")
        self._lost(label, before, after)
        self._resume_and_compare(label, after)

    def event_kill(self, n: int, when: str, why: str) -> None:
        """Kill the run just ``when`` ("before" or "after") its ``n``-th atomic write."""
        shutil.rmtree(self.out, ignore_errors=True)
        label = f"{why} (SIGKILL {when} atomic write {n}/{len(self.writes)}: {self.writes[n - 1]['file']})"
        code, _ = self._run(self.args, "killed.log", {"root": str(self.out), "kill_at": n, "when": when})
        if code != -signal.SIGKILL:
            self.problems.append(f"{label}: expected death by SIGKILL, exited {code}")
            return
        self.mid_run["event"] += 1
        # Exactly what had been written durably when the kill came.
        before = progress_after(self.writes, n if when == "after" else n - 1)
        after = self._progress(label, "after the kill")
        self._lost(label, before, after)
        self._resume_and_compare(label, after)

    def check(self, command: str, seed_base: int, boundaries: tuple[str, ...] = ()) -> None:
        """TIMING_POINTS timing kills, EVENT_POINTS seeded write-event kills, and a kill just after
        the last write of each file named by ``boundaries`` (a substring of its path)."""
        self.reference()
        for i in range(TIMING_POINTS):
            self.timing_kill(seed_base + i)
        for i in range(EVENT_POINTS):
            rng = random.Random(seed_base + 1000 + i)
            n, when = rng.randint(1, len(self.writes)), rng.choice(["before", "after"])
            self.event_kill(n, when, f"seed {seed_base + 1000 + i}")
        for name in boundaries:
            last = max(i for i, w in enumerate(self.writes, start=1) if name in w["file"])
            self.event_kill(last, "after", f"the last write of {name}")
        events = EVENT_POINTS + len(boundaries)
        print(
            f"\n{command}: uninterrupted {self.duration:.2f} s, {len(self.writes)} atomic writes; "
            f"timing kills mid-run {self.mid_run['timing']}/{TIMING_POINTS} "
            f"(finished before the kill: {self.finished_first}); "
            f"write-event kills {self.mid_run['event']}/{events}"
        )
        assert not self.problems, f"{command}: {len(self.problems)} problem(s):\n" + "\n".join(self.problems)
        assert self.mid_run["timing"] >= 2, f"only {self.mid_run['timing']} timing kills landed mid-run"


def test_train_killed_at_random_points_resumes_to_the_same_run(zygote, data, tmp_path):
    out = str(tmp_path / "out")
    args = ["train", "--data", str(data), "--preset", "srgnn", "--out", out, *TRAIN_FLAGS, "--quiet"]
    campaign = KillCampaign(zygote, tmp_path, args, [*args, "--resume"], train_outputs, train_progress)
    # After the last epoch's last.pt and before its metrics.jsonl line: nothing is left to train.
    campaign.check("train", seed_base=0, boundaries=("last.pt",))


def test_infer_intents_killed_at_random_points_resumes_to_the_same_intents(zygote, data, tmp_path):
    out = str(tmp_path / "out")
    args = ["infer-intents", "--data", str(data), "--preset", "srgnn", "--out", out, *STAGE1_FLAGS, "--quiet"]
    campaign = KillCampaign(zygote, tmp_path, args, args, intent_outputs, cache_progress)
    campaign.check("infer-intents", seed_base=100, boundaries=("answer_cache/",))


def test_run_killed_at_random_points_resumes_to_the_same_results(zygote, data, tmp_path):
    out = str(tmp_path / "out")
    args = ["run", "--data", str(data), "--preset", "srgnn", "--out", out, *STAGE1_FLAGS, *TRAIN_FLAGS]
    campaign = KillCampaign(
        zygote, tmp_path, [*args, "--quiet"], [*args, "--quiet"], run_outputs, run_progress
    )
    campaign.check("run", seed_base=200, boundaries=("srgnn/last.pt", "llm4sbr/last.pt"))


# ---------------------------------------------------------------- Ctrl-C


def _interrupt(args: list[str], ready: Callable[[], bool], cwd: Path) -> subprocess.CompletedProcess:
    """Start ``python -m llm4sbr ARGS``, send SIGINT once ``ready()`` (its work has begun).

    The child gets SIGINT's default disposition: a test run started in the background of a
    non-interactive shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm4sbr", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not ready():
            assert proc.poll() is None, f"finished before the interrupt: {proc.communicate()}"
            assert time.monotonic() < deadline, "never got going"
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _assert_interrupted(done: subprocess.CompletedProcess, command: str, out: Path) -> None:
    assert done.returncode == 130, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith(f"llm4sbr {command}: interrupted")]
    assert len(lines) == 1, done.stderr
    assert not file_problems(out)
    assert not readable_problems(out)


def test_ctrl_c_stops_train_with_exit_code_130_and_a_resume_hint(data, tmp_path):
    out = tmp_path / "out"
    # Many epochs, so the interrupt lands in training, after the first checkpoint.
    args = ["train", "--data", str(data), "--preset", "srgnn", "--out", str(out), *TRAIN_FLAGS, "--quiet"]
    args += ["--epochs", "500", "--patience", "500"]
    done = _interrupt(args, lambda: (out / "metrics.jsonl").exists(), tmp_path)
    _assert_interrupted(done, "train", out)
    assert "--resume" in done.stderr
    assert 1 <= train_progress(out)["last.pt epochs"] < 500


def test_ctrl_c_stops_infer_intents_with_exit_code_130_and_a_resume_hint(tmp_path):
    data = write_log(tmp_path / "big", n_sessions=600, n_items=40, seed=1)
    out = tmp_path / "out"
    args = ["infer-intents", "--data", str(data), "--preset", "srgnn", "--out", str(out), *STAGE1_FLAGS]
    args += ["--llm-batch-size", "1", "--quiet"]
    cache = out / "answer_cache"
    done = _interrupt(args, lambda: cache.is_dir() and any(cache.glob("*.json")), tmp_path)
    _assert_interrupted(done, "infer-intents", out)
    assert "rerun the same command" in done.stderr
    assert cache_progress(out)["answer_cache entries"] >= 1
    assert not (out / "meta.json").exists()  # stage 1 never got to write its output


def test_an_interrupt_while_the_temporary_file_is_being_locked_leaves_no_file(tmp_path, monkeypatch):
    """Ctrl-C can land after the temporary file exists and before the writer's own cleanup
    would know it: the file must still go."""
    import llm4sbr.atomic as atomic

    def interrupted(fd: int) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "_lock", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomic(tmp_path / "answers.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
