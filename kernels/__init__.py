"""Fused kernels for session-graph models, installed as ``llm4sbr.kernels``.

Functional API (each op has a Triton forward + backward, an ``autograd.Function`` and a
pure-PyTorch ``<op>_ref`` from docs/method.md; see the op's file for the math):

* :func:`gnn_step`: one gated-GNN propagation step of SR-GNN (§3.1).
* :func:`attn_pool`: SR-GNN's attention readout over the valid positions of a session (§3.1).
* :func:`align_uniform_loss`: view-averaged alignment + uniformity loss (DirectAU, §3.3).
* :func:`linear_cross_entropy`: the scoring head's linear layer fused with cross-entropy,
  chunked over items so the [B, n_items] logits never exist at once (§3.5; its CPU path and
  ``use_backend("torch")`` run the chunked PyTorch version, not the materialising reference).

:func:`use_backend` forces the Triton or reference path; by default Triton runs on CUDA (or
on CPU under ``TRITON_INTERPRET=1``) and the reference everywhere else.

Packed ops (``packed.py``, pure PyTorch, no backend dispatch): :func:`gnn_step_packed` and
:func:`attn_pool_packed` compute gnn_step and attn_pool on a batch's distinct nodes without
padding, with the step matrix from :func:`packed_step_matrix`.
"""

from ._launch import HAS_TRITON, current_backend, use_backend
from .align_uniform import align_uniform_loss, align_uniform_loss_ref
from .attn_pool import attn_pool, attn_pool_ref
from .gnn_step import gnn_step, gnn_step_ref
from .linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref
from .packed import attn_pool_packed, gnn_step_packed, packed_step_matrix

__all__ = [
    "HAS_TRITON",
    "align_uniform_loss",
    "align_uniform_loss_ref",
    "attn_pool",
    "attn_pool_packed",
    "attn_pool_ref",
    "current_backend",
    "gnn_step",
    "gnn_step_packed",
    "gnn_step_ref",
    "linear_cross_entropy",
    "linear_cross_entropy_ref",
    "packed_step_matrix",
    "use_backend",
]
