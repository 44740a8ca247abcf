"""Fetching published priors from the Hugging Face Hub, and publishing new ones.

A *prior source* is one of

* an embedded name, a key of :data:`EMBEDDED_MODELS` (``"bisrnet-sdp"``, ``"bisrnet-baseline"``, ``"mst_s-sdp"``,
  ``"mst_s-baseline"``; ``"default"`` is ``"bisrnet-official"``): the CAVE-trained models that ship inside the package,
  offline;
* a published name, a key of :data:`PUBLISHED_PRIORS` (for example ``"mst_l-sdp"``; an embedded name wins);
* a local directory holding a saved prior (``config.json`` + ``model.safetensors``);
* a Hub repo id ``"owner/name"``, optionally pinned as ``"owner/name@revision"`` where the
  revision is a branch, a tag or a commit sha.

Downloads go through :func:`huggingface_hub.hf_hub_download`, so they share the standard
Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``), honour ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE=1``, and show huggingface_hub's own progress bars.
"""
from __future__ import annotations

import difflib
import inspect
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Union

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import InvalidInputError, MissingFileError, SpectralPriorError
from .format import CONFIG_FILE, WEIGHTS_FILE, read_config, saved_files

__all__ = [
    "DEFAULT_FILES",
    "EMBEDDED_MODELS",
    "PUBLISHED_PRIORS",
    "PriorDownloadError",
    "download_more",
    "download_prior",
    "push_to_hub",
    "resolve_prior_source",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Published priors: short name -> Hub repo id.
#:
#: Convention: the short name is ``"<backbone>-sdp"`` (lower case, e.g. ``"mst_l-sdp"``) and the
#: repo lives in the ``spectral-prior`` organisation under the same name
#: (``"spectral-prior/mst_l-sdp"``). Nothing is published yet, so the mapping is empty; add an
#: entry here in the same commit that uploads the repo with :func:`push_to_hub`.
PUBLISHED_PRIORS: dict[str, str] = {}

#: Models shipped as package data (trained on the CAVE train scenes by ``benchmarks/quality.py --study``, seed 0):
#: name -> folder under ``spectral_prior/pretrained``; no network needed. ``"default"`` is the best BiSRNet shipped:
#: the official weights, since no prior has beaten them yet (docs/benchmarks.md, "the gate fails").
EMBEDDED_MODELS: dict[str, str] = {
    "bisrnet-official": "bisrnet_official",  # the authors' weights, unchanged (MIT; its README)
    "bisrnet-sdp": "bisrnet_sdp",
    "bisrnet-baseline": "bisrnet_baseline",
    "mst_s-sdp": "mst_s_sdp",
    "mst_s-baseline": "mst_s_baseline",
    "default": "bisrnet_official",
}
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"

#: Files every saved prior directory holds.
DEFAULT_FILES: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)

# One Hub name component: letters, digits, "-", "_", "."; not starting or ending with "-" or ".",
# and without "--" or ".." (the Hub reserves those). At most 96 characters.
_NAME = r"(?![^/@]*(?:--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID_RE = re.compile(rf"^(?P<repo_id>{_NAME}/{_NAME})(?:@(?P<revision>[^\s@]+))?$")


class PriorDownloadError(SpectralPriorError, OSError):
    """A prior could not be fetched from the Hub.

    The message says what went wrong in this library's terms; the original huggingface_hub
    exception is kept as ``__cause__``.
    """


HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token")
"""The keyword arguments that loading by name passes on to :func:`download_prior`."""


def check_hub_options(options: dict[str, Any], caller: Callable[..., Any]) -> None:
    """TypeError naming any keyword argument given to ``caller`` (through its ``**hub_kwargs``) that is neither one of
    its parameters nor one of :data:`HUB_OPTIONS`: a typo, usually, so the closest real name is suggested."""
    unknown = sorted(set(options) - set(HUB_OPTIONS))
    if not unknown:
        return
    parameters = [name for name, parameter in inspect.signature(caller).parameters.items()
                  if parameter.kind is not inspect.Parameter.VAR_KEYWORD]
    known = parameters + list(HUB_OPTIONS)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(
        f"{caller.__name__}() got unexpected keyword arguments {', '.join(hints)}; it takes {', '.join(parameters)} "
        f"and the Hub options {', '.join(HUB_OPTIONS)}"
    )


def _accepted_forms() -> str:
    names = ", ".join(sorted(EMBEDDED_MODELS) + sorted(PUBLISHED_PRIORS))
    return (
        f"a prior source is an embedded or published name ({names}), an existing local directory, "
        "or a Hub repo id 'owner/name' optionally pinned as 'owner/name@revision'"
    )


def _is_local_dir(source: str) -> bool:
    return os.path.isdir(os.path.expanduser(source))


def _missing_local_path(source: str) -> bool:
    """'runs/x' where the folder 'runs' exists here: a path that is missing, not a Hub repo id."""
    return "/" in source and os.path.isdir(source.split("/", 1)[0])


def resolve_prior_source(source: PathLike) -> str:
    """Normalise a prior source to a local directory or a Hub repo id.

    Returns the repo id for a published name and the input unchanged for an existing local
    directory or a repo-id-shaped string (``"owner/name"`` or ``"owner/name@revision"``).
    An existing local directory wins over a name or id spelled the same way.

    Raises:
        ValueError: ``source`` is none of the accepted forms; the message lists the published
            names and the accepted forms.
    """
    source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(f"prior source must be a str or a path, not {type(source).__name__}")
    if source and _is_local_dir(source):
        return source
    if source in EMBEDDED_MODELS:
        embedded = PRETRAINED_DIR / EMBEDDED_MODELS[source]
        if not (embedded / CONFIG_FILE).is_file():
            raise MissingFileError(f"the embedded model {source!r} is missing from {embedded}: reinstall spectral-prior")
        return str(embedded)
    if _REPO_ID_RE.match(source) and _missing_local_path(source):
        raise InvalidInputError(
            f"{source!r} is not a local directory nor a Hub repo id: the folder {source.split('/', 1)[0]!r} exists "
            "here, so this looks like a local path that does not exist (the Hub was not asked)"
        )
    if source in PUBLISHED_PRIORS:
        return PUBLISHED_PRIORS[source]
    if _REPO_ID_RE.match(source):
        return source
    if source and "/" not in source and "\\" not in source and "@" not in source:
        raise InvalidInputError(f"unknown prior name {source!r}: {_accepted_forms()}")
    raise InvalidInputError(f"{source!r} is not a local directory nor a Hub repo id: {_accepted_forms()}")


def _split_repo_revision(repo: str, revision: str | None) -> tuple[str, str | None]:
    match = _REPO_ID_RE.match(repo)
    assert match is not None  # resolve_prior_source only lets repo-id-shaped strings through
    repo_id, pinned = match.group("repo_id"), match.group("revision")
    if pinned is not None and revision is not None and pinned != revision:
        raise InvalidInputError(f"conflicting revisions for {repo_id}: {pinned!r} in the source and revision={revision!r}")
    return repo_id, pinned if pinned is not None else revision


def _as_names(files: str | Sequence[str]) -> tuple[str, ...]:
    return (files,) if isinstance(files, str) else tuple(files)


def _snapshot_dir(file_path: str, filename: str) -> Path:
    """The snapshot folder holding ``file_path``, the local copy of repo file ``filename``."""
    depth = len(PurePosixPath(filename).parts)
    return Path(file_path).parents[depth - 1]


def download_prior(
    source: PathLike,
    *,
    revision: str | None = None,
    cache_dir: PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    filenames: Sequence[str] = DEFAULT_FILES,
    optional: Sequence[str] = (),
) -> Path:
    """Return a local directory holding the files of the prior ``source``.

    A local directory is checked and returned as is. A published name or Hub repo id is fetched
    with :func:`huggingface_hub.hf_hub_download` (one call per file) into the Hugging Face cache,
    and the cache's snapshot directory for the resolved commit is returned; a cached copy is used
    without network access when ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``.

    Args:
        source: a published name, a local directory, ``"owner/name"`` or ``"owner/name@revision"``.
        revision: branch, tag or commit sha (Hub sources only); defaults to ``"main"``.
        cache_dir: Hugging Face cache directory; defaults to huggingface_hub's (``HF_HUB_CACHE``).
        local_files_only: never contact the Hub, use the cache only.
        token: Hub token for private repos (``None``: huggingface_hub's stored token if any).
        filenames: files that must exist.
        optional: files fetched when present and skipped silently when absent.

    Raises:
        ValueError: unknown source, or conflicting revisions.
        FileNotFoundError: a required file is missing from a local directory.
        PriorDownloadError: the Hub copy could not be obtained (missing repo, revision or file, or
            not cached while offline); the huggingface_hub error is chained.
    """
    required = _as_names(filenames)
    extra = tuple(name for name in _as_names(optional) if name not in required)
    if not required:
        raise InvalidInputError("filenames must name at least one required file")

    resolved = resolve_prior_source(source)
    if _is_local_dir(resolved):
        if revision is not None:
            raise InvalidInputError(f"revision={revision!r} only applies to Hub repos, and {resolved!r} is a local directory")
        directory = Path(resolved).expanduser().resolve()
        for name in required:
            if not (directory / name).is_file():
                raise MissingFileError(f"prior directory {directory} has no {name}")
        return directory

    repo_id, revision = _split_repo_revision(resolved, revision)
    shown_revision = revision or hf_constants.DEFAULT_REVISION
    cache_root = Path(cache_dir if cache_dir is not None else hf_constants.HF_HUB_CACHE).expanduser()

    # The first file resolves the revision to a commit; every later file is fetched at that
    # commit so all of them land in the same snapshot even if the branch moves meanwhile.
    pinned = revision
    snapshot: Path | None = None
    for name in required + extra:
        path = _fetch_file(repo_id, name, pinned, shown_revision, cache_root, optional=name in extra,
                           cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        if path is not None and snapshot is None:
            snapshot = _snapshot_dir(path, name)
            pinned = snapshot.name
    assert snapshot is not None  # the first required file either succeeded or raised
    return snapshot


def _fetch_file(
    repo_id: str,
    name: str,
    revision: str | None,
    shown_revision: str,
    cache_root: Path,
    *,
    optional: bool,
    cache_dir: PathLike | None,
    local_files_only: bool,
    token: str | bool | None,
) -> str | None:
    """One file of a Hub repo, through the cache; None for a missing ``optional`` one; PriorDownloadError naming what
    went wrong otherwise."""
    try:
        return hf_hub_download(
            repo_id, name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
        )
    except LocalEntryNotFoundError as err:  # subclass of EntryNotFoundError: test it first
        if optional:
            return None
        why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1 or no network"
        raise PriorDownloadError(
            f"{repo_id} (file {name}, revision {shown_revision}) is not in the cache at {cache_root} "
            f"and the Hub cannot be reached ({why}): download it once online or pass a local directory"
        ) from err
    except EntryNotFoundError as err:
        if optional:
            return None
        raise PriorDownloadError(f"repo {repo_id} has no file {name} at revision {shown_revision}") from err
    except RevisionNotFoundError as err:
        raise PriorDownloadError(
            f"repo {repo_id} has no revision {shown_revision} (use a branch, a tag or a commit sha)"
        ) from err
    except GatedRepoError as err:  # subclass of RepositoryNotFoundError: test it first
        raise PriorDownloadError(f"Hub repo {repo_id} is gated: accept its conditions on the Hub and pass token=") from err
    except RepositoryNotFoundError as err:
        raise PriorDownloadError(f"no Hub repo {repo_id} (check the id, or pass token= for a private repo)") from err
    except HfHubHTTPError as err:
        raise PriorDownloadError(f"could not download {name} from Hub repo {repo_id}: {err}") from err



def download_more(source: PathLike, snapshot: Path, filenames: Sequence[str], **hub_kwargs: Any) -> Path:
    """The folder ``snapshot`` that :func:`download_prior` returned for ``source``, with ``filenames`` in it too.

    A local directory is only checked. From the Hub the files are fetched at the commit of ``snapshot`` (its folder
    name), so that they come from the same commit as the files fetched before, even if the branch has moved since.
    """
    resolved = resolve_prior_source(source)
    if _is_local_dir(resolved):
        return download_prior(resolved, filenames=filenames)
    repo_id, _ = _split_repo_revision(resolved, hub_kwargs.pop("revision", None))
    return download_prior(repo_id, revision=snapshot.name, filenames=filenames, **hub_kwargs)


def push_to_hub(
    directory: PathLike,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool = False,
    commit_message: str = "Upload spectral prior",
    filenames: Sequence[str] | None = None,
) -> str:
    """Upload a saved directory (an injection, a bare prior or a baseline backbone) to the Hub model repo ``repo_id``;
    return the commit URL.

    The repo is created if needed (``exist_ok=True``) with the given visibility, then the whole directory is uploaded
    in one commit with :meth:`huggingface_hub.HfApi.upload_folder`. Every file its ``config.json`` records must be
    there first (``filenames`` overrides that list).

    Raises:
        ValueError: ``repo_id`` is not of the form ``"owner/name"``.
        FileNotFoundError: ``directory`` is missing or lacks one of the files.
    """
    match = _REPO_ID_RE.match(repo_id)
    if match is None or match.group("revision") is not None:
        raise InvalidInputError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise MissingFileError(f"no prior directory at {folder}")
    def require(names: Sequence[str]) -> None:
        for name in names:
            if not (folder / name).is_file():
                raise MissingFileError(f"prior directory {folder} has no {name}; save the prior before pushing it")

    if filenames is None:  # what the config records: config.json first, then the files it names
        require((CONFIG_FILE,))
        filenames = saved_files(read_config(folder / CONFIG_FILE))
    require(_as_names(filenames))

    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    target = getattr(repo_url, "repo_id", None) or repo_id
    info = api.upload_folder(
        repo_id=target,
        folder_path=str(folder),
        commit_message=commit_message,
        repo_type="model",
    )
    return str(getattr(info, "commit_url", info))
