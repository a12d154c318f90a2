"""Worked example of README "Train on your own data": UTD-MHAD's Kinect skeletons as if they were a
site's own data, written as the converter's skeleton JSON lines (engines/datasets/convert.py).

This is the part a user writes for their own format: read each sequence, write one JSON line with
its name, label, group (subject) and the T x M x J x 3 joints (metres, the sensor's frame). Everything
after it (joint map, projection, resampling, splits) is `sarde data convert` / `sarde eval data`.

    python docs/examples/utd_to_jsonl.py ../shared/data/skeletons/utd_mhad/skeleton utd.jsonl
"""
import json
import re
import sys
from pathlib import Path

from scipy.io import loadmat

root, out = Path(sys.argv[1]), Path(sys.argv[2])
with open(out, "w", encoding="utf-8") as fh:
    for path in sorted(root.glob("a*_s*_t*_skeleton.mat")):
        action, subject, trial = (int(n) for n in re.findall(r"\d+", path.stem))
        xyz = loadmat(path)["d_skel"].transpose(2, 0, 1)  # (T, 20 joints, 3): x, y, z metres, Kinect v1 order
        fh.write(json.dumps({"name": path.stem, "label": f"a{action:02d}", "subject": f"s{subject}", "fps": 30,
                             "joints": xyz[:, None].round(4).tolist()}) + "\n")  # one person: (T, 1, 20, 3)
print(f"wrote {out}")
