"""Parameter files: .npz keyed by parameter name, written atomically, read without pickle."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from . import backend as B
from .errors import DplError


def save_params(path, params: dict) -> None:
    write_atomic(path, lambda f: np.savez(f, **{k: B.to_host(v) for k, v in params.items()}))


def write_atomic(path, content) -> None:
    """Write bytes (or call content(file)) to a temporary file beside `path`, fsync, then rename:
    the old file survives any failure."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise DplError(f"cannot write {path}: {e.strerror}") from None
    try:
        os.chmod(tmp, _mode_for(path))
        with os.fdopen(fd, "wb") as f:
            content(f) if callable(content) else f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _mode_for(path: Path) -> int:
    """An existing file keeps its permissions; a new one gets the usual 0666 less the umask (mkstemp uses 0600)."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def load_params(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DplError(f"no such params file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise DplError(f"cannot read params file {path}: {e}") from None
