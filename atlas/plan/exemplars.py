"""The second phase of planning: which photos excite each unit most is known only from
the image jobs' statistics, so the exemplar jobs are planned once those are cached."""

from __future__ import annotations

from collections.abc import Callable

from atlas.analysis.unit_views import most_and_least
from atlas.cache.keys import make_key
from atlas.cache.store import Cache
from atlas.config.views import LEAST, MOST
from atlas.plan import jobs as plan
from atlas.plan.context import BuildContext, ModelPlan
from atlas.plan.jobs import Job

EXEMPLAR_MEMO = "exemplar-memo.json"


def _choices(model_plan: ModelPlan, cache: Cache) -> dict[str, dict] | None:
    """Per layer, each unit's strongest images (None before any image stats exist).

    Reading 111 images' stats costs more than the rest of a warm build's checks, so the
    answer is memoised under a key of the image entries' keys and stamps."""
    layers = [(layer["name"], len(model_plan.units[layer["name"]])) for layer in model_plan.layers]
    images = [(job.image, job.key, cache.stamp(job.key)) for job in model_plan.images]
    key = make_key(
        {"images": images, "layers": layers, "most": MOST, "least": LEAST, "by": "channel_mean"}
    )
    memo = cache.read_memo(EXEMPLAR_MEMO)
    remembered = memo.get(model_plan.config.id, {})
    if remembered.get("key") == key:
        return {
            layer: {int(unit): names for unit, names in choices.items()}
            for layer, choices in remembered["choices"].items()
        }
    stats = {job.image: cache.get(job.key) for job in model_plan.images}
    stats = {name: entry for name, entry in stats.items() if entry is not None}
    if not stats:
        return None
    result = {}
    for index, (name, units) in enumerate(layers):
        per_image = {image: entry.meta["channel_mean"][index] for image, entry in stats.items()}
        result[name] = most_and_least(per_image, units)
    memo[model_plan.config.id] = {"key": key, "choices": result}
    cache.write_memo(EXEMPLAR_MEMO, memo)
    return result


def exemplar_jobs(
    model_plan: ModelPlan,
    context: BuildContext,
    missing: Callable[[list[Job]], list[Job]] | None = None,
) -> list[Job]:
    """Second phase: which photos excite each unit most is known only from the image
    stats. Sets ``model_plan.exemplars``; returns the jobs ``missing`` keeps (all if None),
    or none while any image's stats are missing."""
    if not model_plan.config.render.unit_views.has("dataset"):
        return []
    choices = _choices(model_plan, context.cache)
    if choices is None:
        return []
    digests = {image.name: image.digest for image in context.scan.images}
    jobs = []
    for layer in model_plan.layers:
        job = plan.exemplars_job(
            model_plan.config, layer, model_plan.input_size, choices[layer["name"]], digests
        )
        model_plan.exemplars[layer["name"]] = job
        jobs.append(job)
    return missing(jobs) if missing is not None else jobs
