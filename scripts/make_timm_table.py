"""Write convdiff/data/timm_models.json: every timm architecture and its default pretrained config.

A dev tool, run when the timm pin changes; the JSON it writes is committed so that the zoo's
catalog can check a ``timm:<name>`` and know its preprocessing and where its weights come from
without importing timm (which imports torch) in the orchestrating process. timm is imported in
a child interpreter, like scripts/make_imagenet_classes.py does with torchvision.

One row per name of ``timm.list_models()`` (architectures, default tag): input size,
interpolation, crop_pct, crop_mode, mean, std, num_classes, the default tag, the Hugging Face
hub id and the legacy URL of its weights ("" when it has none).

Usage: ``python scripts/make_timm_table.py [--check]`` (``--check`` compares instead of writing
and exits 1 when the committed file differs from what the installed timm says).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "convdiff" / "data" / "timm_models.json"
COLUMNS = [
    "height",
    "width",
    "interpolation",
    "crop_pct",
    "crop_mode",
    "mean",
    "std",
    "num_classes",
    "tag",
    "hf_hub_id",
    "url",
]

_CHILD = """
import json
import timm
from timm.models import get_pretrained_cfg
rows = {}
for name in timm.list_models():
    c = get_pretrained_cfg(name)
    rows[name] = [
        c.input_size[1], c.input_size[2], c.interpolation, c.crop_pct, c.crop_mode,
        list(c.mean), list(c.std), c.num_classes, c.tag or "", c.hf_hub_id or "", c.url or "",
    ]
print(json.dumps({"timm": timm.__version__, "models": rows}))
"""


def timm_table() -> dict:
    """The table as the installed timm gives it, read in a child interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        raise SystemExit(f"timm child failed ({done.returncode}): {done.stderr.strip()}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {"timm": found["timm"], "columns": COLUMNS, "models": found["models"]}


def render(table: dict) -> str:
    """One model a line: small diffs when timm's pin moves."""
    lines = [
        "{",
        f'"timm": {json.dumps(table["timm"])},',
        f'"columns": {json.dumps(table["columns"])},',
        '"models": {',
    ]
    rows = [f"{json.dumps(n)}: {json.dumps(r)}" for n, r in sorted(table["models"].items())]
    lines.append(",\n".join(rows))
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    table = timm_table()
    if "--check" in argv:
        same = OUT.exists() and json.loads(OUT.read_text(encoding="utf-8")) == table
        print(f"{OUT}: {'up to date' if same else 'DIFFERS from timm ' + table['timm']}")
        return 0 if same else 1
    OUT.write_text(render(table), encoding="utf-8")
    print(f"wrote {len(table['models'])} timm models to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
