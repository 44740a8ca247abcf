"""Training in stages (arXiv 2507.13769): :mod:`.config` (the settings), :mod:`.stages` (what each stage builds),
:mod:`.distributed` (torchrun), :mod:`.checkpoints` (versioned run state), :mod:`.trainer` (the loop)."""
from .checkpoints import RUN_STATE_VERSION, latest_checkpoint
from .config import FINAL_DIR, LOG_FILE, PRECISIONS, RUN_CONFIG_FILE, STAGES, TrainConfig, upgrade_run_settings
from .distributed import Processes
from .trainer import Trainer, train, train_all

__all__ = [
    "FINAL_DIR",
    "LOG_FILE",
    "PRECISIONS",
    "RUN_CONFIG_FILE",
    "RUN_STATE_VERSION",
    "STAGES",
    "Processes",
    "TrainConfig",
    "Trainer",
    "latest_checkpoint",
    "train",
    "train_all",
    "upgrade_run_settings",
]
