"""llm4sbr: LLM4SBR session-based recommendation (arXiv 2402.13840) as production software.

``import llm4sbr`` needs only torch and numpy: triton, numba, transformers and recbole are
imported lazily by the features that use them.
"""

__version__ = "0.1.0"
