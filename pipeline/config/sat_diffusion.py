"""`pipeline import-sat` for stable-audio-tools `diffusion_cond` / `diffusion_uncond` model configs:
the `train` section (a `diffusion` model with a `dit` backbone, its conditioners, cond ids and
objective) beside the autoencoder section that `sat.py` makes from the pretransform.

Everything that cannot be expressed here is collected, not raised one at a time: the caller reports
every unsupported part of a config at once (CLAP text encoders, U-Net backbones, ...), each with what
is supported instead."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pipeline.config.registry import registered

DIFFUSION_MODEL_TYPES = ("diffusion_cond", "diffusion_uncond")
BACKBONES = ("dit",)
OBJECTIVES = ("v", "rectified_flow")  # stable-audio-tools' diffusion_objective; "v" is its default
# stable-audio-tools' T5Conditioner arguments that have a field of ours (max_length) or are ignored
# because the encoder comes from t5_dir (t5_model_name names the directory's contents).
T5_KEYS = {"t5_model_name", "max_length", "enable_grad", "project_out"}
NUMBER_KEYS = {"min_val", "max_val"}
# Diffusion-block keys we carry (or that only say what `model.io_channels` says).
DIFFUSION_KEYS = {"type", "config", "cross_attention_cond_ids", "global_cond_ids", "diffusion_objective"}
UNSUPPORTED_DIFFUSION_KEYS = {
    "input_concat_ids": "input concatenation conditioning is not supported; use cross_attention_cond_ids",
    "prepend_cond_ids": "prepended conditioning tokens are not supported; use cross_attention_cond_ids",
    "distribution_shift_options": "timestep distribution shift is not supported; see timestep_sampler",
}


class Import:
    """What the diffusion half of an import collects: notes and problems."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.notes: list[str] = []


def diffusion_train_section(
    document: dict[str, Any], latent_frames_per_sample: int | None, checkpoint: str | None, t5_dir: str | None
) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """(train section or None, notes, problems) for a diffusion model config. `latent_frames_per_sample`
    is sample_size / the autoencoder's downsampling ratio, when that is known."""
    result = Import()
    model = document["model"]
    if document["model_type"] == "diffusion_cond":
        block = model.get("diffusion")
        where = "model.diffusion"
    else:  # diffusion_uncond: the backbone is model.type / model.config itself
        block = {"type": model.get("type"), "config": model.get("config", {})}
        where = "model"
    backbone = _backbone(block, where, result)
    conditioning = _conditioning(model.get("conditioning"), t5_dir, result) if "conditioning" in model else None
    source = block if isinstance(block, dict) and "diffusion_objective" in block else model
    objective = source.get("diffusion_objective", "v")
    if objective not in OBJECTIVES:
        result.problems.append(
            f"{where}.diffusion_objective '{objective}' is not supported; supported: {', '.join(OBJECTIVES)}"
        )
    section_model: dict[str, Any] = {"type": "diffusion", "backbone": backbone, "objective": objective}
    if conditioning is not None:
        section_model.update(conditioning)
        section_model["cross_attention_cond_ids"] = list(block.get("cross_attention_cond_ids", []) or [])
        section_model["global_cond_ids"] = list(block.get("global_cond_ids", []) or [])
    if result.problems:
        return None, result.notes, result.problems
    _check_model(section_model, result)
    train: dict[str, Any] = {"model": section_model, "data": {"normalise": "none"}}
    if latent_frames_per_sample:
        train["data"]["crop_frames"] = latent_frames_per_sample
    if checkpoint is not None:
        train["init_from"] = checkpoint
    _training(document.get("training") or {}, train, result)
    result.notes.append(
        "train.data.normalise is none: stable-audio-tools trains on the autoencoder's latents as they are "
        "(pretransform scale 1)"
    )
    return (train if not result.problems else None), result.notes, result.problems


def _backbone(block: Any, where: str, result: Import) -> dict[str, Any]:
    if not isinstance(block, dict):
        result.problems.append(f"{where}: expected an object with a 'type' and a 'config'")
        return {}
    kind = block.get("type")
    if kind not in BACKBONES:
        result.problems.append(
            f"{where}.type '{kind}' is not supported (U-Net backbones such as adp_cfg_1d, adp_1d and DAU1d are "
            f"not implemented); supported: {', '.join(BACKBONES)}"
        )
    for key, what in UNSUPPORTED_DIFFUSION_KEYS.items():
        if block.get(key):
            result.problems.append(f"{where}.{key}: {what}")
    unknown = sorted(set(block) - DIFFUSION_KEYS - set(UNSUPPORTED_DIFFUSION_KEYS))
    if unknown:
        result.problems.append(f"{where} has keys this importer does not know: {unknown}")
    return {"type": "dit", **dict(block.get("config") or {})} if kind in BACKBONES else {}


def _conditioning(conditioning: Any, t5_dir: str | None, result: Import) -> dict[str, Any]:
    if not isinstance(conditioning, dict):
        result.problems.append("model.conditioning: expected an object with 'configs' and 'cond_dim'")
        return {}
    fields = conditioning.get("default_keys") or {}
    conditioners = [
        _conditioner(number, entry, fields, t5_dir, result)
        for number, entry in enumerate(conditioning.get("configs") or [])
    ]
    return {"conditioners": [c for c in conditioners if c is not None], "cond_dim": conditioning.get("cond_dim", 0)}


def _conditioner(
    number: int, entry: Any, fields: dict[str, str], t5_dir: str | None, result: Import
) -> dict[str, Any] | None:
    where = f"model.conditioning.configs[{number}]"
    if not isinstance(entry, dict) or "id" not in entry or "type" not in entry:
        result.problems.append(f"{where}: expected an object with 'id', 'type' and 'config'")
        return None
    kind, config = entry["type"], dict(entry.get("config") or {})
    supported = sorted(registered("conditioner"))
    converted: dict[str, Any] = {"id": entry["id"], "type": kind}
    if entry["id"] in fields:
        converted["field"] = fields[entry["id"]]
    if kind == "number":
        _carry(config, NUMBER_KEYS, where, result)
        return {**converted, **{key: float(config[key]) for key in NUMBER_KEYS if key in config}}
    if kind == "t5":
        return _t5(number, converted, config, where, t5_dir, result)
    why = {"clap_text": "CLAP text encoders are not implemented", "clap_audio": "CLAP is not implemented"}.get(
        kind, "not implemented"
    )
    result.problems.append(
        f"{where} (id '{entry['id']}'): conditioner type '{kind}' is not supported ({why}); "
        f"supported: {', '.join(supported)}"
    )
    return None


def _t5(
    number: int, converted: dict[str, Any], config: dict[str, Any], where: str, t5_dir: str | None, result: Import
) -> dict[str, Any]:
    _carry(config, T5_KEYS, where, result)
    if config.get("enable_grad"):
        result.problems.append(f"{where}.config.enable_grad: training the T5 encoder is not supported (it is frozen)")
    converted["max_length"] = config.get("max_length", 128)
    converted["mask_padding"] = False  # what the source model was trained with: its DiT drops the mask
    if config.get("project_out"):
        converted["project_out"] = True
    name = config.get("t5_model_name", "t5-base")
    if t5_dir is not None:
        converted["model_dir"] = t5_dir
    else:
        result.notes.append(
            f"set train.model.conditioners[{number}].model_dir to a local copy of '{name}' "
            "(encoder + tokenizer, save_pretrained layout), or pass --t5-dir"
        )
    result.notes.append(
        f"conditioner '{converted['id']}': mask_padding false, as the source was trained (padded T5 tokens "
        "attended to as zeros)"
    )
    return converted


def _carry(config: dict[str, Any], known: set[str], where: str, result: Import) -> None:
    unknown = sorted(set(config) - known)
    if unknown:
        result.problems.append(f"{where}.config has keys this importer does not know: {unknown}")


def _check_model(model: dict[str, Any], result: Import) -> None:
    """The converted model must validate (a T5 directory not given yet is filled in for the check only)."""
    from pipeline.models.diffusion.diffusion_config import DiffusionModelConfig

    checked = {
        **model,
        "conditioners": [
            {**c, "model_dir": c.get("model_dir", "unset")} if c["type"] == "t5" else c
            for c in model.get("conditioners", [])
        ],
    }
    try:
        DiffusionModelConfig.model_validate(checked)
    except ValidationError as error:
        for item in error.errors():
            result.problems.append(f"train.model.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}")


def _training(training: dict[str, Any], train: dict[str, Any], result: Import) -> None:
    """AdamW settings, EMA and the demo's sampler steps; the rest is listed in the notes."""
    configs = training.get("optimizer_configs", {}).get("diffusion", {})
    optimizer = configs.get("optimizer", {})
    options = dict(optimizer.get("config", {}))
    lr = options.pop("lr", training.get("learning_rate"))
    if optimizer or lr is not None:
        name = optimizer.get("type", "AdamW")
        section: dict[str, Any] = {"name": name}
        if lr is not None:
            section["lr"] = lr
        if options:
            section["options"] = options
        train["optimizer"] = section
    if "scheduler" in configs:
        kind = configs["scheduler"].get("type")
        result.notes.append(
            f"learning-rate scheduler {kind} (not implemented: the rate is constant; see train.scheduler)"
        )
    if training.get("use_ema") is False:
        train["ema"] = None
    elif training.get("use_ema"):
        result.notes.append("EMA: stable-audio-tools' EMA schedule is approximated by train.ema.decay")
    demo = training.get("demo", {})
    if "demo_cfg_scales" in demo:
        result.notes.append(f"the source's demos use cfg scales {demo['demo_cfg_scales']}: see sample.cfg_scale")
