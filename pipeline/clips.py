"""Labelled clip lists: which videos to record for training and to evaluate the daemon on.

A clip list is a small YAML file (``configs/clips/*.yaml``), every key validated::

    name: fightsurv_dev
    groups_from: videos/fightsurv_dev/sources.json   # optional {clip stem: source}: the CV groups
    clips:                                           # explicit clips ...
      - path: videos/gmdcsa24_s1/Fall/13.mp4         # relative to paths.data_dir (or absolute)
        alerts: [falling]                            # labels the daemon must raise; [] = stay quiet
        label: falling                               # training label of the clip (optional)
        segments: [{label: falling, start: 0.4, end: 4.0}]   # optional, seconds from the clip start
        group: subject1                              # optional CV group (default: the file stem)
    include:                                         # ... and/or every file matching a glob
      - glob: videos/fightsurv_dev/fight/*.mp4
        alerts: [fighting]
        label: fighting

Groups are what cross-validation splits by (source video, subject): clips of one group are never
on both sides of a split. ``label`` is the clip-level training label: how windows inherit it is
decided by the training layer (``engines.sarde.datasets``), not here.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Segment(_Strict):
    label: str = Field(..., min_length=1, description="Label of the time segment.")
    start: float = Field(..., ge=0, description="Start, seconds from the clip start.")
    end: float = Field(..., ge=0, description="End, seconds from the clip start.")


class ClipSpec(_Strict):
    path: str = Field(..., min_length=1, description="Video file, relative to paths.data_dir or absolute.")
    alerts: list[str] = Field(default_factory=list, description="Alert labels the daemon must raise on this clip; empty = no alert.")
    label: str | None = Field(None, description="Clip-level training label.")
    segments: list[Segment] = Field(default_factory=list, description="Optional labelled time segments.")
    group: str | None = Field(None, description="Cross-validation group (default: groups_from, else the file stem).")


class IncludeSpec(_Strict):
    glob: str = Field(..., min_length=1, description="Glob relative to paths.data_dir.")
    alerts: list[str] = Field(default_factory=list)
    label: str | None = None


class ClipListSpec(_Strict):
    name: str = Field(..., min_length=1)
    groups_from: str | None = Field(None, description="JSON {clip file stem: group}, relative to paths.data_dir.")
    clips: list[ClipSpec] = Field(default_factory=list)
    include: list[IncludeSpec] = Field(default_factory=list)


class Clip(BaseModel):
    """One resolved clip: ``path`` absolute, ``clip_id`` unique in its list (``<list>/<stem>``)."""

    clip_id: str
    path: Path
    alerts: list[str]
    label: str | None
    segments: list[Segment]
    group: str


def load_clip_list(path: str | Path, data_dir: str | Path) -> list[Clip]:
    """Read and resolve a clip list.

    Raises:
        ConfigError: unreadable YAML, an unknown key, a missing video, a glob that matches nothing,
            or two clips with one id; the message names the file and says what to fix.
    """
    path, data_dir = Path(path), Path(data_dir)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = ClipListSpec.model_validate(raw)
    except OSError as exc:
        raise ConfigError(f"clip list {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"clip list {path}: not valid YAML ({exc})") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"clip list {path}: {loc}: {err['msg']}") from exc
    groups: dict[str, str] = {}
    if spec.groups_from:
        gpath = _resolve(spec.groups_from, data_dir)
        try:
            groups = {str(k): str(v) for k, v in json.loads(gpath.read_text(encoding="utf-8")).items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(f"clip list {path}: groups_from {gpath}: not a readable JSON object ({exc})") from exc
    entries = list(spec.clips)
    for inc in spec.include:
        matches = sorted(data_dir.glob(inc.glob))
        if not matches:
            raise ConfigError(f"clip list {path}: include glob {inc.glob!r} matches no file under {data_dir}")
        entries.extend(ClipSpec(path=str(m.resolve()), alerts=inc.alerts, label=inc.label) for m in matches)
    clips, seen = [], set()
    for entry in entries:
        video = _resolve(entry.path, data_dir)
        if not video.is_file():
            raise ConfigError(f"clip list {path}: video {video} not found; fix the path or paths.data_dir")
        clip_id = f"{spec.name}/{video.parent.name}/{video.stem}"
        if clip_id in seen:
            raise ConfigError(f"clip list {path}: clip {clip_id} listed twice")
        seen.add(clip_id)
        group = entry.group or groups.get(video.stem) or video.stem
        clips.append(Clip(clip_id=clip_id, path=video, alerts=list(entry.alerts), label=entry.label,
                          segments=list(entry.segments), group=group))
    return clips


def _resolve(rel: str, data_dir: Path) -> Path:
    p = Path(rel).expanduser()
    return p if p.is_absolute() else data_dir / p


def write_results(out: Path, data: dict, markdown: str) -> None:
    """``out/results.json`` (sorted keys) and ``out/results.md`` of an evaluation command; prints the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2, sort_keys=True))
    (out / "results.md").write_text(markdown)
    print(markdown)
