"""The ``atlas`` command: parses arguments, calls the library, maps errors to exit codes.

Exit codes: 0 ok, 1 build failed, 2 bad config or usage, 130 interrupted. Heavy imports
(TensorFlow) happen inside the commands, so ``atlas --help`` is instant.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from pathlib import Path

from atlas import __version__
from atlas.errors import (
    EXIT_BUILD_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    AtlasError,
    ConfigError,
)

log = logging.getLogger("atlas")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atlas", description="Build a browsable atlas of what convolutional networks see."
    )
    parser.add_argument("--version", action="version", version=f"atlas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_build(commands)
    _add_site_commands(commands)
    _add_project_commands(commands)
    return parser


def _add_build(commands) -> None:
    build = commands.add_parser("build", help="render assets and write the site")
    build.add_argument(
        "-c",
        "--config",
        default="site_config.yaml",
        type=Path,
        help="the site config file (default: site_config.yaml)",
    )
    build.add_argument("--force", action="store_true", help="ignore the cache: render all")
    build.add_argument(
        "--prune", action="store_true", help="afterwards, drop cache entries this site does not use"
    )
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another build holding the cache",
    )
    build.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    build.add_argument("--serial", action="store_true", help=argparse.SUPPRESS)  # benchmarks
    build.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="render shard I of N of the missing assets into the cache and "
        "write no site (then a plain build assembles it)",
    )
    build.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="render on the workers of this Dask scheduler (extra: dask)",
    )


def _add_site_commands(commands) -> None:
    plan = commands.add_parser("plan", help="what a build would render, its cost and size")
    plan.add_argument("-c", "--config", default="site_config.yaml", type=Path)
    plan.add_argument("--json", action="store_true", help="machine-readable output")

    clean = commands.add_parser("clean", help="remove the built site and/or the cache")
    clean.add_argument("-c", "--config", default="site_config.yaml", type=Path)
    clean.add_argument("--site", action="store_true", help="remove only the site")
    clean.add_argument("--cache", action="store_true", help="remove only the cache")

    serve = commands.add_parser("serve", help="preview the built site on 127.0.0.1")
    serve.add_argument("-c", "--config", default="site_config.yaml", type=Path)
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument("--bind", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument(
        "--watch",
        action="store_true",
        help="build first, then rebuild when the config, notes or templates "
        "change, and reload open pages",
    )


def _add_project_commands(commands) -> None:
    new = commands.add_parser("new", help="start a new atlas project in a folder")
    new.add_argument("folder", type=Path, help="the project folder (created if missing)")
    new.add_argument(
        "--copy-data",
        action="store_true",
        help="copy the default data (12 MB) instead of using atlas's own copy",
    )
    new.add_argument(
        "--force",
        action="store_true",
        help="add the files to a folder that is not empty (never overwrites)",
    )
    new.add_argument(
        "--photos",
        type=Path,
        default=None,
        help="your photos: class folders, a metadata.csv, the Oxford layout or a flat folder",
    )
    new.add_argument(
        "--model",
        type=Path,
        default=None,
        help="your .keras model (needs --photos; without it: the embedded ImageNet MobileNet)",
    )

    fetch = commands.add_parser("fetch-data", help="download the full Oxford-IIIT Pet dataset")
    fetch.add_argument(
        "-c",
        "--config",
        default=None,
        type=Path,
        help="take the folder from dataset.fetch_to of this config",
    )
    fetch.add_argument("--to", type=Path, default=None, help="the folder to download into")
    fetch.add_argument("--no-progress", action="store_true")


def _port(text: str) -> int:
    """A TCP port number, 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s: %(message)s" if args.debug else "%(message)s",
    )
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt as interrupt:
        if args.command != "build":
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        kept = getattr(interrupt, "kept", None)
        what = (
            f"the {kept:,} assets rendered before it are"
            if kept is not None
            else ("every finished asset is")
        )
        print(
            f"\ninterrupted: {what} kept in the cache; run the same command again to "
            "resume (the previous site is untouched)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except AtlasError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        if args.debug:
            raise
        if error.errno == errno.ENOSPC:
            print(
                f"error: the disk is full ({error.filename or ''}); the previous site is untouched",
                file=sys.stderr,
            )
        else:
            print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    except Exception as error:
        message = None if args.debug else _template_problem(error)
        if message is None:
            raise
        print(f"error: {message}; the previous site is untouched", file=sys.stderr)
        return EXIT_BUILD_FAILED


def _template_problem(error: Exception) -> str | None:
    """A one-line description of an error in a (user's) template, or None for other errors."""
    jinja2 = sys.modules.get("jinja2")
    if jinja2 is None or not isinstance(error, jinja2.TemplateError):
        return None
    name = getattr(error, "filename", None) or getattr(error, "name", None)
    line = getattr(error, "lineno", None)
    if name is None:  # raised while rendering: jinja2 puts the template in the traceback
        frames = traceback.extract_tb(error.__traceback__)
        in_templates = [f for f in frames if f.filename.endswith((".html", ".jinja", ".j2"))]
        if in_templates:
            name, line = in_templates[-1].filename, in_templates[-1].lineno
    where = f"template {name}" + (f", line {line}" if line else "") if name else "a template"
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{where}: {text.splitlines()[0]}"


def _build(args: argparse.Namespace) -> int:
    from atlas.build import BuildOptions, build
    from atlas.execute.shards import parse_shard

    shard = parse_shard(args.shard) if args.shard else None
    options = BuildOptions(
        force=args.force,
        prune=args.prune,
        progress=not args.no_progress,
        wait=args.wait,
        max_steps=args.max_steps,
        shard=shard,
        scheduler=args.scheduler,
        serial=args.serial,
    )
    report = build(args.config, options)
    total = report.wall_seconds or sum(report.seconds.values())
    if report.output is None:
        print(
            f"shard {args.shard} done in {total:.1f} s: no site written (a plain "
            "`atlas build` assembles it)"
        )
    else:
        written = (
            f"{report.pages_written:,} of {report.pages:,} pages written"
            if report.pages_written
            else f"{report.pages:,} pages, up to date: nothing written"
        )
        print(
            f"built {report.output} : {written}, {report.site_bytes / 1e6:.1f} MB, "
            f"{total:.1f} s (CPU {report.cpu_total:.0f} s), "
            f"peak memory {report.peak_rss_bytes / 2**20:,.0f} MiB"
        )
    rendered = ", ".join(f"{k} {v}" for k, v in sorted(report.rendered.items())) or "nothing"
    reused = sum(report.reused.values())
    print(f"rendered: {rendered}; from the cache: {reused:,}")
    if report.skipped:
        print(f"skipped {report.skipped} unusable image file(s): see dataset.html")
    width = max(len(name) for name in report.seconds)
    print("time per stage:")
    for name, seconds in report.seconds.items():
        cpu = report.cpu_seconds.get(name)
        usage = (
            f"  CPU {cpu:8.2f} s ({100 * cpu / seconds:3.0f} %)"
            if cpu is not None and seconds >= 0.5
            else ""
        )
        print(f"  {name:<{width}}  {seconds:8.2f} s{usage}")
    if "waiting for unit pictures" in report.seconds:
        print("(unit pictures rendered beside the other stages: their times overlap)")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    from atlas.prepare import run_plan

    print(run_plan(args.config, as_json=args.json))
    return EXIT_OK


def _clean(args: argparse.Namespace) -> int:
    from atlas.config.load import load_config
    from atlas.project import folders

    config = load_config(args.config)  # refuses folders atlas did not make (exit 2)
    both = not args.site and not args.cache
    if (args.site or both) and config.site.output.exists():
        folders.remove_site(config.site.output)
        print(f"removed {config.site.output}")
    if (args.cache or both) and isinstance(config.cache, str):  # a URL: the store's own
        from atlas.cache import open_cache

        open_cache(config.cache).remove_all()
        print(f"removed {config.cache}")
    elif (args.cache or both) and config.cache.exists():
        kept = folders.clean_cache(config.cache)
        if kept:
            print(
                f"removed atlas's entries from {config.cache}; kept {len(kept)} file(s) "
                f"atlas did not write, e.g. {kept[0].name}"
            )
        else:
            print(f"removed {config.cache}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from atlas.config.load import load_config
    from atlas.site.serve import serve

    config = load_config(args.config)
    if args.watch:
        from atlas.build import BuildOptions
        from atlas.watch import LiveSite

        LiveSite(args.config, args.bind, args.port, BuildOptions()).serve_forever()
        return EXIT_OK
    serve(config.site.output, args.bind, args.port)
    return EXIT_OK


def _new(args: argparse.Namespace) -> int:
    from atlas.project.new import new_project

    if args.model is not None and args.photos is None:
        raise ConfigError([("--model", "needs --photos: the folder of photos to show it")])
    if args.photos is not None:
        from atlas.start import new_own_project

        made, advice = new_own_project(args.folder, args.photos, args.model, force=args.force)
        if advice:
            print(f"note: {advice}")
    else:
        made = new_project(args.folder, copy_data=args.copy_data, force=args.force)
    for path in made.kept:
        print(f"kept {path} (it exists)")
    print(
        f"created {made.folder} ({len(made.written)} files); next: cd {made.folder} && atlas build"
    )
    return EXIT_OK


def _fetch(args: argparse.Namespace) -> int:
    from atlas.data.fetch import fetch_dataset

    target = args.to
    if target is None and args.config is not None:
        from atlas.config.load import fetch_folder

        target = fetch_folder(args.config)
    if target is None:
        target = Path("oxford-pets-full")
    path = fetch_dataset(Path(target), progress=not args.no_progress)
    print(
        f"dataset ready in {path}: set dataset.images to {path / 'images'} and "
        f"dataset.annotations to {path / 'annotations' / 'list.txt'}"
    )
    return EXIT_OK


_COMMANDS = {
    "build": _build,
    "plan": _plan,
    "clean": _clean,
    "serve": _serve,
    "fetch-data": _fetch,
    "new": _new,
}

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
