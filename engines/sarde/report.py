"""The markdown (and JSON) reports of ``sarde eval``: one run's ``result.md`` (:func:`run_markdown`)
and the summary of every run under an output folder (:func:`summarise`), its tables laid out like
SARDE's Tables 3-4 (:func:`render`).

Input of the summary: the ``result.json`` of every run under an output folder (``OUT/<protocol>/<run>/result.json``,
written by :func:`engines.sarde.evaluate.run_one`; ``<run>`` is the variant, or ``<variant>-seed<k>``
for extra seeds). Output: markdown (and a JSON twin) with, per dataset,

* top-1 (%) of every variant on every protocol of the dataset, side by side, with the dataset mean
  (MSR: AS1/AS2/AS3 average, as published; SBU: 5-fold mean; UTD: X-Sub), the same mean on windows
  built exactly as the daemon builds them, and the published numbers (``configs/experiments/published.yaml``);
* the share of the 2D-only -> 3D-oracle gap that estimated depth closes:
  ``(top1(variant) - top1(2d)) / (top1(oracle) - top1(2d))`` on the dataset means (only defined
  when the oracle beats the 2D baseline), per training length (:data:`FAMILIES`: the 30-epoch
  variants, and the ``-e60`` ones against ``2d-e60`` / ``oracle-e60``);
* the held-out depth error of the depth-estimating variants (root-relative mm, abs-rel).

Runs of one (protocol, variant) with several seeds are averaged; the cell shows the mean and, when
there is more than one seed, the sample standard deviation and the seed count. A dataset mean over
an incomplete set of protocols is shown in parentheses with the count, never as if it were complete.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from engines.sarde.recipes import EXPERIMENTS

#: dataset -> (title, protocols averaged for the dataset mean, key of the published mean, extra protocols)
DATASETS: dict[str, tuple[str, list[str], str, list[str]]] = {
    "msr": ("MSR Action3D, cross-subject (AS1/AS2/AS3 mean; all 20 actions apart)",
            ["msr-as1", "msr-as2", "msr-as3"], "msr-as", ["msr-all"]),
    "sbu": ("SBU Kinect Interaction, 5-fold cross-validation (authors' folds)",
            [f"sbu-f{k}" for k in range(1, 6)], "sbu", []),
    "utd": ("UTD-MHAD, cross-subject", ["utd-xsub"], "utd-xsub", []),
}
#: Table order of the variants; others follow alphabetically.
VARIANT_ORDER = ["2d", "series", "inception", "oracle", "mse", "noskip", "score", "2d-score", "oracle-rel",
                 "series-rel", "2d-e60", "series-e60", "oracle-e60"]
#: Families of runs that differ only in training length: (suffix, title) - each gets its own gap line.
FAMILIES = (("", "30 epochs"), ("-e60", "60 epochs"))
#: Variants that estimate depth (their gap closure is reported).
ESTIMATED = ("series", "inception", "mse", "noskip", "score", "series-rel")


def load_results(out_root: Path) -> list[dict]:
    """Every ``result.json`` under ``out_root``, sorted by path."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(out_root).glob("*/*/result.json"))]


def _group(results: list[dict], key: str) -> dict[tuple[str, str], list[float]]:
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in results:
        if r.get(key) is not None:
            cells[(r["protocol"], r["variant"])].append(float(r[key]))
    return cells


def _variants(results: list[dict], protocols: list[str]) -> list[str]:
    found = {r["variant"] for r in results if r["protocol"] in protocols}
    return [v for v in VARIANT_ORDER if v in found] + sorted(found - set(VARIANT_ORDER))


def _cell(values: list[float] | None, scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f} ({len(values)})"


def dataset_table(results: list[dict], dataset: str, published: dict) -> dict:
    """Top-1 table of one dataset as data: ``{"variants": {v: {protocol: [top1...], "mean": x, "n": k}}, ...}``.

    ``mean`` is the mean over the dataset's mean protocols of the per-protocol seed means (``None`` if
    the variant has no run there); ``n`` how many of those protocols it covers.
    """
    title, protocols, pub_key, extra = DATASETS[dataset]
    cells = _group(results, "top1")
    daemon = _group(results, "daemon_top1")
    depth = _group(results, "depth_rootrel_mm")
    absrel = _group(results, "depth_absrel")
    table: dict = {"title": title, "protocols": protocols + extra, "mean_protocols": protocols,
                   "published": published.get(pub_key, []),
                   "published_by_protocol": {p: published.get(p, []) for p in protocols + extra}, "variants": {}}
    for v in _variants(results, protocols + extra):
        row = {p: cells.get((p, v), []) for p in protocols + extra}
        means = [statistics.fmean(row[p]) for p in protocols if row[p]]
        daemon_means = [statistics.fmean(daemon[(p, v)]) for p in protocols if daemon.get((p, v))]
        d = [x for p in protocols for x in depth.get((p, v), [])]
        a = [x for p in protocols for x in absrel.get((p, v), [])]
        table["variants"][v] = {**row, "mean": statistics.fmean(means) if means else None, "n": len(means),
                                "daemon_mean": statistics.fmean(daemon_means) if daemon_means else None,
                                "depth_rootrel_mm": statistics.fmean(d) if d else None,
                                "depth_absrel": statistics.fmean(a) if a else None}
    rows = table["variants"]
    complete = len(protocols)
    table["gap"] = {}
    for suffix, name in FAMILIES:
        base, oracle = rows.get(f"2d{suffix}", {}), rows.get(f"oracle{suffix}", {})
        if base.get("n") != complete or oracle.get("n") != complete:
            if not suffix:  # the main family always gets a line, saying what is missing
                table["gap"][name] = None
            continue
        gap = oracle["mean"] - base["mean"]
        table["gap"][name] = {"oracle_minus_2d": gap, "closed": {}}
        for v in (v + suffix for v in ESTIMATED):
            if rows.get(v, {}).get("n") == complete and gap > 0:
                table["gap"][name]["closed"][v] = (rows[v]["mean"] - base["mean"]) / gap
    return table


def _markdown(table: dict) -> list[str]:
    protocols, mean_protocols = table["protocols"], table["mean_protocols"]
    lines = [f"### {table['title']}", "",
             "| variant | " + " | ".join(protocols) + " | mean top-1 % | daemon windows % | depth root-rel mm "
             "| depth abs-rel |", "|---|" + "---|" * (len(protocols) + 4)]
    for v, row in table["variants"].items():
        if row["mean"] is None:
            mean = "-"
        elif row["n"] == len(mean_protocols):
            mean = f"**{100 * row['mean']:.1f}**"
        else:
            mean = f"({100 * row['mean']:.1f}, {row['n']}/{len(mean_protocols)})"
        depth = "-" if row["depth_rootrel_mm"] is None else f"{row['depth_rootrel_mm']:.1f}"
        absrel = "-" if row["depth_absrel"] is None else f"{row['depth_absrel']:.3f}"
        dmean = "-" if row["daemon_mean"] is None else f"{100 * row['daemon_mean']:.1f}"
        if row["daemon_mean"] is not None and row["n"] < len(mean_protocols):
            dmean = f"({dmean})"
        lines.append(f"| {v} | " + " | ".join(_cell(row[p]) for p in protocols)
                     + f" | {mean} | {dmean} | {depth} | {absrel} |")
    for pub in table["published"]:
        per = {p: next((f"{q['top1']:.2f}" for q in table["published_by_protocol"].get(p, [])
                        if q["source"] == pub["source"]), "") for p in protocols}
        lines.append(f"| *published: {pub['source']}* | " + " | ".join(per[p] for p in protocols)
                     + f" | {pub['top1']:.2f} | | | |")
    lines.append("")
    for name, gap in table["gap"].items():
        if gap is None:
            lines.append(f"Gap closed by estimated depth ({name}): needs 2d and oracle on every protocol of the mean.")
        elif gap["oracle_minus_2d"] <= 0:
            lines.append(f"{name}: no 2D-to-3D gap to close, the ground-truth-depth oracle is "
                         f"{100 * gap['oracle_minus_2d']:+.1f} points against 2D-only.")
        else:
            closed = ", ".join(f"{v} {100 * c:.0f} %" for v, c in gap["closed"].items()) or "no complete variant"
            lines.append(f"{name}: 2D-to-3D gap (oracle - 2d) {100 * gap['oracle_minus_2d']:+.1f} points; share "
                         f"closed by estimated depth: {closed}.")
        lines.append("")
    return lines


def render(results: list[dict], published_path: Path) -> tuple[str, dict]:
    """Markdown and JSON of every dataset table for ``results`` (run dicts; quick smoke runs are left out)."""
    results = [r for r in results if not r.get("quick")]
    published = yaml.safe_load(Path(published_path).read_text(encoding="utf-8")) or {}
    tables = {d: dataset_table(results, d, published) for d in DATASETS}
    lines = ["## Top-1 by dataset (mean over seeds; ± sample sd (seeds) where repeated)", ""]
    for table in tables.values():
        if table["variants"]:
            lines += _markdown(table)
    return "\n".join(lines), tables


def _fmt(x, pct: bool = True) -> str:
    """A fraction as a percentage with 2 decimals (``pct``), else a number with 1 decimal; ``-`` for None."""
    if x is None:
        return "-"
    return f"{100 * x:.2f}" if pct else f"{x:.1f}"


def run_markdown(r: dict) -> str:
    """``result.md`` of one run (a ``result.json`` dict): headline metrics, per-class accuracy."""
    lines = [f"# {r['protocol']} / {r['variant']}", "",
             f"- top-1 {_fmt(r['top1'])} %, top-5 {_fmt(r['top5'])} % (centred windows, n = {r['n_test']})",
             f"- top-1 on daemon windows (right-aligned T = {r['recipe']['window']['num_frames']}, "
             f"{r['recipe']['window']['fps']} fps): {_fmt(r['daemon_top1'])} %"]
    if "depth_rootrel_mm" in r:
        lines.append(f"- depth (held-out subjects): root-relative {r['depth_rootrel_mm']:.1f} mm, absolute "
                     f"{r['depth_abs_mm']:.1f} mm, abs-rel {r['depth_absrel']:.4f}")
    lines += [f"- training {r['train_seconds']:.0f} s ({r['epochs']} epochs, {r['steps']} steps), "
              f"{r['num_parameters']} parameters, {r['machine']}", "", "| class | accuracy |", "|---|---|"]
    lines += [f"| {name} | {_fmt(acc)} |" for name, acc in r["per_class"].items()]
    return "\n".join(lines) + "\n"


def summarise(out_root: Path, recipe_dir: Path = EXPERIMENTS) -> tuple[Path, Path]:
    """Collect every ``result.json`` under ``out_root`` into ``summary.md`` and ``summary.json``.

    ``summary.md`` holds the per-dataset tables of :func:`render` (variants side by side, seed means,
    published numbers from ``recipe_dir/published.yaml``, gap closed by estimated depth), then one row
    per run; ``summary.json`` the same tables as data and the rows.

    Returns:
        ``(summary.md, summary.json)`` paths.
    """
    out_root = Path(out_root)
    results = load_results(out_root)
    rows = [{k: r.get(k) for k in ("protocol", "variant", "seed", "top1", "top5", "daemon_top1", "depth_rootrel_mm",
                                   "depth_abs_mm", "depth_absrel", "train_seconds", "epochs", "num_parameters",
                                   "n_train", "n_test", "quick")} for r in results]
    report_md, tables = render(results, recipe_dir / "published.yaml")
    (out_root / "summary.json").write_text(json.dumps({"tables": tables, "runs": rows}, indent=2), encoding="utf-8")
    lines = [report_md, "## Every run", "",
             "| protocol | variant | seed | top-1 % | top-5 % | top-1 daemon windows % | depth root-rel mm | "
             "depth abs-rel | train s | epochs | params |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['variant']}{' (quick)' if r['quick'] else ''} | {r['seed']} | "
                     f"{_fmt(r['top1'])} | "
                     f"{_fmt(r['top5'])} | {_fmt(r['daemon_top1'])} | {_fmt(r['depth_rootrel_mm'], False)} | "
                     f"{'-' if r['depth_absrel'] is None else format(r['depth_absrel'], '.3f')} | "
                     f"{_fmt(r['train_seconds'], False)} | {r['epochs']} | {r['num_parameters']} |")
    md = out_root / "summary.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md, out_root / "summary.json"
