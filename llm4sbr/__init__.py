"""llm4sbr: LLM4SBR session-based recommendation (arXiv 2402.13840) as production software.

``import llm4sbr`` needs only torch and numpy: triton, numba, transformers and recbole are
imported lazily by the features that use them.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``llm4sbr.Recommender`` is imported on first access, so ``import llm4sbr`` stays light."""
    if name == "Recommender":
        from llm4sbr.serving import Recommender

        return Recommender
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
