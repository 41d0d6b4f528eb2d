"""`build_report.json`: what a build did with every study, file and CSV row, and the summary lines the CLI prints.

    from hubkit.dataset_builder.report import summary
    for line in summary(report): print(line)
"""

from __future__ import annotations

from pathlib import Path

from hubkit.config import BuildConfig
from hubkit.config_io import config_to_dict, write_json

REPORT_FILE = "build_report.json"


def write_report(out: Path, cfg: BuildConfig, dd: dict, entries: list[dict], bad_rows: list[dict] = (),
                 empty_splits: dict[str, str] | None = None) -> dict:
    """build_report.json: config, split sizes and every skipped study / file / empty slot with its reason.

    `dd`: the built splits ({} when nothing could be built); `empty_splits`: {split: why it holds no study}.
    """
    entries = sorted(entries, key=lambda e: int(e["study_id"]))
    report = {
        "config": config_to_dict(cfg),
        "splits": {k: len(v) for k, v in dd.items()},
        "fingerprints": {k: v._fingerprint for k, v in dd.items()},  # content_fingerprint of each split
        "empty_splits": dict(empty_splits or {}),
        "studies_built": sum(e["status"] == "built" for e in entries),
        # Studies taken from the work folder of an interrupted earlier run instead of being decoded again.
        "studies_reused": sum(bool(e.get("reused")) for e in entries),
        "studies_skipped": [{"study_id": e["study_id"], "reason": e["reason"]} for e in entries
                            if e["status"] == "skipped"],
        "csv_rows_skipped": list(bad_rows),
        "files_skipped": [{"study_id": e["study_id"], **s} for e in entries for s in e.get("skipped", [])],
        "studies_with_notes": [{"study_id": e["study_id"], "images": len(e["views"]), "notes": e["notes"]}
                               for e in entries if e["status"] == "built" and e.get("notes")],
        "picks": {e["study_id"]: e.get("picks", []) for e in entries if e["status"] == "built"},
    }
    write_json(out / REPORT_FILE, report)
    return report


def summary(report: dict, out: Path) -> list[str]:
    """What a user should see after a build: the splits, what was skipped and where the reasons are."""
    lines = [f"saved {', '.join(f'{k}: {v}' for k, v in report['splits'].items())} studies to {out} "
             f"(card: {out / 'README.md'}, report: {out / REPORT_FILE})"]
    for split, why in report.get("empty_splits", {}).items():
        lines.append(f"warning: split {split!r} is empty: {why}")
    for row in report.get("csv_rows_skipped", [])[:10]:
        lines.append(f"warning: {row['file']}:{row['line']}: {row['reason']}")
    for what in ("csv_rows_skipped", "studies_skipped", "files_skipped"):
        if report.get(what):
            lines.append(f"{what.replace('_', ' ')}: {len(report[what])} (reasons in {out / REPORT_FILE})")
    if report.get("studies_reused"):
        lines.append(f"resumed: {report['studies_reused']} studies came from the interrupted earlier run "
                     "(not decoded again)")
    return lines


def nothing_built(report: dict, out: Path) -> str:
    """The one-line error when no study could be built: how many, the first reasons, where the rest are."""
    skipped = report["studies_skipped"]
    reasons = "; ".join(f"{s['study_id']}: {s['reason']}" for s in skipped[:3])
    return (f"0 of {len(skipped)} studies could be built ({reasons}{'; ...' if len(skipped) > 3 else ''}); every "
            f"reason is in {out / REPORT_FILE}")
