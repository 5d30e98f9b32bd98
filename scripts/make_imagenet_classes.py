"""Write convdiff/data/imagenet_classes.json: the 1000 ImageNet class names in index order.

A dev tool, run once; the small JSON it writes is committed so that convdiff never needs
torchvision in the orchestrator. The names come from torchvision's weight metadata (they ship
with the wheel, no download). torchvision is imported in a child interpreter because this
script's own process follows convdiff's rule: no framework imports in the orchestrating process.

Usage: ``python scripts/make_imagenet_classes.py [--check]`` (``--check`` compares instead of
writing and exits 1 when the committed file differs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "convdiff" / "data" / "imagenet_classes.json"

_CHILD = """
import json
from torchvision.models import ResNet50_Weights
print(json.dumps(list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])))
"""


def torchvision_categories() -> list[str]:
    """The category list of torchvision's ImageNet weights, read in a child interpreter."""
    env_python = sys.executable
    done = subprocess.run(
        [env_python, "-c", _CHILD], capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        raise SystemExit(f"torchvision child failed ({done.returncode}): {done.stderr.strip()}")
    names = json.loads(done.stdout.strip().splitlines()[-1])
    if len(names) != 1000 or not all(isinstance(n, str) and n for n in names):
        raise SystemExit(f"expected 1000 non-empty class names, got {len(names)}")
    return names


def main(argv: list[str]) -> int:
    names = torchvision_categories()
    text = json.dumps(names, indent=0, ensure_ascii=False) + "\n"
    if "--check" in argv:
        same = OUT.exists() and json.loads(OUT.read_text(encoding="utf-8")) == names
        print(f"{OUT}: {'up to date' if same else 'DIFFERS from torchvision'}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(names)} class names to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
