"""Every config value that names something is checked against what exists, before rendering.

The schema (:mod:`atlas.config.load`) checks types and paths; the names in a config (images to
detail, breeds, notes, templates, layers) can only be checked once the dataset is scanned
or a model's facts are known. Each check here is a pure function returning
:class:`Finding` values, problems and warnings, each with the closest existing names;
:func:`before_render` runs every check that needs no model (the one place to add one) and
:func:`report` logs the warnings and raises the problems together as a
:class:`~atlas.errors.ConfigError` (exit 2), each with its key path and YAML line.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from atlas.config.names import is_glob, name_matches, unmatched_patterns
from atlas.config.schema import KeyLines
from atlas.config.settings import Config, DatasetConfig, ModelConfig
from atlas.data.breeds import BreedMap
from atlas.data.scan import DatasetImage, DatasetScan
from atlas.errors import ConfigError

log = logging.getLogger(__name__)

# Files of a templates folder that jinja2 would load; others there are not templates.
TEMPLATE_SUFFIXES = (".html", ".htm", ".jinja", ".j2")
_LISTED = 10  # names listed in one message before "..."
_MARGIN = 0.05  # suggestions are the names whose similarity is within this of the best


@dataclass(frozen=True)
class Finding:
    """A config value that names nothing (a problem) or something doubtful (a warning).

    Attributes:
        key: the key path, e.g. ``dataset.detailed[0]``; its YAML line is added on report.
        message: what is wrong and what the user probably meant.
        warning: True for a warning, which does not stop the build.
    """

    key: str
    message: str
    warning: bool = False


def closest(name: str, candidates: Iterable[str], count: int = 3) -> list[str]:
    """The candidates most like ``name`` (letter case ignored), best first.

    Similarity is difflib's ratio, at least 0.6, and within ``_MARGIN`` of the best; ties
    go to the name that sorts first, so ``Abyssinian_1`` suggests ``Abyssinian_101`` before
    ``Abyssinian_130``.
    """
    folded = name.casefold()
    matcher = difflib.SequenceMatcher(b=folded)
    scored = []
    for candidate in set(candidates):
        matcher.set_seq1(candidate.casefold())
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            score = matcher.ratio()
            if score >= 0.6:
                scored.append((-score, candidate))
    scored.sort()
    # Only names about as close as the best: "layer.html" for "layers.html", not "base.html".
    return [candidate for score, candidate in scored[:count] if score <= scored[0][0] + _MARGIN]


def did_you_mean(name: str, candidates: Iterable[str], bare: bool = False) -> str:
    """`` (did you mean a, b or c?)`` for the closest candidates, or ``""`` if none is close;
    without the space and parentheses when ``bare``."""
    hints = closest(name, candidates)
    if not hints:
        return ""
    listed = ", ".join(hints[:-1]) + " or " + hints[-1] if len(hints) > 1 else hints[0]
    return f"did you mean {listed}?" if bare else f" (did you mean {listed}?)"


def detailed_names(dataset: DatasetConfig, scan: DatasetScan) -> list[Finding]:
    """``dataset.detailed`` names that name no usable image; globs that match none warn."""
    if dataset.detailed != "list":
        return []
    names = {image.name for image in scan.images}
    skipped = {item.path.stem: item.reason for item in scan.skipped}
    findings = []
    for index, pattern in enumerate(dataset.detailed_names):
        if pattern in names or (
            is_glob(pattern) and any(name_matches(name, pattern) for name in names)
        ):
            continue
        key = f"dataset.detailed[{index}]"
        if is_glob(pattern):
            findings.append(
                Finding(key, f"{pattern!r} selects no image of dataset.images", warning=True)
            )
        elif pattern in skipped:
            findings.append(
                Finding(
                    key,
                    f"image {pattern!r} was skipped by the dataset scan "
                    f"({skipped[pattern]}); fix the file or remove the name",
                )
            )
        elif Path(pattern).stem in names:
            findings.append(
                Finding(
                    key, f"write {Path(pattern).stem!r}: names are file names without the extension"
                )
            )
        else:
            findings.append(
                Finding(
                    key,
                    f"no image named {pattern!r} in dataset.images" + did_you_mean(pattern, names),
                )
            )
    return findings


def detailed_selection(dataset: DatasetConfig, detailed: Sequence[DatasetImage]) -> list[Finding]:
    """A warning when ``test``, ``trainval`` or ``per_breed`` selects no image at all."""
    if detailed or dataset.detailed not in ("test", "trainval", "per_breed"):
        return []
    if dataset.detailed == "per_breed":
        what = f"{{per_breed: {dataset.per_breed}}} selects no image"
    else:
        what = (
            f"{dataset.detailed!r} selects no image: no image of dataset.images is in "
            f"{dataset.detailed}.txt beside dataset.annotations"
        )
    return [
        Finding(
            "dataset.detailed", f"{what}; no image gets activation or Grad-CAM pages", warning=True
        )
    ]


def breed_coverage(scan: DatasetScan, breeds: BreedMap) -> list[Finding]:
    """Warnings for dataset breeds that ``breeds.json`` lacks, and the other way round.

    A dataset breed is compared with every mapped breed (a typo in a file name); a mapped
    breed without photos only with the unmapped dataset breeds (a typo in the mapping), so
    a dataset that holds a few breeds is not told that ``Bengal`` may be ``beagle``.
    """
    counts: dict[str, int] = {}
    for image in scan.images:
        counts[image.breed] = counts.get(image.breed, 0) + 1
    mapped = list(breeds.breeds)
    unknown = sorted(set(counts) - set(mapped))
    unused = [key for key in mapped if key not in counts]
    findings = []
    if unknown:
        listed = "; ".join(
            _with_count(breed, counts[breed], did_you_mean(breed, mapped, bare=True))
            for breed in unknown[:_LISTED]
        )
        findings.append(
            Finding(
                "dataset.breeds",
                f"{len(unknown)} breed(s) of the dataset are not in the breed "
                f"mapping, so their photos count only toward species: {listed}"
                + (" ..." if len(unknown) > _LISTED else ""),
                warning=True,
            )
        )
    if unused:
        listed = "; ".join(f"{breed}{did_you_mean(breed, unknown)}" for breed in unused[:_LISTED])
        findings.append(
            Finding(
                "dataset.breeds",
                f"{len(unused)} breed(s) of the breed mapping have no photo in "
                f"dataset.images: {listed}" + (" ..." if len(unused) > _LISTED else ""),
                warning=True,
            )
        )
    return findings


def _with_count(breed: str, count: int, hint: str) -> str:
    return (
        f"{breed} ({count} photo{'s' if count != 1 else ''}" + (f"; {hint}" if hint else "") + ")"
    )


def notes_files(config: Config) -> list[Finding]:
    """Notes files that are not readable UTF-8 text files (the schema saw that they exist)."""
    notes = [("site.notes", config.site.notes)]
    notes += [(f"models[{i}].notes", model.notes) for i, model in enumerate(config.models)]
    findings = []
    for key, path in notes:
        if path is None:
            continue
        try:
            path.read_text(encoding="utf-8")
        except IsADirectoryError:
            inside = sorted(p.name for p in path.iterdir() if p.suffix == ".md")[:5]
            held = f" (it holds {', '.join(inside)})" if inside else ""
            findings.append(Finding(key, f"expected a Markdown file, got a folder: {path}{held}"))
        except UnicodeDecodeError as error:
            findings.append(
                Finding(key, f"{path} is not UTF-8 text ({error.reason} at byte {error.start})")
            )
        except OSError as error:
            findings.append(Finding(key, f"cannot read {path}: {error.strerror or error}"))
    return findings


def template_files(folder: Path | None, package: Path | None = None) -> list[Finding]:
    """The user's templates folder: syntax errors are problems; a file that overrides no
    atlas template or static file and that no template names is never used (a warning with
    the closest atlas name: likely a typo)."""
    if folder is None:
        return []
    if package is None:
        from atlas.project import resources

        package = resources.templates()
    ours = _files(package)
    theirs = _files(folder)
    texts = {**{n: _text(package / n) for n in ours}, **{n: _text(folder / n) for n in theirs}}
    findings = []
    for name in theirs:
        static = name.startswith("static/")
        if not static and not name.endswith(TEMPLATE_SUFFIXES):
            continue
        if texts[name] is None and not static:
            findings.append(Finding("site.templates", f"{name} is not UTF-8 text"))
            continue
        if name not in ours and not any(
            f'"{name}"' in text or f"'{name}'" in text for text in texts.values() if text
        ):
            kind = "static file" if static else "template"
            findings.append(
                Finding(
                    "site.templates",
                    f"{name} replaces no atlas {kind} and no "
                    "template names it, so it is never used"
                    + did_you_mean(
                        _base(name), [_base(n) for n in ours if n.startswith("static/") == static]
                    ),
                    warning=True,
                )
            )
        if not static:
            findings += _syntax(name, texts[name])
    return findings


def _files(folder: Path) -> list[str]:
    """The visible files under a folder, as sorted relative POSIX names."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _base(name: str) -> str:
    """A file's name within the static folder (compared without the common prefix)."""
    return name.removeprefix("static/")


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _syntax(name: str, text: str) -> list[Finding]:
    import jinja2

    try:
        jinja2.Environment(autoescape=True).parse(text)  # parsed only, never rendered
    except jinja2.TemplateSyntaxError as error:
        return [Finding("site.templates", f"{name}, line {error.lineno}: {error.message}")]
    return []


def layer_patterns(key: str, model: ModelConfig, conv_names: Sequence[str]) -> list[Finding]:
    """``models[i].layers`` entries that match no convolution layer of the model."""
    findings = []
    for index in unmatched_patterns(conv_names, model.layers):
        pattern = model.layers[index]
        hint = "" if is_glob(pattern) else did_you_mean(pattern, conv_names)
        findings.append(
            Finding(
                f"{key}.layers[{index}]",
                f"{pattern!r} matches no convolution "
                f"layer of {model.id}{hint}; its conv layers are: "
                + ", ".join(conv_names[:12])
                + (" ..." if len(conv_names) > 12 else ""),
            )
        )
    return findings


def atlas_patterns(key: str, model: ModelConfig, selected: Sequence[str]) -> list[Finding]:
    """``atlas.layers`` entries that match none of the model's selected conv layers: a
    warning (the block may be the top-level one, meant for another model)."""
    patterns = model.atlas.layers or ()
    return [
        Finding(
            f"{key}.atlas.layers[{index}]",
            f"{patterns[index]!r} matches none of the layers of {model.id} that atlas "
            "renders, so it gets no activation atlas there; "
            + ("its layers are: " + ", ".join(selected[:12]) if selected else "it has none"),
            warning=True,
        )
        for index in unmatched_patterns(selected, patterns)
    ]


def before_render(
    config: Config, scan: DatasetScan, breeds: BreedMap, detailed: Sequence[DatasetImage]
) -> list[Finding]:
    """Every check that needs the scanned dataset but no model: add a new one here."""
    return [
        *detailed_names(config.dataset, scan),
        *detailed_selection(config.dataset, detailed),
        *(breed_coverage(scan, breeds) if scan.layout == "oxford" else []),
        *notes_files(config),
        *template_files(config.site.templates),
    ]


def report(findings: Sequence[Finding], config_path: Path) -> None:
    """Log the warnings; raise the problems, each with its YAML line, in one ConfigError.

    Raises:
        ConfigError: when any finding is not a warning (exit code 2).
    """
    if not findings:
        return
    try:
        lines = KeyLines(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        lines = KeyLines("")
    for finding in findings:
        if finding.warning:
            log.warning(
                "warning: %s: %s: %s",
                config_path,
                lines.at(finding.key) or finding.key,
                finding.message,
            )
    problems = [(lines.at(f.key) or f.key, f.message) for f in findings if not f.warning]
    if problems:
        raise ConfigError(problems, source=str(config_path))
