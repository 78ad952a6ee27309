"""Drop-in integrations with existing session-based recommendation code.

* :mod:`llm4sbr.integrations.recbole`: ``SRGNN`` and ``LLM4SBR`` as RecBole
  ``SequentialRecommender`` models (needs the ``recbole`` extra).
* :mod:`llm4sbr.integrations.srgnn`: ``SessionGraph``, the reference SR-GNN module's interface
  (parameter names included, so SR-GNN scripts and checkpoints run unchanged), and SR-GNN
  pickle read/write.

Neither is imported here, so ``import llm4sbr.integrations`` never needs recbole.
"""
