"""Models side by side: twins (the same units in two models) and the home page's
comparison of their accuracy on the same photos."""

from __future__ import annotations

from atlas.analysis.metrics import pets_metrics
from atlas.site.views import ModelView


def link_twins(models: list[ModelView]) -> None:
    """Tell each layer which layers of other models have the same units, or the same name
    and other units (what a fine-tune changed)."""
    for model in models:
        for layer in model.layers:
            for other in models:
                if other is model:
                    continue
                for candidate in other.layers:
                    same = candidate.facts.get("address") == layer.facts.get("address")
                    local = candidate.name.rsplit("/", 1)[-1] == layer.name.rsplit("/", 1)[-1]
                    if same or local:
                        layer.twins.append(
                            {
                                "model": other.id,
                                "title": other.title,
                                "path": candidate.path,
                                "layer": candidate.name,
                                "same": same,
                            }
                        )
                        break
        for other in models:
            if other is model:
                continue
            twins = [
                (layer, t) for layer in model.layers for t in layer.twins if t["model"] == other.id
            ]
            if twins:
                changed = [layer for layer, t in twins if not t["same"]]
                model.twin_summary.append(
                    {
                        "title": other.title,
                        "total": len(model.layers),
                        "same": len(twins) - len(changed),
                        "changed": len(changed),
                        "changed_layers": changed,
                    }
                )


def comparison(models: list[ModelView], context) -> dict:
    """Every classifier's accuracy on the same photos: those every one of them is
    evaluated on (a fine-tuned model's training photos are left out for all)."""
    classifiers = [m for m in models if m.has_classes and m.predictions]
    if not classifiers or not context.scan.labelled:  # unlabelled photos: no accuracy
        return {"photos": 0, "rows": []}
    common = set.intersection(*(set(m.evaluated_names) & set(m.predictions) for m in classifiers))
    rows = []
    for model in classifiers:
        scored = [p for name, p in model.predictions.items() if name in common]
        rows.append({"model": model, "metrics": pets_metrics(scored, model.space, context.breeds)})
    return {"photos": len(common), "rows": rows}
