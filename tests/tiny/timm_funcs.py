"""Worker-side helpers (kind ``torch``) for the timm zoo tests: timm itself, no mocks."""

from __future__ import annotations

from typing import Any


def loosened_equals_kwargs(name: str, kwargs: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Build ``name`` as the zoo does (timm's init, then :func:`loosen_inits`) and as timm does
    with ``kwargs`` (e.g. ``zero_init_last=False``), same seed; say whether they are equal."""
    import timm
    import torch

    from convdiff.zoo.timm_models import loosen_inits

    torch.manual_seed(seed)
    ours = timm.create_model(name, pretrained=False)
    zeroed, scales = loosen_inits(ours)
    torch.manual_seed(seed)
    theirs = timm.create_model(name, pretrained=False, **kwargs)
    a, b = ours.state_dict(), theirs.state_dict()
    return {
        "zeroed": zeroed,
        "scales": scales,
        "equal": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
    }


def save_state_dict(name: str, path: str, seed: int) -> str:
    """A seeded timm model's state dict as .safetensors or (else) a torch .pth file."""
    import timm
    import torch

    torch.manual_seed(seed)
    state = timm.create_model(name, pretrained=False).state_dict()
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path


def fake_hub_cache(name: str, hub_id: str, cache: str, seed: int) -> str:
    """Put a seeded ``name``'s weights where huggingface_hub caches ``hub_id`` (one snapshot,
    ``refs/main`` pointing at it), as if timm had downloaded them; returns the file."""
    from pathlib import Path

    repo = Path(cache) / f"models--{hub_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True, exist_ok=True)
    return save_state_dict(name, str(repo / "snapshots" / revision / "model.safetensors"), seed)


def timm_eval_batch(name: str, paths: list[str], out: str) -> list[str]:
    """timm's own evaluation transform for ``name``'s default pretrained config
    (``resolve_data_config`` + ``create_transform``) on ``paths``, saved as NHWC to ``out``;
    returns the transform's steps as text."""
    import numpy as np
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(name, pretrained=False)
    transform = create_transform(**resolve_data_config({}, model=model))
    tensors = [transform(Image.open(p).convert("RGB")).numpy() for p in paths]
    np.save(out, np.stack(tensors).transpose(0, 2, 3, 1))
    return [repr(t) for t in transform.transforms]


def save_pt2(name: str, out_dir: str, seed: int = 0) -> str:
    """A seeded timm model (random weights, timm's init) saved as convdiff saves a torch model
    (:func:`convdiff.frameworks.torch.save`: torch.export, dynamic batch), at its default
    input size; the file's path."""
    from pathlib import Path

    import timm
    import torch

    from convdiff.frameworks import torch as torch_fw

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()
    size = list(model.pretrained_cfg["input_size"])
    return torch_fw.save(model, str(Path(out_dir) / f"{name}.pt2"), [None, *size])["path"]
