"""Compile llm4sbr.kernels' Triton kernels for a real GPU without one (imported by the kernel tests).

The interpreter (TRITON_INTERPRET=1, set by tests/conftest.py before import) turns every
@triton.jit function, triton's own tl.zeros & co. included, into an InterpretedFunction that
triton.compile cannot lower, so the compile runs in a fresh interpreter with TRITON_INTERPRET=0.
ptxas (bundled with triton) prints its register and spill report with TRITON_DUMP_PTXAS_LOG=1;
a fresh cache directory makes it run every time.

Two ways to describe a job:

* by hand: ``types`` and ``constexprs`` (:func:`compile_for_gpu`);
* from the launcher itself: :func:`record_launches` runs a launcher on ``meta`` tensors with its
  kernels replaced by recorders, and turns each launch's keyword arguments into a job that
  specialises like triton's runtime does: every pointer 16-byte aligned (as torch allocations
  are), every int argument a multiple of 16 marked divisible by 16 (and an int equal to 1 made
  the constant 1), so the compiled code is the one a GPU run of that launch would get.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator

import torch

_COMPILE_SCRIPT = r"""
import json, os, re, sys, importlib, tempfile, time
import triton
from triton.backends.compiler import GPUTarget

jobs = json.loads(sys.stdin.read())
report = {}
for job in jobs:
    module = importlib.import_module(job["module"])
    kernel = getattr(module, job["kernel"])
    constexprs = dict(job.get("constexprs", {}))
    types = dict(job.get("types", {}))
    attrs = {}
    for name, arg in job.get("args", {}).items():
        param = kernel.params[kernel.arg_names.index(name)]
        if param.is_constexpr:
            constexprs[name] = arg["value"]
        elif arg["kind"] == "pointer":
            types[name] = "*" + arg["dtype"]
            attrs[name] = True
        elif arg["kind"] == "int":
            if arg["value"] == 1:  # the runtime passes ints equal to 1 as the constant 1
                constexprs[name] = 1
                types[name] = "constexpr"
                continue
            types[name] = "i32" if -(2**31) <= arg["value"] < 2**31 else "i64"
            attrs[name] = arg["value"] % 16 == 0
        else:
            types[name] = "fp32"
    signature = {
        p.name: "constexpr" if p.is_constexpr or p.name in constexprs else types.get(p.name, "i32")
        for p in kernel.params
    }
    attrs = {
        (kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name, on in attrs.items() if on
    }
    log_file = tempfile.TemporaryFile()
    stdout = os.dup(1)
    os.dup2(log_file.fileno(), 1)  # ptxas's log goes to the C-level stdout
    start = time.perf_counter()
    error = None
    try:
        triton.compile(
            triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
            target=GPUTarget("cuda", job["arch"], 32),
            options={"num_warps": job["num_warps"]},
        )
    except Exception as exc:  # reported per kernel; the caller asserts
        error = f"{type(exc).__name__}: {exc}"[-4000:]
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        os.close(stdout)
    log_file.seek(0)
    log = log_file.read().decode(errors="replace")
    log_file.close()
    numbers = {
        key: re.search(pattern, log)
        for key, pattern in (
            ("registers", r"Used (\d+) registers"),
            ("spill_stores", r"(\d+) bytes spill stores"),
            ("spill_loads", r"(\d+) bytes spill loads"),
        )
    }
    if error is None and not all(numbers.values()):
        error = "no register report in the ptxas log:\n" + log[-4000:]
    entry = {"seconds": round(time.perf_counter() - start, 2)}
    if error is None:
        entry.update({key: int(m.group(1)) for key, m in numbers.items()})
    else:
        entry["error"] = error
    report[job["name"]] = entry
print("REPORT" + json.dumps(report))
"""


def compile_for_gpu(jobs: list[dict], cache_dir: str, arch: int = 90) -> dict[str, dict[str, int]]:
    """Compile Triton kernels to a cubin for sm_``arch`` (no GPU needed) in a subprocess.

    Each job: name, module (e.g. "llm4sbr.kernels.attn_pool"), kernel (attribute name),
    num_warps, and either types ({arg: "*fp32" | "*bf16" | "*i64" | "fp32" | "i64"...}; other
    runtime args are "i32") with constexprs ({arg: value}), or args as :func:`record_launches`
    makes them. Returns {name: {"registers", "spill_stores", "spill_loads", "seconds"}};
    raises AssertionError with triton's error when a kernel does not compile."""
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DUMP_PTXAS_LOG="1", TRITON_CACHE_DIR=cache_dir)
    jobs = [dict(job, arch=arch) for job in jobs]
    proc = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(re.search(r"^REPORT(.*)$", proc.stdout, re.M).group(1))
    errors = {name: r["error"] for name, r in report.items() if "error" in r}
    assert not errors, "kernels that do not compile:\n" + "\n".join(f"{k}: {v}" for k, v in errors.items())
    return report


_TRITON_TYPES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.uint8: "u8",
    torch.int8: "i8",
    torch.int32: "i32",
    torch.int64: "i64",
}


def _describe(value: object, constexpr: bool) -> dict[str, object]:
    """A launch argument as the compile script reads it."""
    if constexpr:
        return {"kind": "constexpr", "value": value}
    if isinstance(value, torch.Tensor):
        return {"kind": "pointer", "dtype": _TRITON_TYPES[value.dtype]}
    if isinstance(value, int) and not isinstance(value, bool):
        return {"kind": "int", "value": value}
    if isinstance(value, float):
        return {"kind": "float", "value": value}
    raise TypeError(f"cannot describe a launch argument of type {type(value).__name__}")


class _Recorder:
    """Stands in for a @triton.jit kernel: ``kernel[grid](**kwargs)`` records the launch."""

    def __init__(self, module: str, kernel: str, fn: Callable[..., object], launches: list[dict]) -> None:
        self.module, self.kernel, self.launches = module, kernel, launches
        # Parameters annotated tl.constexpr (a string under `from __future__ import annotations`).
        self.constexprs = {
            name for name, p in inspect.signature(fn).parameters.items() if "constexpr" in str(p.annotation)
        }

    def __getitem__(self, grid: object) -> Callable[..., None]:
        def launch(*args: object, **kwargs: object) -> None:
            assert not args, f"{self.kernel}: the launcher passes positional arguments"
            num_warps = kwargs.pop("num_warps", 4)
            self.launches.append(
                dict(
                    module=self.module,
                    kernel=self.kernel,
                    args={name: _describe(v, name in self.constexprs) for name, v in kwargs.items()},
                    num_warps=num_warps,
                )
            )

        return launch


@contextlib.contextmanager
def record_launches(module_name: str) -> Iterator[list[dict]]:
    """Replace every @triton.jit kernel of ``module_name`` whose name ends in ``_kernel`` by a
    recorder while the block runs; yields the list of recorded launches (compile jobs without a
    name). Run the launchers on ``meta`` tensors: nothing is computed or allocated."""
    module = importlib.import_module(module_name)
    launches: list[dict] = []
    names = [name for name in vars(module) if name.endswith("_kernel") and hasattr(vars(module)[name], "fn")]
    saved = {name: getattr(module, name) for name in names}
    try:
        for name in names:
            setattr(module, name, _Recorder(module_name, name, saved[name].fn, launches))
        yield launches
    finally:
        for name, kernel in saved.items():
            setattr(module, name, kernel)


def kernel_names(module_name: str) -> set[str]:
    """The launched @triton.jit kernels of a module (names ending in ``_kernel``)."""
    module = importlib.import_module(module_name)
    return {name for name, v in vars(module).items() if name.endswith("_kernel") and hasattr(v, "fn")}


def unique_jobs(launches: list[tuple[str, dict]]) -> list[dict]:
    """Compile jobs from (label, launch) pairs: one per distinct kernel, argument types,
    specialisation and warps (those compile to the same code; the first label names it), named
    ``<kernel>[<label>: <constexprs> warps=<n>]``."""
    jobs: dict[str, dict] = {}
    for label, launch in launches:
        args = launch["args"]
        key = json.dumps(
            {
                "kernel": launch["kernel"],
                "warps": launch["num_warps"],
                "args": {
                    k: ("int", a["value"] == 1, a["value"] % 16 == 0, abs(a["value"]) >= 2**31)
                    if a["kind"] == "int"
                    else (a["kind"], a.get("dtype"), a["value"] if a["kind"] == "constexpr" else None)
                    for k, a in args.items()
                },
            },
            sort_keys=True,
        )
        if key not in jobs:
            consts = " ".join(f"{k}={a['value']}" for k, a in args.items() if a["kind"] == "constexpr")
            name = f"{launch['kernel']}[{label}: {consts} warps={launch['num_warps']}]"
            jobs[key] = dict(launch, name=name)
    return list(jobs.values())


def format_report(report: dict[str, dict[str, int]]) -> str:
    return "\n".join(
        f"{name}: {r['registers']} registers, {r['spill_stores']} B spill stores, "
        f"{r['spill_loads']} B spill loads ({r['seconds']} s)"
        for name, r in sorted(report.items())
    )


class RegisterSpillWarning(UserWarning):
    """A kernel known to spill registers at a tested configuration still does (numbers included)."""


def check_spills(report: dict[str, dict[str, int]], may_spill: tuple[str, ...] = ()) -> None:
    """Assert no kernel spills registers, except those whose job name starts with one of
    ``may_spill``: their spills are reported with a :class:`RegisterSpillWarning` (in pytest's
    warnings summary), with the numbers, rather than failed."""
    spilling = {name: r for name, r in report.items() if r["spill_stores"] or r["spill_loads"]}
    known = {name: r for name, r in spilling.items() if name.startswith(may_spill)}
    if known:
        warnings.warn(
            RegisterSpillWarning("register spills for sm_90:\n" + format_report(known)), stacklevel=2
        )
    unexpected = {name: r for name, r in spilling.items() if name not in known}
    assert not unexpected, "unexpected register spills for sm_90:\n" + format_report(unexpected)
