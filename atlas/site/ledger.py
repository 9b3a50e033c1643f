"""The compute ledger's figures: what a build rendered and reused, and its memory."""

from __future__ import annotations

import sys


def peak_rss() -> int:
    """This process's peak resident memory so far, in bytes (0 where unknown)."""
    try:
        import resource
    except ImportError:  # not on this system
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts kilobytes


def ledger(context) -> dict:
    rendered = sum(context.rendered.values())
    reused = sum(context.reused.values())
    return {
        "peak_rss_mb": round(peak_rss() / 2**20),
        "rendered": dict(sorted(context.rendered.items())),
        "reused": dict(sorted(context.reused.items())),
        "total": rendered + reused,
        "from_cache": reused / (rendered + reused) if rendered + reused else None,
        "backend": context.backend,
    }


def timestamp() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
