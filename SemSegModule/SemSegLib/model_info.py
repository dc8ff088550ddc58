"""What a model file is: its classes, the images it takes, how it predicts and the trainings that made it.

Why: a model is one of the two things a person keeps (README), and it travels (to a colleague, a cluster, a
scene opened months later). `semseg info` and the panel's *Load model* say what it was trained on without
training or predicting anything. Everything comes from the model itself (`SemSegModel`, its `history`), so a file
written by an older SemSeg is described as far as it recorded.
"""

from __future__ import annotations

from .model_file import SemSegModel
from .network import count_parameters
from .pixel_forest import LINE_CLASS_WEIGHT

SHOWN_NAMES = 5  # image names listed per training in the text (the JSON lists them all)


def model_info(model: SemSegModel) -> dict:
    """A JSON-able description of `model` (`semseg info --json`)."""
    lines = set(model.line_classes)
    weights = [weight for _, weight in model.round_members()]
    return {
        "classes": [{**c.to_dict(), "line": i in lines} for i, c in enumerate(model.classes)],
        "channels": model.in_channels,
        "trained_image_shape": list(model.image_shape) if model.image_shape else None,
        "trained_fields": model.history[-1].get("mirrored_fields") if model.history else None,
        "normalization": model.normalization.to_dict(),
        "network": {**model.network_config.to_dict(), "parameters": count_parameters(model.network)},
        "prediction": {
            "network_weights": [round(w, 4) for w in weights],
            "class_prior_correction": model.log_prior_shift is not None,
            "forest_weight": float(model.forest_weight) if model.forest is not None else 0.0,
            "forest_samples": int(len(model.forest.targets)) if model.forest is not None else 0,
            "line_classes": model.line_class_names(),
        },
        "trainings": [_training(entry) for entry in model.history],
    }


def _training(entry: dict) -> dict:
    labeled = entry.get("labeled_pixels") or {}
    start = entry.get("starting_point") or {}
    config = entry.get("config") or {}
    return {
        "round": entry.get("round"),
        "finished": entry.get("finished"),
        "iterations": entry.get("iterations"),
        "seconds": entry.get("seconds"),
        "device": entry.get("device"),
        "precision": entry.get("precision"),
        "cancelled": bool(entry.get("cancelled")),
        "starting_point": start.get("name"),
        "labeled_images": len(labeled),
        "labeled_image_names": list(labeled),  # which images it learned from: `evaluate --labels` scores the others
        "labeled_pixels": int(sum(labeled.values())),
        "correction_weight": config.get("correction_weight"),
        "dense_labels": bool(entry.get("class_weights")),
        "warning": entry.get("warning") or "",
    }


def info_lines(info: dict) -> list[str]:
    """`model_info` as lines of text for a person (`semseg info`)."""
    classes = ", ".join(f"{c['value']} {c['name']}" + (" (1-pixel lines)" if c["line"] else "")
                        for c in info["classes"])
    norm = info["normalization"]
    shape = info["trained_image_shape"]
    trained_on = f"; last trained on {shape[0]} x {shape[1]}" if shape else ""
    if shape and info.get("trained_fields"):
        fields = info["trained_fields"]
        trained_on = f"; last trained on fields of {fields}, each mirrored out to {shape[0]} x {shape[1]}"
    net = info["network"]
    filters = (f", multiscale filters ({', '.join(f'{s:g}' for s in net['filter_sigmas'])} px) in front"
               if net.get("input_filters") else "")
    out = [
        f"classes    {classes}",
        f"images     {_count(info['channels'], 'channel')}, each image scaled between its "
        f"{norm['low_percentile']:g} and {norm['high_percentile']:g} percentiles{trained_on}",
        f"network    U-Net (MONAI), {net['levels']} levels from {net['base_width']} channels, "
        f"{_count(net['residual_units'], 'residual unit')}{filters}; {net['parameters']:,} parameters",
        f"predicts   {_prediction_text(info['prediction'])}",
    ]
    for t in info["trainings"]:
        out.append(f"training {t['round']} {_training_text(t)}")
    if not info["trainings"]:
        out.append("training   none recorded (an untrained network)")
    return out


def info_summary(info: dict) -> str:
    """`model_info` in one line (the panel's model line; `info_lines` in its tooltip)."""
    classes = info["classes"]
    text = (f"{_count(len(classes), 'class')} ({', '.join(c['name'] for c in classes)}), "
            f"{_count(info['channels'], 'channel')}; ")
    trainings = info["trainings"]
    if not trainings:
        return text + "untrained"
    last = trainings[-1]
    finished = f" {last['finished'].replace('T', ' ')}" if last["finished"] else ""
    text += (f"{_count(len(trainings), 'training')}, the last{finished}: {last['iterations']} iterations in "
             f"{last['seconds']} s on {last['device']}")
    forest = info["prediction"]["forest_weight"]
    return text + (f"; a random forest gets {forest:g} of each prediction" if forest > 0 else "")


def _prediction_text(p: dict) -> str:
    weights = p["network_weights"]
    parts = ["1 network" if len(weights) == 1 else
             f"the average of {len(weights)} networks, the newest round's first "
             f"(weights {', '.join(f'{w:g}' for w in weights)})"]
    if p["class_prior_correction"]:
        parts.append("corrected for the stack's class mix")
    if p["forest_weight"] > 0:
        line_cap = f", at most {LINE_CLASS_WEIGHT:g} for line classes" if p["line_classes"] else ""
        parts.append(f"a random forest of {p['forest_samples']:,} pixels with a share of {p['forest_weight']:g}"
                     f"{line_cap}")
    if p["line_classes"]:
        parts.append(f"{', '.join(p['line_classes'])} thinned to 1-pixel lines")
    return "; ".join(parts)


def _training_text(t: dict) -> str:
    finished = t["finished"].replace("T", " ") if t["finished"] else "date not recorded"
    text = (f"{finished}: {t['iterations']} iterations in {t['seconds']} s on "
            f"{t['device']} ({t['precision']})")
    if t["cancelled"]:
        text += ", cancelled"
    if t["starting_point"]:
        text += f", from the pretrained {t['starting_point']} network"
    text += f"; {t['labeled_pixels']:,} labeled pixels on {_count(t['labeled_images'], 'image')}"
    names = t.get("labeled_image_names") or []
    if names:
        text += f" ({', '.join(names[:SHOWN_NAMES])}{' ...' if len(names) > SHOWN_NAMES else ''})"
    if t["dense_labels"]:
        text += " (dense: classes weighted in the loss)"
    if t["round"] and t["round"] > 1 and t["correction_weight"] not in (None, 1, 1.0):
        text += f", corrections weighted {t['correction_weight']:g}"
    if t["warning"]:
        text += f". {t['warning']}"
    return text


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "es" if thing.endswith("s") else "s")
