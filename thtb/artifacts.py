"""Content-addressed stage outputs: ``<cache>/artifacts/<stage>/<fingerprint>/`` with a ``manifest.json``.

A stage that finished publishes a copy of its output folder under the fingerprint of everything that
determines it (its config, its inputs' fingerprints, a stage version); a rerun or another sweep job with the
same fingerprint copies the finished folder back instead of recomputing it. Publishing copies into
``<fingerprint>.partial-<pid>/`` and renames it into place, so a folder under the final name is always
complete (a killed run leaves at most a ``.partial-*`` folder, which is ignored and replaced).

(The train stage keeps its own store, :mod:`thtb.training.artifacts`, because it also resumes from
checkpoints inside the partial folder.)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class StageArtifact:
    """One stage output under its fingerprint (see module doc)."""

    def __init__(self, cache_dir: str | os.PathLike, stage: str, key: str) -> None:
        self.root = Path(cache_dir).expanduser() / "artifacts" / stage
        self.stage = stage
        self.key = key
        self.path = self.root / key

    def is_complete(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))

    def publish(self, src: str | os.PathLike, manifest: dict[str, Any], files: list[str] | None = None) -> Path:
        """Copy ``src`` (or only ``files`` of it) into the store with ``manifest``; a no-op when another
        run published the same fingerprint first."""
        if self.is_complete():
            return self.path
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f"{self.key}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        if files is None:
            shutil.copytree(src, partial, symlinks=False)
        else:
            partial.mkdir(parents=True)
            for name in files:
                shutil.copy2(Path(src) / name, partial / name)
        body = {"stage": self.stage, "fingerprint": self.key,
                "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **manifest}
        (partial / MANIFEST).write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
        try:
            os.replace(partial, self.path)
        except OSError:  # the final folder appeared meanwhile (a concurrent job): keep theirs
            shutil.rmtree(partial, ignore_errors=True)
        return self.path

    def restore(self, dst: str | os.PathLike) -> Path:
        """Copy the finished artifact's files (not the manifest) into ``dst``."""
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        for item in self.path.iterdir():
            if item.name == MANIFEST:
                continue
            target = dst / item.name
            if item.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
        return dst
