"""The user's files: checked reads, output paths checked before any work, atomic writes.

Every command reads and writes through this module, so each promise is kept once:

* An input is a regular file (a named pipe or device would block or never end), read header
  first: an ``.npy`` shape or dtype beyond the caller's bound is refused before anything is
  allocated, and a corrupt or foreign file is one line that says what it is.
* An output path is exactly the path written (no extension is appended), is checked before
  the work starts (not a directory, not empty, its folder writable), and never names the same
  file as an input or another output (resolved paths and ``os.path.samefile``, so links count).
* An output is written to a temporary file in its own folder and renamed into place, so a
  killed run leaves either the previous file or the new one, never a partial one.

Errors are :class:`UsageError` (one line, exit status 2, in the command line).
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["UsageError", "MAX_ARRAY_ELEMENTS", "check_outputs", "atomic_write", "save_npy",
           "save_npz", "write_text", "read_npy", "read_npz", "read_bytes", "read_header"]

#: The most elements any array file may declare (256 Mi: 256 MB of int8). An engine bounds its
#: own layers more tightly; this bound stops a header from allocating memory no layer can use.
MAX_ARRAY_ELEMENTS = 1 << 28

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"


class UsageError(Exception):
    """A user error: reported in one line, exit status 2."""


def _regular_file(path, what: str) -> Path:
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise UsageError(f"cannot read {what} {path}: {kind}")
    return path


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: dict, inputs: dict | None = None, directories: tuple = ()) -> dict:
    """Check output paths before any work; return them as :class:`Path` objects.

    Parameters
    ----------
    outputs : dict
        Option name (``--out``) -> path, or None where the option was not given.
    inputs : dict, optional
        Option name -> path of every input the command reads.
    directories : tuple of str
        The output options that name a directory rather than a file.

    Raises
    ------
    UsageError
        If an output is empty, is (or is not) a directory, lies in a folder that cannot be
        written, or names the same file as an input or another output.
    """
    checked = {}
    for option, path in outputs.items():
        if path is None:
            continue
        if str(path) == "":
            raise UsageError(f"{option} must name a path, not ''")
        path = Path(path)
        is_directory = option in directories
        if is_directory and path.exists() and not path.is_dir():
            raise UsageError(f"cannot write {option} {path}: not a directory")
        if not is_directory and path.is_dir():
            raise UsageError(f"cannot write {option} {path}: it is a directory")
        parent = path.parent if not is_directory else path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write {option} {path}: {parent} is not a writable folder")
        checked[option] = path
    named = list(checked.items())
    for option, path in named:
        for source, source_path in (inputs or {}).items():
            if source_path is not None and _same_file(path, Path(source_path)):
                raise UsageError(f"{option} {path} is the same file as {source}; "
                                 f"refusing to overwrite an input")
    for index, (option, path) in enumerate(named):
        for other, other_path in named[index + 1:]:
            if _same_file(path, other_path):
                raise UsageError(f"{option} and {other} are the same file {path}")
    return checked


def atomic_write(path, write) -> Path:
    """Write ``path`` through ``write(file_object)`` on a temporary file in the same folder,
    then rename it into place.

    Raises
    ------
    UsageError
        If the folder or the file cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                                 dir=path.parent)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def save_npy(path, array: np.ndarray) -> Path:
    """Write ``array`` as ``.npy`` to exactly ``path`` (numpy would append ``.npy``)."""
    return atomic_write(path, lambda stream: np.save(stream, array, allow_pickle=False))


def save_npz(path, arrays: dict) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` to exactly ``path``."""
    return atomic_write(path, lambda stream: np.savez(stream, **arrays))


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda stream: stream.write(text.encode()))


def _header(stream, where: str, max_elements: int):
    """Read an ``.npy`` header from ``stream``: ``(shape, dtype, fortran_order)``."""
    try:
        version = np.lib.format.read_magic(stream)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read(stream, max_header_size=10000)
    except (zlib.error, zipfile.BadZipFile) as error:  # a compressed member that fails its CRC
        raise UsageError(f"{where} is corrupt: {' '.join(str(error).split())}") from None
    except Exception as error:  # ValueError, SyntaxError, tokenize.TokenError, EOFError...
        detail = " ".join(str(error).split()) or type(error).__name__
        raise UsageError(f"{where} has a malformed .npy header: {detail}") from None
    if dtype.hasobject:
        raise UsageError(f"{where} holds Python objects (dtype {dtype}); secateur reads "
                         f"numeric arrays only")
    elements = math.prod(shape)
    if elements > max_elements:
        raise UsageError(f"{where} declares shape {shape} ({elements} elements); the most "
                         f"this command accepts is {max_elements}")
    return shape, dtype, fortran_order


def _kind(path: Path) -> str:
    with open(path, "rb") as stream:
        head = stream.read(6)
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_ZIP_MAGIC) or head.startswith(_EMPTY_ZIP_MAGIC):
        return "npz"
    return "other"


_KINDS = {"npy": (".npy array", "no NumPy magic"), "npz": (".npz archive", "no zip signature")}


def _opened_as(path, what: str, wanted: str) -> Path:
    """A regular file whose first bytes say it is ``wanted`` (``npy`` or ``npz``)."""
    path = _regular_file(path, what)
    kind = _kind(path)
    name, missing = _KINDS[wanted]
    if kind in _KINDS and kind != wanted:
        raise UsageError(f"{what} {path} is an {_KINDS[kind][0]}; it must be a {name}"
                         if kind == "npz" else
                         f"{what} {path} is a {_KINDS[kind][0]}; it must be an {name}")
    if kind != wanted:
        article = "an" if wanted == "npz" else "a"
        raise UsageError(f"{what} {path} is not {article} {name} ({missing} at its start)")
    return path


def read_npy(path, what: str = "inputs file", max_elements: int = MAX_ARRAY_ELEMENTS,
             check_shape=None) -> np.ndarray:
    """Read an ``.npy`` array, its header first.

    Parameters
    ----------
    check_shape : callable, optional
        Called with the declared shape before the data is read; raises to refuse it.

    Raises
    ------
    UsageError
        If the file is missing, not regular, not an ``.npy`` array, malformed, truncated,
        holds objects, or declares more than ``max_elements`` elements.
    """
    path = _opened_as(path, what, "npy")
    with open(path, "rb") as stream:
        _whole_header(stream, path, what, max_elements, check_shape)
        stream.seek(0)
        return _as_user_error(lambda: np.load(stream, allow_pickle=False), f"{what} {path}")


def _whole_header(stream, path, what: str, max_elements: int, check_shape=None):
    """An ``.npy`` header, checked, and the data it declares present: ``(shape, dtype)``."""
    shape, dtype, _ = _header(stream, f"{what} {path}", max_elements)
    if check_shape is not None:
        check_shape(shape)
    expected = math.prod(shape) * dtype.itemsize
    available = os.fstat(stream.fileno()).st_size - stream.tell()
    if available < expected:
        raise UsageError(f"{what} {path} is truncated: its header declares {expected} "
                         f"bytes of data, the file holds {available}")
    return tuple(shape), dtype


def _as_user_error(load, where: str):
    try:
        return load()
    except (OSError, EOFError, ValueError, zlib.error, zipfile.BadZipFile) as error:
        raise UsageError(f"cannot read {where}: {' '.join(str(error).split())}") from None


def read_npz(path, what: str = "weights file", max_elements: int = MAX_ARRAY_ELEMENTS,
             check_shape=None) -> dict:
    """Read every array of an ``.npz`` archive, each member's header first.

    Parameters
    ----------
    check_shape : callable, optional
        Called as ``check_shape(key, shape)`` before a member's data is read.

    Raises
    ------
    UsageError
        As :func:`read_npy`, for the archive and for each member; also for a corrupt member.
    """
    path = _opened_as(path, what, "npz")
    where = f"{what} {path}"
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise UsageError(f"cannot read {where}: {error}") from None
    arrays = {}
    with archive:
        for name in archive.namelist():
            key = name[:-4] if name.endswith(".npy") else name
            member = f"{where}, member {key!r}"
            try:
                with archive.open(name) as stream:
                    shape, dtype, fortran_order = _header(stream, member, max_elements)
                    if check_shape is not None:
                        check_shape(key, shape)
                    data = stream.read(math.prod(shape) * dtype.itemsize)
            except (OSError, EOFError, zlib.error, zipfile.BadZipFile, NotImplementedError) \
                    as error:
                raise UsageError(f"cannot read {member}: {' '.join(str(error).split())}") \
                    from None
            if len(data) != math.prod(shape) * dtype.itemsize:
                raise UsageError(f"{member} is truncated")
            array = np.frombuffer(data, dtype=dtype)
            arrays[key] = array.reshape(shape, order="F" if fortran_order else "C").copy()
    return arrays


def read_bytes(path, what: str, max_bytes: int) -> bytes:
    """The whole of a regular file of at most ``max_bytes`` bytes (a model file, say).

    Raises
    ------
    UsageError
        If the file is missing, not regular, empty, or larger than ``max_bytes``.
    """
    path = _regular_file(path, what)
    size = path.stat().st_size
    if size == 0:
        raise UsageError(f"{what} {path} is empty")
    if size > max_bytes:
        raise UsageError(f"{what} {path} holds {size} bytes; the most this command reads is "
                         f"{max_bytes}")
    return _as_user_error(path.read_bytes, f"{what} {path}")


def read_header(path, what: str = "inputs file", max_elements: int = MAX_ARRAY_ELEMENTS):
    """The ``(shape, dtype)`` an ``.npy`` file declares, read from its header alone, so a
    command can check an input before its long work and read the data later.

    Raises
    ------
    UsageError
        As :func:`read_npy`, for everything but the data.
    """
    path = _opened_as(path, what, "npy")
    with open(path, "rb") as stream:
        return _whole_header(stream, path, what, max_elements)
