"""Train a backbone, or a Spectral Diffusion Prior for it, in stages (:mod:`spectral_prior.training`).

``spectral-prior train`` has one option per :class:`~spectral_prior.training.TrainConfig` field; without ``--stage``
it runs the whole recipe (stage1, stage2a, stage2b); ``--resume`` continues the run found in ``--output``.
"""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

from ..adapters.registry import list_backbones
from ..errors import InvalidInputError
from ..sdp.config import PriorConfig
from ..training import STAGES, RUN_CONFIG_FILE, Processes, TrainConfig, latest_checkpoint, train, train_all
from ..training.config import read_run_settings

_PRIOR_FLAGS = {
    "--prior-dim": "prior_dim",
    "--hfe-dim": "hfe_dim",
    "--hfe-depth": "hfe_depth",
    "--diffusion-steps": "steps",
    "--denoiser-hidden": "denoiser_hidden",
    "--denoiser-depth": "denoiser_depth",
}


_PRIOR_DEST = "prior__"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spectral-prior train`` options: one per :class:`TrainConfig` field, plus ``--resume``."""
    defaults = TrainConfig()
    parser.add_argument("--stage", choices=STAGES + ("all",), default=argparse.SUPPRESS,
                        help="what to train (default all: stage1, stage2a and stage2b, the whole recipe; with "
                        "--resume, the run's own)")
    parser.add_argument("--backbone", default=argparse.SUPPRESS, help=f"one of {', '.join(list_backbones())}")
    for item in fields(TrainConfig):
        if item.name in ("stage", "backbone", "prior"):
            continue
        flag = "--" + item.name.replace("_", "-")
        default = getattr(defaults, item.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f"(default {default})")
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=f"(default {default})")
    for flag, name in _PRIOR_FLAGS.items():
        parser.add_argument(flag, dest=_PRIOR_DEST + name, type=int, default=argparse.SUPPRESS,
                            help=f"PriorConfig.{name} of a new prior (default {getattr(PriorConfig(), name)})")
    parser.add_argument("--distill-steps", type=int, default=None, help="stage-2a steps of --stage all (default steps/2)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its latest checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _saved_run(output: Path) -> Optional[tuple[bool, dict[str, Any]]]:
    """``(stage_all, settings)`` of the run in ``output`` (``--stage all`` runs keep theirs in ``stage1/``), or None."""
    single, first_stage = read_run_settings(output), read_run_settings(output / "stage1")  # train_all's first stage
    if single is not None:
        return False, single
    return None if first_stage is None else (True, first_stage)


def config_from_arguments(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """The run's config and whether it is a ``--stage all`` run.

    With ``--resume`` the run is the one found in ``--output`` (a single stage or ``--stage all``), its saved settings
    updated with the options given on the command line; ValueError when the folder holds no run.
    """
    given = {name: value for name, value in vars(args).items() if name in {f.name for f in fields(TrainConfig)}}
    prior = {name.removeprefix(_PRIOR_DEST): v for name, v in vars(args).items() if name.startswith(_PRIOR_DEST)}
    if prior:
        given["prior"] = prior
    stage_all = given.get("stage", "all") == "all"
    if args.resume:
        output = Path(given.get("output", TrainConfig.output))
        saved = _saved_run(output)
        if saved is None:
            raise InvalidInputError(
                f"nothing to resume in {output}: it holds no run ({RUN_CONFIG_FILE} not found there nor in "
                f"{output / 'stage1'}); start the run without --resume"
            )
        saved_all, base = saved
        if "stage" in given and stage_all != saved_all:
            found = "a --stage all run" if saved_all else f"a {base['stage']} run"
            raise InvalidInputError(f"{output} holds {found}, not a --stage {given['stage']} one: drop --stage to resume it")
        stage_all = saved_all
        base.pop("output", None)
        given = {**base, **given}
    if stage_all:
        given["stage"] = "stage1"
    return TrainConfig(**given), stage_all


def _distill_steps(args: argparse.Namespace, config: TrainConfig) -> Optional[int]:
    """``--distill-steps``, or when resuming a ``--stage all`` run the stage-2a steps it was started with."""
    saved = read_run_settings(Path(config.output) / "stage2a") if args.distill_steps is None and args.resume else None
    return saved["steps"] if saved is not None else args.distill_steps


_WHAT_A_STAGE_LEAVES = {
    "baseline": "the bare backbone, for eval and reconstruct",
    "stage1": "the end of stage 1, whose measurement-only prior is untrained: continue with --stage stage2a "
              "--init {final}, not for eval or reconstruct",
    "stage2a": "the trained prior on the stage-1 backbone, usable; --stage stage2b --init {final} fine-tunes it",
    "stage2b": "the fine-tuned model, for eval and reconstruct",
}


def _interrupted(config: TrainConfig, stage_all: bool) -> KeyboardInterrupt:
    """Ctrl-C: where the run can be taken up again."""
    output = Path(config.output)
    stages = [output / stage for stage in ("stage1", "stage2a", "stage2b")] if stage_all else [output]
    latest = [(folder, latest_checkpoint(folder)) for folder in stages if latest_checkpoint(folder) is not None]
    where = f"its checkpoint {latest[-1][1].relative_to(output)}" if latest else "the start"
    return KeyboardInterrupt(f"the run in {output} resumes from {where} with --resume --output {output}")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``spectral-prior train``."""
    config, stage_all = config_from_arguments(args)
    try:
        if stage_all:
            final = train_all(config, distill_steps=_distill_steps(args, config), resume=args.resume,
                              progress=not args.quiet)
        else:
            final = train(config, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        raise _interrupted(config, stage_all) from None
    if Processes.from_environment().is_main:
        stage = "stage2b" if stage_all else config.stage
        print(f"saved {final}: {_WHAT_A_STAGE_LEAVES[stage].format(final=final)}")
    return 0
