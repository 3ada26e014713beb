"""The bundled bot with each NLU pipeline: `handoff train` end to end, model load, held-out
scores and the operating point at the target precision.

    .venv/bin/python -m benchmarks.pipelines                  # default and DIET: ~6 min here
    .venv/bin/python -m benchmarks.pipelines --pipelines default

For each pipeline, a copy of bot/ with that pipeline as its config.yml is trained with
`handoff train --promote never` (a registry and models folder of its own, so nothing of yours
changes), timed from the command's start to its end (training and scoring); then the model is
loaded in a fresh process, as an assistant worker does (Rasa's imports, then ``Agent.load``).
Prints a table; writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = {"default": "config.yml", "diet": "config-diet.yml"}

LOAD_SCRIPT = """
import json, logging, sys, time
started = time.perf_counter()
from rasa.core.agent import Agent
imported = time.perf_counter()
logging.disable(logging.CRITICAL)
Agent.load(sys.argv[1])
loaded = time.perf_counter()
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported}))
"""


def train(name: str, work: Path) -> dict[str, Any]:
    """`handoff train` of bot/ with pipeline ``name``; its report and wall time."""
    bot = work / name / "bot"
    shutil.copytree(ROOT / "bot", bot, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "bot" / PIPELINES[name], bot / "config.yml")
    models = work / name / "models"
    env = {
        **os.environ,
        "HANDOFF_BOT_DIR": str(bot),
        "HANDOFF_DATABASE_URL": f"sqlite:///{work / name / 'registry.db'}",
    }
    env.pop("HANDOFF_FALLBACK_THRESHOLD", None)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "handoff.cli.main", "train", "--out", str(models), "--retrain",
         "--promote", "never"],
        env=env, capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"handoff train failed for {name}:\n{result.stdout[-2000:]}")
    (report,) = (models / "reports").glob("*.json")
    (model,) = models.glob("*.tar.gz")
    return {"train_s": seconds, "model": model, "report": json.loads(report.read_text())}


def load(model: Path) -> dict[str, float]:
    """Rasa's imports and ``Agent.load`` of ``model`` in a fresh process (seconds)."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(model)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    timings: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pipelines",
        default=",".join(PIPELINES),
        help=f"comma-separated, of {', '.join(PIPELINES)} (default: all)",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.pipelines.split(",") if n.strip()]
    unknown = [n for n in names if n not in PIPELINES]
    if unknown or not names:
        parser.error(f"unknown pipeline(s) {unknown}; choose from {', '.join(PIPELINES)}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pipelines-") as folder:
        for name in names:
            print(f"{name}: handoff train (bot/{PIPELINES[name]})...", flush=True)
            trained = train(name, Path(folder))
            print(
                f"{name}: trained and scored in {trained['train_s']:.0f} s; loading...", flush=True
            )
            timings = load(trained["model"])
            metrics = trained["report"]["new"]["metrics"]
            results[name] = {
                "config": f"bot/{PIPELINES[name]}",
                "handoff_train_s": round(trained["train_s"], 1),
                "import_s": round(timings["import_s"], 1),
                "load_s": round(timings["load_s"], 1),
                **{
                    k: metrics.get(k)
                    for k in ("accuracy", "top_intent_accuracy", "macro_f1", "fallback_rate")
                },
                "automated_precision": metrics.get("automated_precision"),
                "operating_point": metrics.get("operating_point"),
            }
    print()
    print("| pipeline | handoff train | imports + load | accuracy | top intent | macro-F1 "
          "| threshold | automation | precision |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        point = r["operating_point"] or {}
        print(
            f"| {name} | {r['handoff_train_s']:.0f} s | {r['import_s']:.1f} + {r['load_s']:.1f} s "
            f"| {r['accuracy']:.3f} | {r['top_intent_accuracy']:.3f} | {r['macro_f1']:.3f} "
            f"| {point.get('threshold', 0):.3f} "
            f"| {point.get('automation', 0):.1%} | {point.get('precision') or 0:.1%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
