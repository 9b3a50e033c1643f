"""Writing the site: every page collected, rendered into a temporary folder beside the
output and swapped in at once, unless the site is already up to date."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from atlas.site import manifest
from atlas.site.writer import (
    Assets,
    clean_stale,
    copy_static,
    environment,
    mark,
    prepare_temp,
    publish_files,
    render_pages,
    swap_in,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Written:
    """What :func:`write_site` did: the site's pages and bytes, and how many pages it
    wrote (0 when the site was already up to date: then nothing at all was written)."""

    output: Path
    pages: int
    size: int
    pages_written: int


def write_site(context, inputs: str | None = None, checked: bool = False) -> Written:
    """Collect every page of the build and write the site, unless it is up to date.

    Args:
        context: the build context (config, scan, plans, cache).
        inputs: the digest of everything the pages are made from
            (:func:`atlas.site.manifest.inputs_digest`); None: always write.
        checked: the caller found the site up to date with ``inputs`` just now
            (:func:`atlas.site.manifest.up_to_date`): its tree is not stamped again.
    """
    config = context.config
    output = config.site.output
    clean_stale(output)
    cache = context.cache
    previous = manifest.read(cache, output) if cache is not None else None
    if (checked and previous is not None) or manifest.up_to_date(output, inputs, previous):
        log.info("the site %s is up to date: nothing written", output)
        pages = previous["pages"]
        return Written(output, len(pages), int(previous.get("bytes", 0)), 0)
    from atlas.site import search
    from atlas.site.pages import collect_pages  # markdown and the page views: not for a no-op

    assets = Assets()
    pages, site = collect_pages(context, assets)
    temp = prepare_temp(output)
    try:
        env = environment(config.site.templates)
        hashes = previous.get("pages") if previous else None
        recorded = render_pages(pages, env, temp, site, output if hashes else None, hashes)
        publish_files(assets, temp)
        size = copy_static(config.site.templates, temp)
        size += search.write_index(site["models"], temp)
        size += sum(entry[2] for entry in recorded.values()) + sum(assets.sizes.values())
        (temp / ".nojekyll").write_text("")
        mark(temp)  # before the stamp: swap_in keeps it as it is
        tree = manifest.tree_stamp(temp)
        swap_in(temp, output)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if cache is not None:
        manifest.write(cache, output, tree, inputs, recorded, size)
    hashes = hashes or {}
    written = sum(
        1 for path, entry in recorded.items() if hashes.get(path, [None, None])[1] != entry[1]
    )
    return Written(output, len(recorded), size, written)
