import subprocess
import sys
import textwrap

BLOCKED = ("triton", "transformers", "bitsandbytes", "accelerate", "gguf", "numba", "recbole")


def run_without(blocked, code):
    """Run ``code`` in a fresh interpreter in which importing any of ``blocked`` fails."""
    prelude = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {tuple(blocked)!r}:
                    raise ImportError(f'{{name}} is blocked for this test')
        sys.meta_path.insert(0, Block())
        """
    )
    env = {"PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "0"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_import_works_without_triton_and_the_llm_extra():
    proc = run_without(
        BLOCKED,
        """
        import sys, torch
        import llm4sbr, llm4sbr.kernels, llm4sbr.models, llm4sbr.data, llm4sbr.intent, llm4sbr.serving
        import llm4sbr.training, llm4sbr.pipeline, llm4sbr.cli
        from llm4sbr.kernels import HAS_TRITON, use_backend
        assert not HAS_TRITON
        model = llm4sbr.models.SRGNN(10, dim=4)
        batch = {"item_seq": torch.tensor([[1, 2, 0]]), "item_seq_len": torch.tensor([2])}
        assert model.full_sort_predict(batch).shape == (1, 11)
        try:
            with use_backend("triton"):
                model.full_sort_predict(batch)
        except RuntimeError as e:
            assert "triton is not installed" in str(e), e
        else:
            raise AssertionError("forcing triton without triton must raise")
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in ("triton", "transformers", "numba"))
        assert not loaded, loaded
        print("ok")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_serving_loads_no_stage_one_engine_and_every_intent_name_resolves():
    proc = run_without(
        (),
        """
        import sys
        import llm4sbr.serving
        stage_one = ("infer", "backends", "backend_llamacpp", "backend_openai", "budget", "requests_io")
        loaded = [m for m in stage_one if f"llm4sbr.intent.{m}" in sys.modules]
        assert not loaded, loaded
        import llm4sbr.intent as intent
        import llm4sbr.intent.localize
        for name in intent.__all__:
            value = getattr(intent, name)
            assert name.isupper() or value.__module__.startswith("llm4sbr.intent"), name
        assert callable(intent.localize) and set(intent.__all__) <= set(dir(intent))
        print("ok")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_forcing_triton_on_cpu_without_the_interpreter_raises():
    proc = run_without(
        (),
        """
        import torch
        from llm4sbr.kernels import attn_pool, use_backend
        h = torch.randn(1, 2, 3)
        mask = torch.ones(1, 2, dtype=torch.bool)
        args = (h, mask, torch.randn(1, 3), torch.randn(3, 3), torch.randn(3), torch.randn(3))
        try:
            with use_backend("triton"):
                attn_pool(*args)
        except RuntimeError as e:
            assert "TRITON_INTERPRET" in str(e), e
            print("ok")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_kernels_are_installed_as_a_subpackage_not_top_level():
    import llm4sbr.kernels

    assert llm4sbr.kernels.__name__ == "llm4sbr.kernels"
    proc = subprocess.run([sys.executable, "-c", "import kernels"], capture_output=True, text=True, cwd="/")
    assert proc.returncode != 0
