"""Train a backbone, or a Spectral Diffusion Prior for it, in stages; resumable, on one process or under torchrun.

Stages (arXiv 2507.13769, DiffIR-style):

* ``baseline``: the backbone alone on the reconstruction loss (RMSE, as the MST toolbox), to compare at equal budget;
* ``stage1``: backbone + SPIMs + the teacher HFE, which also sees the ground truth, on RMSE;
* ``stage2a``: the student HFE + diffusion learn to reproduce the teacher's prior vector (L1), all else frozen;
* ``stage2b``: the whole network (teacher excepted) on RMSE + that L1, the student's prior driving the blocks;
* ``all``: stage1, stage2a and stage2b one after the other, in sub-folders of the output, ending in ``OUTPUT/final``.

Every run writes to its output folder ``train_config.json``, ``log.jsonl`` (losses, learning rate, throughput and
validation PSNR), atomic checkpoints ``checkpoints/step-NNNNNNN/`` (weights as safetensors; optimizer, scheduler,
EMA and RNG states) named by ``checkpoints/latest.json``, and at the end ``final/``: the trained model in the
format :func:`spectral_prior.load_model` and :func:`spectral_prior.load_injection` read and ``push_to_hub``
publishes. The ``spectral-prior train`` command is :mod:`spectral_prior.cli.train`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..adapters.registry import backbone_preset
from ..data import CassiBatches
from ..errors import InvalidInputError
from ..evaluation import evaluate, mean_metrics
from ..io import atomic_path, load_state_dict_strict
from ..models import save_backbone
from ..saving.format import TRAINING_STAGE_KEY
from ..sdp.inject import get_injector
from .checkpoints import caller_rng_kept, latest_checkpoint, read_checkpoint, replace_folder, restore_rng, rng_states, write_checkpoint
from .config import FINAL_DIR, LOG_FILE, MAY_CHANGE_ON_RESUME, TrainConfig, read_run_settings, write_run_settings
from .distributed import Processes, global_noise, mean_over_ranks, pick_device, process_group, rmse_loss
from .stages import (
    EMA,
    PriorDistillation,
    build_model,
    build_scheduler,
    mask_source,
    parameter_groups,
    trainable_parameters,
    training_card,
    training_mask,
    training_scenes,
    validation_scenes,
)

class Trainer:
    """Runs one stage of :class:`TrainConfig`: ``Trainer(config).fit()`` returns the ``final/`` folder.

    With ``resume=True`` it continues from the run folder's latest checkpoint (and starts afresh if there is none);
    without, it refuses a folder that already holds a run.
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False, progress: bool = True) -> None:
        self.config = config
        self.output = Path(config.output)
        self.processes = Processes.from_environment()
        self.device = pick_device(config.device, self.processes)
        self.progress = progress and self.processes.is_main
        self.resume = resume

    def fit(self) -> Path:
        """Train; the caller's global random states (torch's, numpy's, CUDA's) are as they were afterwards."""
        with process_group(self.processes, self.device), caller_rng_kept():
            return self._fit()

    # setup ------------------------------------------------------------------------------------------------------

    def _fit(self) -> Path:
        config, processes = self.config, self.processes
        self._check_run_folder()
        preset = backbone_preset(config.backbone)
        self.model = build_model(config).to(self.device)
        trainable = trainable_parameters(self.model, config.stage, freeze_binary=config.freeze_binary)
        self.named_trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.Adam(parameter_groups(trainable, self.model, config), betas=(0.9, 0.999))
        self.scheduler = build_scheduler(config, self.optimizer)
        self.ema = EMA(self.named_trainable, config.ema) if config.ema else None
        self.network = self._wrap(self._stage_network())
        scenes = training_scenes(config)
        self.validation = validation_scenes(config, scenes)
        self.mask2d = training_mask(config)
        start = self._restore() if self.resume else 0
        batches = CassiBatches(
            scenes, self.mask2d, crop=config.crop, batch=config.batch, input_setting=preset.input_setting,
            mask_setting=preset.mask_setting, augment=config.augment, random_mask_crop=config.random_mask_crop,
            seed=config.seed, rank=processes.rank, world_size=processes.world_size, start_step=start,
            device=self.device,
        )
        if processes.is_main:
            write_run_settings(self.output, config)
        self._loop(batches, start)
        return self._save_final()

    def _check_run_folder(self) -> None:
        saved = read_run_settings(self.output)
        if saved is None:
            return
        if not self.resume:
            if latest_checkpoint(self.output) is not None:
                raise InvalidInputError(
                    f"{self.output} already holds a run: resume it (the resume option), or choose another output folder"
                )
            return
        defaults = asdict(TrainConfig())
        changed = sorted(
            name for name, value in asdict(self.config).items()
            if name not in MAY_CHANGE_ON_RESUME and saved.get(name, defaults[name]) != json.loads(json.dumps(value))
        )
        if changed:
            details = ", ".join(f"{name}: {saved.get(name)!r} -> {getattr(self.config, name)!r}" for name in changed)
            raise InvalidInputError(f"cannot resume {self.output} with different settings ({details})")

    def _stage_network(self) -> nn.Module:
        return PriorDistillation(get_injector(self.model)) if self.config.stage == "stage2a" else self.model

    def _wrap(self, network: nn.Module) -> nn.Module:
        if self.processes.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
        # Static shapes: validation batches differ from training ones, and inductor (torch 2.13) fails on the
        # channels-last strides of MST's mask branch once it turns a shape dynamic; each shape compiles once instead.
        return torch.compile(network, dynamic=False) if self.config.compile else network

    def _restore(self) -> int:
        folder = latest_checkpoint(self.output)
        if folder is None:
            return 0
        weights, state = read_checkpoint(folder)
        load_state_dict_strict(self.model, weights, source=str(folder))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            for name, value in state["ema"].items():
                self.ema.shadow[name].copy_(value)
        restore_rng(state["rng"])
        self._truncate_log(state["step"])
        return state["step"]

    # the loop ---------------------------------------------------------------------------------------------------

    def _autocast(self) -> Any:
        precision = self.config.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _losses(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, float]]:
        """The loss to back-propagate and the values to log, for this stage."""
        config, processes = self.config, self.processes
        args = (batch["input"], batch["mask"])
        if config.stage in ("stage2a", "stage2b"):
            prior_dim = get_injector(self.model).prior_dim
            noise = global_noise(config.seed, step, config.batch, prior_dim, processes, self.device)
        if config.stage == "stage2a":
            z_student, z_teacher = self.network(args, batch["gt"], noise)
            l1 = F.l1_loss(z_student.float(), z_teacher.float())
            return l1, {"l1": mean_over_ranks(l1, processes)}
        if config.stage == "baseline":
            loss, rmse = rmse_loss(self.network(*args), batch["gt"], processes)
            return loss, {"rmse": rmse}
        injector = get_injector(self.model)
        if config.stage == "stage1":
            with injector.teacher(batch["gt"]):
                loss, rmse = rmse_loss(self.network(*args), batch["gt"], processes)
            return loss, {"rmse": rmse}
        with injector.distill(batch["gt"], noise) as pairs:
            loss, rmse = rmse_loss(self.network(*args), batch["gt"], processes)
        l1 = torch.stack([F.l1_loss(s.float(), t.float()) for s, t in pairs]).mean()
        return loss + config.distill_weight * l1, {"rmse": rmse, "l1": mean_over_ranks(l1, processes)}

    def _loop(self, batches: CassiBatches, start: int) -> None:
        config = self.config
        bar = tqdm(total=config.steps, initial=start, disable=not self.progress, desc=config.stage, unit="step")
        batch_iter = iter(batches)
        clock = time.perf_counter()
        for step in range(start, config.steps):
            batch = next(batch_iter)
            with self._autocast():
                loss, logged = self._losses(batch, step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.named_trainable.values(), config.clip_grad)
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            done = step + 1
            elapsed, clock = time.perf_counter() - clock, time.perf_counter()
            record = {"step": done, **logged, "lr": self.optimizer.param_groups[0]["lr"], "seconds": elapsed,
                      "samples_per_second": config.batch / elapsed}
            if (config.val_every and done % config.val_every == 0) or done == config.steps:
                record["val_psnr"] = self.validate()
            self._log(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("rmse", "l1", "val_psnr")}
                            | {"samples/s": f"{record['samples_per_second']:.2f}"})
            bar.update(1)
            if done % config.checkpoint_every == 0 or done == config.steps:
                self.save_checkpoint(done)
                clock = time.perf_counter()
        bar.close()

    # validation, logs, checkpoints ------------------------------------------------------------------------------

    def validate(self) -> float:
        """Mean PSNR (dB) on the validation scenes (``spectral-prior eval``'s protocol), with the EMA weights if any.

        Stage 1 validates what it trains: the prior of its teacher, which sees the ground truth.
        """
        preset = backbone_preset(self.config.backbone)
        with self.ema.applied() if self.ema is not None else nullcontext(), self._autocast():
            results = evaluate(
                self.model, self.validation, self.mask2d, input_setting=preset.input_setting,
                mask_setting=preset.mask_setting, device=self.device, teacher=self.config.stage == "stage1",
            )
        return mean_metrics(results)["psnr"]

    def _log(self, record: dict[str, Any]) -> None:
        if not self.processes.is_main:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        with open(self.output / LOG_FILE, "a") as log:
            log.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint being resumed (they will be written again)."""
        path = self.output / LOG_FILE
        if not self.processes.is_main or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        with atomic_path(path) as temporary:
            temporary.write_text("".join(line + "\n" for line in kept))

    def save_checkpoint(self, step: int) -> None:
        """Rank 0 writes the checkpoint of ``step`` (the other ranks wait for it)."""
        if self.processes.is_main:
            state = {
                "step": step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.shadow if self.ema is not None else None,
                "rng": rng_states(),
                "config": asdict(self.config),
            }
            write_checkpoint(self.output, step, self.model.state_dict(), state)
        if self.processes.world_size > 1:
            dist.barrier()

    def _save_final(self) -> Path:
        final = self.output / FINAL_DIR
        if self.processes.is_main:
            with self.ema.applied() if self.ema is not None else nullcontext():
                saving = dict(card={"training": training_card(self.config)}, mask=self.mask2d,
                              mask_source=mask_source(self.config),
                              extra_config={TRAINING_STAGE_KEY: self.config.stage})
                if self.config.stage == "baseline":
                    save_backbone(final, self.model, name=self.config.backbone, **saving)
                else:
                    get_injector(self.model).save_pretrained(
                        final, backbone=self.model, backbone_name=self.config.backbone, **saving
                    )
        if self.processes.world_size > 1:
            dist.barrier()
        return final


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Run one stage; returns its ``final/`` folder."""
    return Trainer(config, resume=resume, progress=progress).fit()


def train_all(
    config: TrainConfig, *, distill_steps: Optional[int] = None, resume: bool = False, progress: bool = True
) -> Path:
    """Stage 1, 2a and 2b in ``OUTPUT/stage1``, ``/stage2a``, ``/stage2b``, each resumable; returns ``OUTPUT/final``.

    Stages 1 and 2b run ``config.steps`` steps each, stage 2a ``distill_steps`` (default ``steps // 2``).
    """
    root = Path(config.output)
    previous = config.init
    plan = (("stage1", config.steps), ("stage2a", distill_steps or max(1, config.steps // 2)), ("stage2b", config.steps))
    for stage, steps in plan:
        stage_config = dataclasses.replace(config, stage=stage, steps=steps, output=str(root / stage), init=previous)
        previous = str(train(stage_config, resume=resume, progress=progress))
    final = root / FINAL_DIR
    if Processes.from_environment().is_main:
        replace_folder(Path(previous), final)
    return final
