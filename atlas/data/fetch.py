"""``atlas fetch-data``: download and safely extract the full Oxford-IIIT Pet dataset.

Each archive is downloaded to ``<name>.part`` (resumed with an HTTP ``Range`` request after
an interruption), checked against its known size and sha256, renamed into place, and
extracted with every member checked first, so that an archive cannot write outside the
destination. A marker file per archive makes a second run a no-op.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urljoin
from urllib.request import Request, urlopen

from tqdm import tqdm

from atlas.errors import AtlasError

log = logging.getLogger(__name__)

DATASET_PAGE = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
DEFAULT_BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"
DEFAULT_ARCHIVES = ("images.tar.gz", "annotations.tar.gz")
USER_AGENT = "atlas-fetch-data (+https://www.robots.ox.ac.uk/~vgg/data/pets/)"

_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class ArchiveInfo:
    """What a downloaded archive must be; None skips that check.

    Attributes:
        size: length in bytes.
        sha256: lowercase hex digest.
    """

    size: int | None = None
    sha256: str | None = None


# Sizes and sha256 as recorded by TensorFlow Datasets' checksums for these two files
# (their md5s also match torchvision's OxfordIIITPet); used when ``expected`` is None.
OFFICIAL_ARCHIVES = {
    "images.tar.gz": ArchiveInfo(
        791_918_971, "67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d"
    ),
    "annotations.tar.gz": ArchiveInfo(
        19_173_078, "52425fb6de5c424942b7626b428656fcbd798db970a937df61750c0f1d358e91"
    ),
}


def fetch_dataset(
    dest: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    archives: Sequence[str] = DEFAULT_ARCHIVES,
    expected: dict[str, ArchiveInfo] | None = None,
    progress: bool = True,
    timeout: float = 30,
    retries: int = 3,
    keep_archives: bool = False,
) -> Path:
    """Download and extract the dataset archives into ``dest``.

    The result is the archives' own layout: ``dest/images/*.jpg``,
    ``dest/annotations/list.txt`` and so on. Archives already extracted (their marker
    ``dest/.complete-<name>`` exists) are not downloaded again.

    Args:
        dest: destination folder, created if needed.
        base_url: where the archives are, ending in ``/``.
        archives: archive file names under ``base_url``.
        expected: size and sha256 per archive name; None uses :data:`OFFICIAL_ARCHIVES`,
            ``{}`` checks only the length the server announces.
        progress: show a progress bar per download.
        timeout: seconds to wait for the server on each network operation.
        retries: how many times one call resumes a download that was cut off.
        keep_archives: keep the ``.tar.gz`` files after extraction.

    Returns:
        ``dest``.

    Raises:
        AtlasError: the server cannot be reached (the message says what to download by
            hand), a download is incomplete or fails its checks, or an archive is corrupt or
            holds a member that would land outside ``dest``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    checks = OFFICIAL_ARCHIVES if expected is None else expected
    base = base_url if base_url.endswith("/") else base_url + "/"
    for name in archives:
        marker = dest / f".complete-{_stem(name)}"
        if marker.is_file():
            log.info("%s already present in %s", name, dest)
            continue
        info = checks.get(name, ArchiveInfo())
        archive = dest / name
        if archive.is_file() and not _verified(archive, info):
            archive.unlink()
        if not archive.is_file():
            try:
                _download(urljoin(base, name), archive, info, progress, timeout, retries)
            except _Unreachable as error:
                raise AtlasError(f"{error}\n{_manual_instructions(dest, archives)}") from None
        digest = _extract(archive, dest)
        _write_atomically(marker, json.dumps({"archive": name, "sha256": digest}) + "\n")
        if not keep_archives:
            archive.unlink()
        log.info("%s extracted into %s", name, dest)
    return dest


class _Unreachable(Exception):
    """The server could not be reached or refused the request."""


def _download(
    url: str, archive: Path, info: ArchiveInfo, progress: bool, timeout: float, retries: int
) -> None:
    """Download ``url`` to ``archive`` via ``archive.part``, resuming where it stopped."""
    part = archive.with_name(archive.name + ".part")
    name = archive.name
    resumes = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if info.size is not None and have >= info.size:
            if have == info.size:
                break  # complete; a previous run stopped before the rename
            part.unlink()
            have = 0
        total, interrupted = _get(url, part, have, info, progress, timeout)
        size = part.stat().st_size if part.exists() else 0
        if total is None and not interrupted:
            break  # no length announced: the end of the stream is the end of the file
        if total is not None and size == total:
            break
        if total is not None and size > total:
            part.unlink()
            raise AtlasError(f"{url}: received {size} bytes, more than the {total} announced")
        if size == have or resumes >= retries:
            raise AtlasError(
                f"{url}: download stopped at {size} of {total or 'unknown'} bytes; "
                f"run the command again to resume ({part} is kept)"
            )
        resumes += 1
        log.warning("%s: connection lost after %d bytes; resuming", name, size)
    size = part.stat().st_size
    if info.size is not None and size != info.size:
        part.unlink()
        raise AtlasError(f"{url}: expected {info.size} bytes, received {size}; file removed")
    if info.sha256 is not None:
        digest = _sha256(part)
        if digest != info.sha256.lower():
            part.unlink()
            raise AtlasError(
                f"{url}: sha256 mismatch (expected {info.sha256}, got {digest}); "
                "the download was removed, run the command again to retry"
            )
    os.replace(part, archive)


def _get(
    url: str, part: Path, have: int, info: ArchiveInfo, progress: bool, timeout: float
) -> tuple[int | None, bool]:
    """One request: append to or rewrite ``part``; return (total size, whether cut off)."""
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as error:
        error.close()  # it holds the connection
        if error.code == 416 and have:
            found = re.match(r"bytes \*/(\d+)", error.headers.get("Content-Range", ""))
            if found and int(found.group(1)) == have:
                return have, False  # the part is already whole; the rename was missed
            part.unlink()  # it does not fit the server's file: start again
            return None, True
        raise _Unreachable(f"{url}: the server answered HTTP {error.code} {error.reason}") from None
    except (URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise _Unreachable(f"{url}: cannot connect ({reason})") from None
    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != have:
                part.unlink()
                return total, True
            mode = "ab"
        else:
            if have:
                log.info("%s: the server ignored the range request; starting over", url)
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None and info.size is not None and total != info.size:
            raise AtlasError(f"{url}: the server offers {total} bytes, expected {info.size}")
        bar = tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
        )
        with bar, open(part, mode) as stream:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException):
                    return total, True  # cut off or timed out: the caller resumes
                if not chunk:
                    return total, False
                stream.write(chunk)
                bar.update(len(chunk))


def _content_range(value: str | None) -> tuple[int, int | None]:
    found = _CONTENT_RANGE.match(value or "")
    if found is None:
        return -1, None  # unusable: treated like a range that does not fit
    total = found.group(3)
    return int(found.group(1)), None if total == "*" else int(total)


def _verified(archive: Path, info: ArchiveInfo) -> bool:
    """Whether an archive left from an earlier run still passes the known checks."""
    if info.size is not None and archive.stat().st_size != info.size:
        return False
    return info.sha256 is None or _sha256(archive) == info.sha256.lower()


def _extract(archive: Path, dest: Path) -> str:
    """Check every member, then extract; return the archive's sha256 for the marker."""
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                problem = _member_problem(member, root)
                if problem:
                    raise AtlasError(
                        f"{archive.name}: refusing to extract {member.name!r}: {problem}"
                    )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4: every member was checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise AtlasError(f"{archive.name}: cannot extract ({error})") from None
    return _sha256(archive)


def _member_problem(member: tarfile.TarInfo, root: Path) -> str | None:
    """Why a member must not be extracted under ``root``, or None (the "data" filter rules)."""
    name = member.name
    if name.startswith(("/", "\\")) or os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "path leads out of the destination (..)"
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        return "path leads out of the destination"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or pipe"
    if member.issym():
        if os.path.isabs(member.linkname):
            return f"symbolic link to the absolute path {member.linkname}"
        if not (target.parent / member.linkname).resolve().is_relative_to(root):
            return f"symbolic link to {member.linkname}, outside the destination"
    if member.islnk() and not (root / member.linkname).resolve().is_relative_to(root):
        return f"hard link to {member.linkname}, outside the destination"
    return None


def _manual_instructions(dest: Path, archives: Sequence[str]) -> str:
    names = " and ".join(archives)
    return (
        f"To get the dataset by hand, download {names} from {DATASET_PAGE} "
        f"and extract them into {dest} (for example: tar -xzf images.tar.gz -C {dest}), "
        f"which gives {dest / 'images'}/*.jpg and {dest / 'annotations' / 'list.txt'}."
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _stem(name: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
