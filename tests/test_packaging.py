"""What operators deploy with (deploy/): the Grafana dashboard queries only metrics the stage
really exposes, the systemd unit is hardened and verifiable, the Dockerfile runs only steps CI runs,
and the example config validates and agrees with the image's ports and volumes."""
from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import load_config
from pipeline.metrics import Health, StageMetrics, serve

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "sarde-dashboard.json"
UNIT = DEPLOY / "sarde.service"
DOCKERFILE = DEPLOY / "Dockerfile"
EXAMPLE = DEPLOY / "config.example.yaml"

_NAME = re.compile(r"sarde_[a-z_]+")


# ---------------------------------------------------------------- dashboard


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def _queried_names(dash: dict) -> set[str]:
    exprs = [t["expr"] for p in _panels(dash) for t in p.get("targets", []) if "expr" in t]
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if var.get("type") == "query":
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return {n for e in exprs for n in _NAME.findall(e)}


def _touch_every_metric(metrics: StageMetrics) -> int:
    """One child of every labelled metric and one sample of every metric, so each one appears in the
    exposition; returns how many metrics were touched."""
    n = 0
    for m in vars(metrics).values():
        if isinstance(m, Info):
            m.info({"version": "test"})
            n += 1
            continue
        if not isinstance(m, (Counter, Gauge, Histogram)):
            continue
        child = m.labels(*["x"] * len(m._labelnames)) if m._labelnames else m
        if isinstance(child, Histogram):
            child.observe(0.01)
        elif isinstance(child, Gauge):
            child.set(1)
        else:
            child.inc()
        n += 1
    return n


@pytest.fixture(scope="module")
def exposed_names() -> set[str]:
    """Sample names of the real /metrics over a loopback socket."""
    metrics = StageMetrics()
    assert _touch_every_metric(metrics) >= 30
    health = Health(metrics, ["cam0"], 10.0)
    server, port = serve(metrics, health, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert r.status == 200
            text = r.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_dashboard_structure():
    dash = _dashboard()
    assert dash["schemaVersion"] == 39
    names = {v["name"]: v for v in dash["templating"]["list"]}
    assert names["DS_PROMETHEUS"]["type"] == "datasource"
    cam = names["camera"]
    q = cam["query"]["query"] if isinstance(cam["query"], dict) else cam["query"]
    assert q == "label_values(sarde_frames_received_total, camera)"
    assert cam["datasource"]["uid"] == "${DS_PROMETHEUS}"
    panels = _panels(dash)
    assert len(panels) >= 15
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p.get("targets"), f"panel {p['title']!r} has no target"
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for must in ("rate(sarde_frames_processed_total", "sarde_event_latency_seconds_bucket",
                 "by (le, camera)", "histogram_quantile(0.5", "histogram_quantile(0.99"):
        assert must in exprs, must


def test_dashboard_names_are_exposed(exposed_names):
    queried = _queried_names(_dashboard())
    assert len(queried) >= 20
    missing = sorted(queried - exposed_names)
    assert not missing, f"dashboard queries metrics the stage does not expose: {missing}"


def test_dashboard_name_check_catches_a_wrong_name(exposed_names):
    """The checker itself: a misspelt or unsuffixed name is not in the exposition."""
    bad = {"dashboard": None, "panels": [{"targets": [{"expr": "rate(sarde_frames_processed[1m]) + sarde_event_latency_seconds"}]}],
           "templating": {"list": []}}
    assert _queried_names(bad) == {"sarde_frames_processed", "sarde_event_latency_seconds"}
    assert not (_queried_names(bad) & exposed_names)
    assert {"sarde_frames_processed_total", "sarde_event_latency_seconds_bucket", "sarde_build_info",
            "sarde_camera_up"} <= exposed_names


# ---------------------------------------------------------------- systemd unit


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",),
                                   comment_prefixes=("#", ";"), empty_lines_in_values=False)
    cp.optionxform = str  # keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_hardening():
    svc = _unit()["Service"]
    want = {
        "User": "sarde", "Group": "sarde", "DynamicUser": "no",
        "ExecStart": "/opt/sarde/.venv/bin/sarde run --config /etc/sarde/config.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure", "RestartSec": "5", "RestartPreventExitStatus": "2",
        "KillSignal": "SIGTERM", "TimeoutStopSec": "30",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
        "ReadWritePaths": "/var/lib/sarde", "StateDirectory": "sarde", "WorkingDirectory": "/var/lib/sarde",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "LockPersonality": "yes", "RestrictRealtime": "yes", "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
    }
    for key, value in want.items():
        assert key in svc, f"[Service] lacks {key}="
        assert svc[key].strip() == value, f"{key}={svc[key]!r}, want {value!r}"
    assert re.fullmatch(r"\d+[KMGT]", svc["MemoryMax"]), svc["MemoryMax"]
    text = UNIT.read_text()
    assert re.search(r"^#\s*DeviceAllow=/dev/nvidia", text, re.M) or "/dev/nvidia*" in text
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_exec_matches_image():
    exec_start = shlex.split(_unit()["Service"]["ExecStart"])
    entry, cmd = _docker_json("ENTRYPOINT"), _docker_json("CMD")
    assert exec_start == entry + cmd


def test_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    # verify checks that ExecStart's binary exists: point it at this checkout's venv (the same
    # console script `make setup` creates under /opt/sarde on a host).
    binary = ROOT / ".venv" / "bin" / "sarde"
    if not binary.exists():
        pytest.skip(f"{binary} does not exist (run `make setup`)")
    unit = tmp_path / "sarde.service"
    unit.write_text(UNIT.read_text().replace("/opt/sarde/.venv/bin/sarde", str(binary)))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    # unknown keys and bad values are only warnings (exit 0): any line about the unit is a failure
    assert r.returncode == 0 and str(unit) not in out and "sarde.service" not in out, out


# ---------------------------------------------------------------- Dockerfile


def _docker_instructions() -> list[tuple[str, str]]:
    lines, cur = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        lines.append((word.upper(), rest.strip()))
        cur = ""
    assert not cur, "Dockerfile ends inside a continued line"
    return lines


def _docker_json(instr: str) -> list[str]:
    vals = [rest for word, rest in _docker_instructions() if word == instr]
    assert len(vals) == 1, f"want one {instr}, found {len(vals)}"
    return json.loads(vals[0])


def _install_rtsp_packages() -> set[str]:
    text = (ROOT / ".ci" / "install-rtsp.sh").read_text()
    block = re.search(r"PKGS=\((.*?)\)", text, re.S)
    assert block, ".ci/install-rtsp.sh: no PKGS=( ... )"
    return set(block.group(1).split())


def _command_allowed(words: list[str], apt_ok: set[str]) -> bool:
    if words == ["make", "setup"] or words == ["bash", ".ci/install-rtsp.sh"]:
        return True
    if words[0] in ("useradd", "groupadd", "mkdir", "chown"):
        return True
    if words[:2] == ["apt-get", "update"]:
        return True
    if words[:2] == ["apt-get", "install"]:
        pkgs = [w for w in words[2:] if not w.startswith("-")]
        return bool(pkgs) and set(pkgs) <= apt_ok
    if words == ["rm", "-rf", "/var/lib/apt/lists/*"]:
        return True
    return False


def test_dockerfile_runs_only_ci_steps():
    # the packages CI's install script may install, plus `make`, which CI runs everything with
    apt_ok = _install_rtsp_packages() | {"make"}
    runs = [rest for word, rest in _docker_instructions() if word == "RUN"]
    assert runs, "no RUN step"
    seen = []
    for run in runs:
        assert not run.startswith("["), "use the shell form so that each command can be checked"
        for cmd in re.split(r"&&|;|\|\|", run):
            words = shlex.split(cmd)
            assert words, f"empty command in RUN {run!r}"
            assert _command_allowed(words, apt_ok), f"RUN step CI does not run: {cmd.strip()!r}"
            seen.append(words)
    assert ["make", "setup"] in seen
    assert not re.search(r"\bpip\b", " ".join(runs)), "install through `make setup`, not pip"
    assert _docker_instructions()[0] == ("FROM", "python:3.11-slim-bookworm")


def _make_targets() -> dict[str, tuple[list[str], list[str]]]:
    """target -> (prerequisites, recipe lines) of the Makefile."""
    targets: dict[str, tuple[list[str], list[str]]] = {}
    cur = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t") and cur is not None:
            targets[cur][1].append(line.strip())
            continue
        m = re.match(r"^([^\s:=#][^:=]*):(?!=)\s*(.*)$", line)
        if m:
            cur = m.group(1).strip()
            targets[cur] = (m.group(2).split(), [])
        elif line.strip() and not line.startswith("#"):
            cur = None
    return targets


def test_ci_path_is_the_images_path():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*make test\s*$", ci, re.M), ".ci/run does not call `make test`"
    targets = _make_targets()
    assert "setup" in targets["test"][0], "Makefile: test must depend on setup"
    venv = re.search(r"^VENV\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    setup_prereqs = targets["setup"][0]
    assert setup_prereqs == ["$(VENV)/.installed"]
    recipe = " ".join(targets["$(VENV)/.installed"][1])
    assert "pip install -q -e '.[train,export,dev]'" in recipe

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "setup.cfg")
    scripts = dict(
        (k.strip(), v.strip()) for k, _, v in
        (ln.partition("=") for ln in cfg["options.entry_points"]["console_scripts"].strip().splitlines()))
    assert scripts["sarde"] == "pipeline.cli:main"

    workdirs = [rest for word, rest in _docker_instructions() if word == "WORKDIR"]
    copies = [rest.split() for word, rest in _docker_instructions() if word == "COPY"]
    assert [".", "/opt/sarde"] in copies and "/opt/sarde" in workdirs
    # `make setup` ran in /opt/sarde: its venv's console script is the entry point
    assert _docker_json("ENTRYPOINT") == [f"/opt/sarde/{venv}/bin/sarde"]
    assert _docker_json("CMD") == ["run", "--config", "/etc/sarde/config.yaml"]
    users = [rest for word, rest in _docker_instructions() if word == "USER"]
    assert users == ["sarde"]


# ---------------------------------------------------------------- example config


def test_example_config_validates_and_matches_image(tmp_path):
    cfg = load_config(EXAMPLE)
    assert cfg.sources and all(s.url.startswith(("rtsp://", "rtsps://")) for s in cfg.sources)
    assert cfg.metrics.host == "0.0.0.0"
    assert cfg.events.journal.parent == Path("/var/lib/sarde")
    # a non-loopback PUB needs CURVE keys at start-up (or insecure, which the example does not use)
    assert cfg.transport.curve is not None and cfg.transport.curve.server_key is not None

    instr = _docker_instructions()
    exposed = {int(p.split("/")[0]) for word, rest in instr if word == "EXPOSE" for p in rest.split()}
    assert exposed == {cfg.metrics.port, int(cfg.events.pub_endpoint.rsplit(":", 1)[1]), cfg.web.port}
    health = [rest for word, rest in instr if word == "HEALTHCHECK"]
    assert len(health) == 1
    url = re.search(r"http://127\.0\.0\.1:(\d+)/healthz", health[0])
    assert url and int(url.group(1)) == cfg.metrics.port
    assert "urllib" in health[0] and "curl" not in health[0]

    # the container's config is the example with the data mount at /data; its paths lie in the volumes
    volumes = set(json.loads(next(rest for word, rest in instr if word == "VOLUME")))
    assert volumes == {"/data", "/var/lib/sarde"}
    container = EXAMPLE.read_text().replace("/opt/sarde-data", "/data")
    p = tmp_path / "container.yaml"
    p.write_text(container)
    ccfg = load_config(p)
    for path in (ccfg.paths.data_dir, ccfg.paths.pose_model_dir, ccfg.paths.artifact_dir,
                 ccfg.events.journal, ccfg.media.snapshot_dir):
        assert any(path == Path(v) or Path(v) in path.parents for v in volumes), path
