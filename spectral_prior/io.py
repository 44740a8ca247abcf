"""File helpers: atomic writes, safetensors and JSON with clear errors, strict state-dict checks."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import InvalidInputError, MissingFileError


def _create_beside(path: Path) -> tuple[Path, int]:
    """Create a new empty file beside ``path`` with the mode ``open()`` gives under the umask; (its path, its mode)."""
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return temporary, os.stat(temporary).st_mode & 0o777
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def _writing_into(folder: Path, what: str) -> Iterator[None]:
    """Turn the OSError of creating ``folder`` or a file in it into an :class:`InvalidInputError` naming it."""
    try:
        yield
    except FileExistsError:
        raise InvalidInputError(f"{what} {str(folder)!r} is a file, not a folder: choose a folder path") from None
    except OSError as err:
        raise InvalidInputError(f"cannot write to {what} {str(folder)!r} ({err.strerror}): choose a writable folder") from None


def writable_folder(folder: str | os.PathLike, *, what: str = "output", create: bool = True) -> Path:
    """Check that ``folder`` can hold files: an :class:`InvalidInputError` naming it otherwise (a file in the way, no
    permission, a read-only file system).

    With ``create`` the folder (and its parents) is created and a probe file written into it; without, nothing is
    created (a run that fails later leaves no empty folder behind): the nearest existing folder on its path must be
    writable.
    """
    folder = Path(folder)
    if not create:
        if folder.exists() and not folder.is_dir():
            raise InvalidInputError(f"{what} {str(folder)!r} is a file, not a folder: choose a folder path")
        existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise InvalidInputError(f"cannot write to {what} {str(folder)!r}: {existing} is not a writable folder")
        return folder
    with _writing_into(folder, what):
        folder.mkdir(parents=True, exist_ok=True)
        probe, _ = _create_beside(folder / "write-check")
    probe.unlink()
    return folder


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, on failure it vanishes.

    Readers therefore see either the old file or the complete new one, never a half-written file. A folder that
    cannot be written is an :class:`InvalidInputError` naming it, raised before anything is computed into the file.
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"{str(path)!r} is a folder: cannot write a file there")
    with _writing_into(path.parent, "folder"):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary, mode = _create_beside(path)  # creating it is the writability check
    try:
        yield temporary
        os.chmod(temporary, mode)  # writers such as safetensors may have re-created it owner-only
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def replaceable_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` (once resolved) can be renamed away and replaced: it does not exist yet, or it is not a mount
    point nor the current folder (or one above it) and its parent may be written."""
    folder = Path(folder).resolve()
    if not folder.exists():
        return True
    cwd = Path.cwd().resolve()
    inside = cwd == folder or folder in cwd.parents
    return not inside and not os.path.ismount(folder) and os.access(folder.parent, os.W_OK | os.X_OK)


@contextmanager
def atomic_folder(folder: str | os.PathLike, *, what: str = "folder") -> Iterator[Path]:
    """Yield a new empty folder beside ``folder``; on success it takes ``folder``'s place, on failure it vanishes.

    Readers see the old folder or the complete new one (the old one is renamed away, the new one renamed in, then
    the old one deleted; if the second rename fails, the old one is put back). ``folder`` is resolved first: through
    a symbolic link, the folder it points at is replaced. Temporary folders left beside it by a killed writer are
    deleted. A ``folder`` that is a file, or a parent that cannot be written, is an :class:`InvalidInputError`
    raised before anything is written; see :func:`replaceable_folder` for what can be replaced at all.
    """
    folder = Path(folder).resolve()
    if folder.is_file():
        raise InvalidInputError(f"{what} {str(folder)!r} is a file, not a folder: choose a folder path")
    with _writing_into(folder.parent, "folder"):
        folder.parent.mkdir(parents=True, exist_ok=True)
        for stale in [*folder.parent.glob(f".{folder.name}.*.tmp"), *folder.parent.glob(f".{folder.name}.*.old")]:
            shutil.rmtree(stale, ignore_errors=True)
        temporary = folder.with_name(f".{folder.name}.{os.urandom(6).hex()}.tmp")
        temporary.mkdir()  # the mode a plain mkdir gives under the umask
    try:
        yield temporary
        retired = folder.with_name(f".{folder.name}.{os.urandom(6).hex()}.old")
        if folder.exists():
            os.replace(folder, retired)
        try:
            os.replace(temporary, folder)
        except OSError:
            if retired.exists():
                os.replace(retired, folder)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)

def save_tensors(tensors: Mapping[str, Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as safetensors, atomically (contiguous CPU copies; shared storage is fine)."""
    plain = {key: value.detach().to("cpu").contiguous().clone() for key, value in tensors.items()}
    with atomic_path(path) as temporary:
        save_file(plain, str(temporary), metadata=metadata)


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a file; else an error that says whether nothing or a folder is there."""
    return _existing(Path(path), what, folder=False)


def existing_folder(path: str | os.PathLike, what: str, *, hint: str = "") -> Path:
    """``path`` as a Path if it is a folder; else an error that says whether nothing or a file is there (``hint``
    ends both messages)."""
    return _existing(Path(path), what, folder=True, hint=hint)


def _existing(path: Path, what: str, *, folder: bool, hint: str = "") -> Path:
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if (path.is_file() if folder else path.is_dir()):
        raise InvalidInputError(f"{path} is a {other}, but the {what} must be a {kind}{hint}")
    if not (path.is_dir() if folder else path.is_file()):
        raise MissingFileError(f"{what} not found: {path}{hint}")
    return path


def load_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a safetensors file; a missing, truncated or corrupted file raises an error naming it."""
    path = existing_file(path, "weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InvalidInputError(f"{path} is not a readable safetensors file (truncated or corrupted?): {err}") from err


def save_json(payload: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object; a missing or malformed file raises an error naming it."""
    path = existing_file(path, "config file")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(payload, dict):
        raise InvalidInputError(f"{path} must hold a JSON object, got {type(payload).__name__}")
    return payload


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], *, source: str = "checkpoint") -> None:
    """Raise a ValueError naming the first missing, unexpected or mis-shaped key between ``model`` and ``state_dict``."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mis_shaped = [key for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, first {missing[0]!r}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, first {unexpected[0]!r}")
    if mis_shaped:
        key = mis_shaped[0]
        problems.append(
            f"{len(mis_shaped)} keys of another shape, first {key!r}: "
            f"expected {list(expected[key].shape)}, got {list(state_dict[key].shape)}"
        )
    if problems:
        raise InvalidInputError(
            f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}. "
            "Is it a checkpoint of another architecture or configuration?"
        )


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor], *, source: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` after :func:`check_state_dict` gave a readable error."""
    check_state_dict(model, state_dict, source=source)
    model.load_state_dict(state_dict, strict=True)
