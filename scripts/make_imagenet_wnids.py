"""Write convdiff/data/imagenet_wnids.json: the 1000 ILSVRC2012 WordNet ids in class order.

A dev tool, run once; the small JSON it writes is committed so that WordNet-id folders and
ground-truth files work without any other package. The ids come from timm's data files (read
as text, timm is not imported); their sorted order is torchvision's class index order, the
order of convdiff/data/imagenet_classes.json. The script checks that against timm's
synset-to-lemma table: 998 class names are one of their id's lemmas; the script lists the two
that torchvision renamed to tell duplicates apart (134 'crane bird', 639 'maillot tank suit').

Usage: ``python scripts/make_imagenet_wnids.py [--check]`` (``--check`` compares instead of
writing and exits 1 when the committed file differs).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "convdiff" / "data"
OUT = DATA / "imagenet_wnids.json"
# index -> (WordNet id, torchvision's name) checked by hand against the lemmas
ANCHORS = {
    0: ("n01440764", "tench"),
    281: ("n02123045", "tabby"),
    282: ("n02123159", "tiger cat"),
    665: ("n03785016", "moped"),
    967: ("n07920052", "espresso"),
    999: ("n15075141", "toilet tissue"),
}


def timm_info() -> Path:
    """timm's data/_info folder, found without importing timm."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("timm is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"


def main(argv: list[str]) -> int:
    info = timm_info()
    wnids = (info / "imagenet_synsets.txt").read_text(encoding="utf-8").split()
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or wnids != sorted(wnids):
        raise SystemExit(f"expected 1000 distinct sorted ids, got {len(wnids)}")
    lemmas = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines():
        wnid, _, words = line.partition("\t")
        lemmas[wnid] = [w.strip().casefold() for w in words.split(",")]
    names = json.loads((DATA / "imagenet_classes.json").read_text(encoding="utf-8"))
    for index, (wnid, name) in ANCHORS.items():
        if wnids[index] != wnid or names[index] != name or name not in lemmas[wnid]:
            raise SystemExit(f"class {index}: {wnids[index]} {names[index]!r} != {wnid} {name!r}")
    pairs = enumerate(zip(wnids, names, strict=True))
    renamed = [i for i, (w, n) in pairs if n.casefold() not in lemmas[w]]
    print(f"{1000 - len(renamed)} of 1000 class names are a lemma of their id; renamed:")
    for i in renamed:
        print(f"  {i} {wnids[i]} {names[i]!r}: {', '.join(lemmas[wnids[i]])}")
    if "--check" in argv:
        same = OUT.exists() and json.loads(OUT.read_text(encoding="utf-8")) == wnids
        print(f"{OUT}: {'up to date' if same else 'DIFFERS from timm'}")
        return 0 if same else 1
    OUT.write_text(json.dumps(wnids, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(wnids)} WordNet ids to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
