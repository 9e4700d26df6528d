"""Content-addressed stage outputs: ``<cache>/artifacts/<stage>/<fingerprint>/`` with a ``manifest.json``.

A stage computes its outputs in a **private staging folder** that only its own process writes
(``<fingerprint>.staging-<host>-<pid>-<token>/``, :meth:`StageArtifact.staging`), then publishes it with one
atomic rename (:meth:`StageArtifact.publish`). The manifest, written last, records the fingerprint, the
stage's counts and every file with its size and sha256, so

* what is published is exactly what that process computed, whatever else shares its run directory;
* a folder under the final name is always complete (a killed run leaves at most a staging folder);
* a reader verifies the manifest (:meth:`StageArtifact.verify`: every listed file present with its size and
  digest) before reusing an artifact; one that fails (a disk error, a hand edit) is moved aside as
  ``<fingerprint>.corrupt-<time>`` and recomputed, never served.

Staging folders whose owner process is gone (same host, pid no longer alive) are removed whenever the store
is opened (:func:`remove_stale_staging`), so a crash or a full disk does not leave the cache clogged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from thtb.fingerprint import file_digest
from thtb.io import io_error

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGING = ".staging-"
_LEGACY_PARTIAL = ".partial-"  # staging folders of earlier versions: <key>.partial-<pid>


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner(name: str) -> tuple[str | None, int | None]:
    """``(host, pid)`` of a staging folder name (``None`` parts when they cannot be read)."""
    if STAGING in name:
        parts = name.split(STAGING, 1)[1].split("-")
        if len(parts) >= 2 and parts[1].isdigit():
            return parts[0], int(parts[1])
    elif _LEGACY_PARTIAL in name:
        tail = name.split(_LEGACY_PARTIAL, 1)[1]
        if tail.isdigit():
            return _host(), int(tail)
    return None, None


def remove_stale_staging(root: Path) -> list[Path]:
    """Remove staging folders under ``root`` whose owner process (on this host) is gone; return them."""
    removed = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        host, pid = _owner(entry.name)
        if pid is None or host != _host() or pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    if removed:
        log.warning("removed %d stale staging folder(s) of finished processes under %s", len(removed), root)
    return removed


class StageArtifact:
    """One stage output under its fingerprint (see module doc)."""

    def __init__(self, cache_dir: str | os.PathLike, stage: str, key: str) -> None:
        self.root = Path(cache_dir).expanduser() / "artifacts" / stage
        self.stage, self.key, self.path = stage, key, self.root / key
        remove_stale_staging(self.root)

    # ------------------------------------------------------------------------------------ reading
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))

    def verify(self) -> list[str]:
        """Problems with the published folder (empty: complete and intact)."""
        try:
            manifest = self.manifest()
        except FileNotFoundError:
            return ["no manifest"]
        except (OSError, json.JSONDecodeError) as exc:
            return [f"unreadable manifest ({exc})"]
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            return ["the manifest lists no files (written by an older version)"]
        problems = []
        for name, entry in files.items():
            path = self.path / name
            if not path.is_file():
                problems.append(f"{name} missing")
            elif path.stat().st_size != entry.get("size"):
                problems.append(f"{name} has {path.stat().st_size} bytes, the manifest says {entry.get('size')}")
            elif file_digest(path) != entry.get("sha256"):
                problems.append(f"{name} differs from its manifest digest")
        return problems

    def is_complete(self) -> bool:
        """A published, verified artifact. A folder that fails verification is moved aside (and logged)."""
        if not (self.path / MANIFEST).is_file():
            return False
        problems = self.verify()
        if not problems:
            return True
        aside = self.root / f"{self.key}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"
        log.warning("%s artifact %s fails its manifest (%s); moved aside to %s and recomputed", self.stage,
                    self.path, "; ".join(problems[:3]), aside)
        with contextlib.suppress(OSError):
            os.replace(self.path, aside)
        return False

    def restore(self, dst: str | os.PathLike) -> Path:
        """Copy the finished artifact's files (not the manifest) into ``dst``."""
        return copy_outputs(self.path, dst)

    # ------------------------------------------------------------------------------------ writing
    def staging(self) -> Path:
        """A new, empty folder that only this process writes; :meth:`publish` it when complete."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{self.key}{STAGING}{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir()
        return path

    def publish(self, staging: str | os.PathLike, manifest: dict[str, Any]) -> Path:
        """Write the manifest (every file's size and sha256) into ``staging`` and rename it into place.

        When another process published the same fingerprint first, its intact folder is kept and ours is
        removed (same fingerprint, same result); a corrupt one is replaced."""
        staging = Path(staging)
        files = {str(p.relative_to(staging)): {"size": p.stat().st_size, "sha256": file_digest(p)}
                 for p in sorted(staging.rglob("*")) if p.is_file() and p.name != MANIFEST}
        body = {"stage": self.stage, "fingerprint": self.key,
                "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **manifest, "files": files}
        try:
            (staging / MANIFEST).write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
            if self.path.exists():
                self.is_complete()  # a corrupt folder under the final name is moved aside; an intact one stays
            os.replace(staging, self.path)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if self.path.is_dir() and (self.path / MANIFEST).is_file():  # a concurrent job published first
                return self.path
            raise io_error(exc, f"publishing the {self.stage} artifact", self.path) from exc
        return self.path


def copy_outputs(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy every file and folder of ``src`` except the manifest into ``dst`` (replacing what is there)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name == MANIFEST:
            continue
        target = dst / item.name
        try:
            if item.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
        except OSError as exc:
            raise io_error(exc, f"copying {item} to", target) from exc
    return dst


def check_free_space(path: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``path`` when its file system has less than ``needed_bytes`` free."""
    path = Path(path).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise OSError(errno.ENOSPC, f"{what} needs about {needed_bytes / 2**20:,.0f} MiB under {path}, but only "
                                    f"{free / 2**20:,.0f} MiB are free: free space or set paths.cache_dir elsewhere",
                      str(path))
