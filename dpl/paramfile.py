"""Parameter files: .npz keyed by parameter name, written atomically, read without pickle and checked
against the parameters the program declares."""
from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import backend as B
from .errors import DplError


def save_params(path, params: dict) -> None:
    write_npz(path, {k: B.to_host(v) for k, v in params.items()})


def write_npz(path, arrays: dict) -> None:
    """An uncompressed .npz of `arrays` (no object arrays, so it reads back without pickle), atomically."""
    write_atomic(path, lambda f: np.savez(f, **arrays))


def write_atomic(path, content) -> None:
    """Write bytes (or call content(file)) to a temporary file beside `path`, fsync, then rename:
    the old file survives any failure, and a failure to write (a full disk) is a DplError. A symbolic link
    is written through: the file it names is replaced, the link stays."""
    target = Path(os.path.realpath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    except OSError as e:
        raise DplError(f"cannot write {path}: {e.strerror}") from None
    try:
        os.chmod(tmp, _mode_for(target))
        with os.fdopen(fd, "wb") as f:
            content(f) if callable(content) else f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise DplError(f"cannot write {path}: {e.strerror or e}; the previous file, if any, is unchanged") \
                from None
        raise


TMP_SUFFIX = ".tmp"  # write_atomic's temporary files are `.NAME.XXXXXXXX.tmp` beside NAME (mkstemp's 8 characters)


def prepare_output(path, flag: str) -> Path:
    """Check before any work that `path` can be written (its directory exists and takes a new file; it is no
    directory), and remove the temporary files a killed write_atomic left beside it. Returns the resolved path."""
    target = Path(os.path.realpath(path))
    where = f"{flag} {path}" if flag else str(path)
    if target.is_dir():
        raise DplError(f"cannot write {where}: it is a directory; name a file")
    if target.exists() and not target.is_file():  # /dev/null, a pipe: renaming onto it would replace it
        raise DplError(f"cannot write {where}: it is not a regular file")
    if not target.parent.is_dir():
        raise DplError(f"cannot write {where}: the directory {target.parent} does not exist")
    stale = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
        os.close(fd)
        os.unlink(probe)
        for entry in os.scandir(target.parent):
            if stale.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
    except OSError as e:
        raise DplError(f"cannot write {where}: {e.strerror or e} (in {target.parent})") from None
    return target


def refuse_same_files(files) -> None:
    """`files`: (flag, path, is_output) for every file a command reads or writes. Two of them that name the
    same file (after relative paths and symbolic links are resolved) are an error when either is written."""
    seen: dict[str, tuple[str, bool]] = {}
    for flag, path, output in files:
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen and (output or seen[key][1]):
            raise DplError(f"{seen[key][0]} and {flag} name the same file ({key}); one would overwrite the other, "
                           f"so give them different paths")
        seen.setdefault(key, (flag, output))


def _mode_for(path: Path) -> int:
    """An existing file keeps its permissions; a new one gets the usual 0666 less the umask (mkstemp uses 0600)."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def read_npz(path, what: str = "params file", keys=None) -> dict:
    """The arrays of an .npz (all of them, or those named in `keys`), read without pickle: every member must
    be a .npy whose header is checked against --max-elements before anything is decompressed."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if not path.is_file():
        raise DplError(f"no such {what}: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            members = {n.removesuffix(".npy"): n for n in z.namelist()}
            out = {}
            for key in members if keys is None else keys:
                if key not in members:
                    continue
                name = members[key]
                if not name.endswith(".npy"):
                    raise DplError(f"cannot read {label}: its member `{name}` is not a .npy array")
                with z.open(name) as f:
                    out[key] = read_npy(f, f"{label}, member `{name}`")
            return out
    except DplError:
        raise
    except Exception as e:  # not a zip, a truncated member, a bad header: a damaged file, not a bug in DPL
        if isinstance(e, zipfile.BadZipFile) and _npy_magic(path):
            e = "a single .npy array, not an .npz archive"
        raise DplError(f"cannot read {label}: {e or type(e).__name__}") from None


def read_npy(f, what: str) -> np.ndarray:
    """One .npy array from an open file; its shape is checked against --max-elements first and pickled
    objects are refused."""
    from .limits import check_elements
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("it holds Python objects (pickled), which DPL does not read")
    check_elements(shape, f"cannot read {what}")
    size = math.prod(shape) * dtype.itemsize
    data = f.read(size)
    if len(data) != size:
        raise ValueError(f"it is truncated ({len(data)} of {size} bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()  # writable


def _npy_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(6) == b"\x93NUMPY"


def load_params(path, partial: bool = False) -> "LoadedParams":
    """The parameters of a params file, or those a checkpoint holds (its latest values)."""
    from .checkpoint import is_checkpoint, params_of
    arrays = read_npz(path)
    if is_checkpoint(arrays):
        arrays = params_of(arrays, path)
    for name, a in arrays.items():
        if a.dtype.kind not in "fiub":
            raise DplError(f"cannot read params file {path}: `{name}` holds {a.dtype} values, not numbers")
    return LoadedParams(arrays, source=str(path), partial=partial)


class LoadedParams(dict):
    """The entries of a params file not yet taken by a `param` declaration, and the differences found so far
    between the file and the program: names the program declares that the file lacks (`missing`) and shapes
    that differ (`mismatched`); what is left in the dict at the end are names the program never declared."""

    def __init__(self, arrays=None, source: str | None = None, partial: bool = False):
        super().__init__(arrays or {})
        self.source, self.partial = source, partial
        self.missing: list[str] = []
        self.mismatched: list[tuple[str, tuple, tuple]] = []

    @classmethod
    def of(cls, arrays) -> "LoadedParams":
        """`arrays` itself when it is one already, else a lenient one (the Python API: missing names allowed)."""
        return arrays if isinstance(arrays, cls) else cls(arrays)

    @property
    def what(self) -> str:
        return f"the params file {self.source}" if self.source else "the given parameters"

    def take(self, name: str, shape: tuple, span):
        """The file's value for the parameter `name` of declared `shape`, or None to keep its initializer.
        A shape that differs is an error at the declaration, before the value can be used (unless partial)."""
        if name not in self:
            if self.source is not None:
                self.missing.append(name)
            return None
        value = self.pop(name)
        if value.shape == shape:
            return value
        self.mismatched.append((name, shape, value.shape))
        if self.partial:
            return None
        also = f"; the file also lacks {', '.join(f'`{n}`' for n in self.missing)}" if self.missing else ""
        has = "has" if self.source else "have"
        raise DplError(f"parameter `{name}` is declared {list(shape)} but {self.what} {has} {list(value.shape)}"
                       f"{also} (--partial loads only the entries that match)", span)

    def differences(self, final: bool) -> list[str]:
        """One line per difference; names the file has but the program never declared only once it has ended."""
        out = [f"shape: `{n}` is declared {list(d)} but the file has {list(f)}" for n, d, f in self.mismatched]
        out += [f"missing: `{n}` is declared but not in the file" for n in self.missing]
        if final:
            out += [f"extra: `{n}` is in the file but the program declares no such parameter" for n in sorted(self)]
        return out

    def _report(self, what: str, final: bool) -> str:
        return f"{self.what} {what}:\n" + "\n".join(f"    {d}" for d in self.differences(final))

    def check(self, final: bool = True) -> None:
        """Raise one DplError listing every difference found so far (the file must match exactly), or with
        --partial print them as one warning. Called when the first train block starts and when the program
        ends; `final` adds the names the program never declared."""
        if self.source is None or not self.differences(final):
            return
        if not self.partial:
            raise DplError(self._report(_NO_MATCH, final))
        if final:
            print(f"dpl: warning: {self._report(_PARTIAL, True)}", file=sys.stderr)


_NO_MATCH = ("does not match the program's parameters (--partial loads the entries that match and keeps the "
             "initializers of the others)")
_PARTIAL = "matches the program only in part; with --partial the matching entries were loaded, the others not"
