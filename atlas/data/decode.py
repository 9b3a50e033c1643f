"""Each photo hashed and decoded once: the result is memoised by the file's digest, so a
rebuild decodes nothing new (the memo is kept in the cache by the build)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from atlas.cache.keys import file_digest
from atlas.errors import BadImageError


def check_files(
    paths: list[Path], memo: dict[str, dict], workers: int, progress: bool
) -> list[tuple[str | None, dict]]:
    """Each file's digest and decode record (:func:`_check_file`), decoded in threads."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = pool.map(lambda path: check_file(path, memo), paths)
        if progress:
            from tqdm import tqdm

            checks = tqdm(checks, total=len(paths), desc="scan", unit="img")
        return list(checks)


def check_file(path: Path, memo: dict[str, dict]) -> tuple[str | None, dict]:
    """Hash a file and decode it unless its digest is memoised; return digest and record."""
    try:
        digest = file_digest(path)
    except OSError as error:
        return None, _record(False, f"cannot read file ({error.strerror or error})")
    cached = memo.get(digest)
    if _is_record(cached):
        return digest, cached
    from atlas.data.images import open_rgb

    try:
        width, height = open_rgb(path).size
    except BadImageError as error:
        return digest, _record(False, error.reason)
    return digest, _record(True, None, width, height)


def _record(ok: bool, reason: str | None, width: int = 0, height: int = 0) -> dict:
    return {"ok": ok, "reason": reason, "width": width, "height": height}


def _is_record(value: object) -> bool:
    # The memo is persisted by the build; a damaged entry is a miss, not a crash.
    return (
        isinstance(value, dict)
        and isinstance(value.get("ok"), bool)
        and isinstance(value.get("width"), int)
        and isinstance(value.get("height"), int)
        and (value["ok"] or isinstance(value.get("reason"), str))
    )
