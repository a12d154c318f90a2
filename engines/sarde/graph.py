"""ST-GCN spatial-partitioning adjacency of the COCO-18 skeleton (Yan et al. 2018, Sec. 3.6).

SARDE Eq. 2 normalises each partition's adjacency as ``Λ^-1/2 A_k Λ^-1/2``. NumPy only.
"""
from __future__ import annotations

import numpy as np

from engines.layouts import COCO18_CENTER, COCO18_EDGES, NUM_JOINTS


def hop_distance(num_nodes: int, edges: tuple[tuple[int, int], ...], max_hop: int = 1) -> np.ndarray:
    """``(V, V)`` hop distance between joints (``inf`` beyond ``max_hop``); an undirected graph."""
    adj = np.zeros((num_nodes, num_nodes))
    for i, j in edges:
        adj[i, j] = adj[j, i] = 1
    dist = np.full((num_nodes, num_nodes), np.inf)
    powers = [np.linalg.matrix_power(adj + np.eye(num_nodes), d) for d in range(max_hop + 1)]
    for d in range(max_hop, -1, -1):
        dist[powers[d] > 0] = d
    return dist


def spatial_adjacency(num_nodes: int = NUM_JOINTS, edges: tuple[tuple[int, int], ...] = COCO18_EDGES,
                      center: int = COCO18_CENTER) -> np.ndarray:
    """Normalised spatial-partitioning adjacency (ST-GCN ``strategy="spatial"``, SARDE Eq. 2).

    The 1-hop neighbourhood of each joint ``i`` is split into three subsets by the hop distance to
    the centre joint (the neck): ``k = 0`` root (the joint itself and neighbours as far from the
    centre as ``i``), ``k = 1`` centripetal (neighbours closer to the centre), ``k = 2``
    centrifugal (neighbours farther). The undirected 1-hop adjacency with self-loops is normalised
    once, ``Λ^-1/2 A Λ^-1/2`` with ``Λ^ii = Σ_j A^ij`` (Eq. 2), and then split into the three
    subsets (as ST-GCN normalises before partitioning; a per-subset degree would be zero for the
    neck's empty centripetal subset), so ``Σ_k A_k = Λ^-1/2 A Λ^-1/2``.

    Returns:
        ``(K=3, V, V)`` float32; ``A[k, j, i]`` weights neighbour ``j``'s feature into root joint
        ``i``, so graph convolution is ``X_out[..., i] = Σ_j X[..., j] A[k, j, i]`` (``X @ A_k``,
        as in ST-GCN's ``einsum('nkctv,kvw->nctw')``).
    """
    hop = hop_distance(num_nodes, edges)
    to_center = hop_distance(num_nodes, edges, max_hop=num_nodes)[:, center]  # (V,)
    adj = (hop <= 1).astype(np.float64)  # (V, V) 1-hop neighbourhood incl. self
    inv_sqrt = np.diag(adj.sum(axis=1) ** -0.5)
    norm = inv_sqrt @ adj @ inv_sqrt  # Λ^-1/2 A Λ^-1/2 (Eq. 2), symmetric
    parts = np.zeros((3, num_nodes, num_nodes))
    for i in range(num_nodes):  # root
        for j in np.flatnonzero(adj[i]):  # neighbour
            k = 0 if to_center[j] == to_center[i] else (1 if to_center[j] < to_center[i] else 2)
            parts[k, j, i] = norm[j, i]  # (V_in, V_out): used as X @ A_k
    return parts.astype(np.float32)
