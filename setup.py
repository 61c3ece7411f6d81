"""Build hook: ship a copy of ``checkpoints/MANIFEST.json`` inside the package as ``flowlib/checkpoint_manifest.json``.

An installed flowlib has no ``checkpoints/`` folder; with this copy it knows every committed checkpoint and its
sha256, and downloads the file on first use (see ``flowlib/checkpoints.py``). The repository's manifest stays the
only one to edit: the copy is made at build time, so the two cannot drift apart. Everything else is in
``pyproject.toml``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MANIFEST = Path(__file__).resolve().parent / "checkpoints" / "MANIFEST.json"


class BuildPyWithCheckpointManifest(build_py):
    def run(self) -> None:
        super().run()
        if not MANIFEST.is_file():
            raise FileNotFoundError(f"{MANIFEST} is missing: build from a clone of the repository or its sdist")
        target = Path(self.build_lib) / "flowlib" / "checkpoint_manifest.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MANIFEST, target)


setup(cmdclass={"build_py": BuildPyWithCheckpointManifest})
