"""Training engine: device selection, GPU-resident data, batch augmentation, train/eval loops."""

from .data import DeviceData
from .device import autocast, seed_everything, select_device
from .loop import EpochStats, make_optimizer, make_scheduler, predict_logits, train_epoch

__all__ = [
    "DeviceData",
    "EpochStats",
    "autocast",
    "make_optimizer",
    "make_scheduler",
    "predict_logits",
    "seed_everything",
    "select_device",
    "train_epoch",
]
