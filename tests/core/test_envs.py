"""Tool environments (convdiff.core.envs): what can be checked without building one."""

from __future__ import annotations

import os
from pathlib import Path

from convdiff.core.envs import _relocate_scripts


def test_scripts_name_the_folder_the_environment_is_renamed_to(tmp_path: Path) -> None:
    """pip writes console scripts for the ``.partial`` folder a build happens in; after the
    rename they must start the environment's own Python (onnx2tf runs ``onnxsim``)."""
    partial, final = tmp_path / "onnx2tf-1.29.24.partial", tmp_path / "onnx2tf-1.29.24"
    (partial / "bin").mkdir(parents=True)
    script = partial / "bin" / "onnxsim"
    script.write_text(f"#!{partial}/bin/python\nfrom onnxsim import main\n")
    activate = partial / "bin" / "activate"
    activate.write_text(f'VIRTUAL_ENV="{partial}"\nPS1="({partial.name}) $PS1"\n')
    os.symlink("/usr/bin/python3", partial / "bin" / "python")  # a link is left alone
    _relocate_scripts(partial, final)
    assert script.read_text() == f"#!{final}/bin/python\nfrom onnxsim import main\n"
    assert activate.read_text() == f'VIRTUAL_ENV="{final}"\nPS1="({final.name}) $PS1"\n'
    assert os.readlink(partial / "bin" / "python") == "/usr/bin/python3"
