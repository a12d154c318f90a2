"""The other seed papers' recognisers as back ends of the fused graph (issue 11).

Each back end replaces SARDE's ST-GCN recogniser (``engines.sarde.models.SardeNet``, key
``model.recognizer``) and keeps the daemon's one input, the ``(N, 3, T, V, M)`` window: whatever
the paper feeds its network (pseudo-heatmap volumes, a colour image, joint/bone/motion maps) is
built from the window inside the graph, by one module used by training, evaluation and the daemon
alike (it is part of the exported ONNX graph).

* ``resample``: the window's span of frames holding a skeleton, resampled to a fixed length
  (PoseC3D's uniform sampling; the time axis of the image encodings).
* ``posec3d`` (seed 002), ``pham`` (seed 001), ``tarm`` (seed 004), ``deepactsnet`` (seed 003).
"""
