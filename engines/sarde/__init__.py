"""SARDE (2D skeleton action recognition based on depth estimation, seed paper 000, Sec. 3).

``graph`` (adjacency, NumPy), ``models`` (depth GCN, ST-GCN, fused ``SardeNet``; torch),
``losses`` (Eqs. 3-6; torch), ``data`` (training windows; torch ``Dataset``), ``train``
(training command), ``zoo`` (train-and-export on first use), ``evaluate`` (``sarde eval``: protocols, ablations). Only ``graph`` and ``zoo`` import
without torch; ``zoo`` imports torch lazily when it must train.
"""
