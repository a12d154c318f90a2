"""The fixed evaluation protocols of ``sarde eval`` and the daemon's windows on their held-out split.

Protocols (:data:`PROTOCOLS`): MSR Action3D X-Sub on AS1/AS2/AS3 and all 20 actions (subjects
1,3,5,7,9 train), SBU Kinect Interaction 5-fold CV (the authors' folds), UTD-MHAD X-Sub (subjects
1,3,5,7 train). Splits are by subject (SBU: by the authors' subject-pair folds), never by frame.

*Daemon windows* (:func:`daemon_window`, :class:`DaemonWindows`): a held-out recording as the
running daemon would see it, resampled to the daemon's fps, its last ``T`` frames right-aligned in
the ``T``-frame window, exactly as ``pipeline.windows`` builds them (the training windows of
``engines.sarde.data`` are centred instead).

torch and the dataset readers are imported only when a protocol is read or a window is built.
"""
from __future__ import annotations

import numpy as np

#: Protocol name -> (dataset, parameter): the split each run trains and tests on.
PROTOCOLS: dict[str, tuple[str, str | int]] = {
    "msr-as1": ("msr", "AS1"), "msr-as2": ("msr", "AS2"), "msr-as3": ("msr", "AS3"), "msr-all": ("msr", "all"),
    **{f"sbu-f{k}": ("sbu", k) for k in range(1, 6)},
    "utd-xsub": ("utd", "xsub"),
}


def load_protocol(protocol: str, data_dir) -> tuple[list, list, list[str]]:
    """``(train, test, labels)``: the ``SkeletonSequence`` lists of a protocol's two splits and its
    class names (a sequence's ``label`` is one of them).

    Raises:
        KeyError: unknown protocol. FileNotFoundError: dataset missing under ``data_dir``.
    """
    dataset, param = PROTOCOLS[protocol]
    if dataset == "msr":
        from engines.datasets.msr import ACTION_SETS, MSR_ACTIONS, load_msr_action3d, xsub_split

        actions = ACTION_SETS[param] if param != "all" else tuple(range(1, 21))
        train, test = xsub_split(load_msr_action3d(data_dir, actions=actions))
        return train, test, [MSR_ACTIONS[a - 1] for a in sorted(actions)]
    if dataset == "sbu":
        from engines.datasets.sbu import SBU_CLASSES, fold_split, load_sbu

        train, test = fold_split(load_sbu(data_dir), int(param))
        return train, test, list(SBU_CLASSES)
    from engines.datasets.utd import UTD_ACTIONS, load_utd_mhad, xsub_split as utd_split

    train, test = utd_split(load_utd_mhad(data_dir))
    return train, test, list(UTD_ACTIONS)


def daemon_window(seq, num_frames: int, num_persons: int, fps: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A window exactly as the daemon builds it: resampled to ``fps``, last ``T`` frames right-aligned.

    Args:
        seq: ``SkeletonSequence``: keypoints ``(L, M', V, 3)`` pixels + score, optional depth
            ``(L, M', V)`` metres, recorded at ``seq.fps``.
        num_frames, num_persons: the daemon's ``T`` and ``M``.
        fps: the daemon's window frame rate.

    Returns:
        ``window (3, T, V, M)`` float32 (``engines.skeleton.to_window``), ``depth (T, V, M)``
        float32 metres (0 = unknown) and the ``(start, end)`` frames holding the sequence.
    """
    from engines.sarde.data import resample
    from engines.skeleton import normalize_keypoints, to_window

    idx = resample(len(seq.keypoints), seq.fps, fps)
    kp = np.asarray(seq.keypoints, np.float32)[idx][-num_frames:]  # (L, M', V, 3)
    window = to_window(normalize_keypoints(kp, seq.frame_size), num_frames, num_persons)
    depth = np.zeros((num_frames, kp.shape[2], num_persons), np.float32)
    length = len(kp)
    if seq.depth is not None:
        d = np.asarray(seq.depth, np.float32)[idx][-num_frames:, :num_persons]  # (L, M, V)
        d = np.where(kp[:, :num_persons, :, 2] > 0, d, 0.0)
        depth[num_frames - length:, :, :d.shape[1]] = d.transpose(0, 2, 1)
    return window, depth, (num_frames - length, num_frames)


class DaemonWindows:
    """The sequences of a ``WindowDataset`` as :func:`daemon_window` items (its ``T``, ``M``, fps
    and label indices; same item dict: ``window (3, T, V, M)``, ``depth (T, V, M)`` float32,
    ``label`` int64, ``span (2,)`` int64 torch tensors)."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        import torch

        seq = self.base.sequences[i]
        window, depth, span = daemon_window(seq, self.base.num_frames, self.base.num_persons, self.base.fps)
        return {"window": torch.from_numpy(window), "depth": torch.from_numpy(depth),
                "label": torch.tensor(self.base.label_index(seq), dtype=torch.int64),
                "span": torch.tensor(span, dtype=torch.int64)}
