"""``train(cfg, run_dir)``: one training run as a config says, from seeding to ``results.json``.

``train.py`` is its Hydra entry point; this module holds the run itself so that it can be
imported (tests, ``torchrun`` workers) and pickled by reference (a Slurm sweep's launcher pickles
the entry point's task function, and cloudpickle pickles what ``__main__`` defines by value).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from timm.utils import random_seed
from torch.nn.parallel import DistributedDataParallel

import dcls
import models  # noqa: F401  (registers the DCLS variants with timm)
from engine import checkpoint as ckpt
from engine.amp import AMP_DTYPES
from engine.config import (
    ConfigError,
    check_input_size,
    instantiate_model,
    job_overrides,
    resolve_update_freq,
    validate_train_config,
)
from engine.data.datasets import build_loaders
from engine.distributed import (
    DistInfo,
    barrier,
    cleanup,
    init_distributed,
    set_determinism,
)
from engine.evaluation.accuracy import validate_model_and_ema
from engine.evaluation.results import RESULTS_FILE, RUN_RESULTS_FILE
from engine.pictures.media import EpochMedia
from engine.pictures.positions import HISTORY_DIR
from engine.training.checkpointer import Checkpointer
from engine.training.ema import build_ema
from engine.training.loggers import build_logger
from engine.training.loop import TrainState, train_one_epoch
from engine.training.losses import build_criterion, build_mixup
from engine.training.optim import build_optimizer, positions_lr, schedule_lr
from engine.training.results import (
    RunRecord,
    finished_results,
    row_name,
    set_aside_earlier_run,
    write_results,
)
from engine.training.schedules import DclsSchedule, build_scheduler

_logger = logging.getLogger("train")


def train(cfg: DictConfig, run_dir: Path | str) -> dict[str, float]:
    """Train as ``cfg`` says in ``run_dir`` (checkpoints, metrics, ``results.json``); returns the
    final metrics."""
    run_dir = Path(run_dir)
    validate_train_config(cfg)  # every user-facing value, before anything is built
    check_input_size(cfg.model, cfg.data.image_size, "data.image_size")  # (on the meta device)
    cfg.name = row_name(cfg, job_overrides())  # stored in checkpoints, for eval.py's rows
    # 1. seeding and distributed setup
    dist_info = init_distributed(cfg.trainer.device, timeout_s=cfg.trainer.dist_timeout_s)
    update_freq = _update_freq(cfg, dist_info.world_size)  # (before the data is read)
    set_determinism(cfg.trainer.deterministic)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    # 2. model
    model = instantiate_model(cfg.model).to(dist_info.device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    random_seed(cfg.seed, dist_info.rank)  # then different augmentations per rank (torch,
    # NumPy for timm's Mixup/CutMix, Python's random for RandAugment in the main process)
    # 3. data
    loaders = build_loaders(cfg.data, dist_info, cfg.seed)
    updates_per_epoch = _updates_per_epoch(cfg, loaders.steps_per_epoch, update_freq)
    # 4. optimizer with DCLS position groups, 5. schedules, EMA, loss
    state = _build_state(cfg, model, dist_info, update_freq, updates_per_epoch)
    checkpoint_dir = run_dir / "checkpoints"
    resumed = _resume(cfg, state, model, dist_info, loaders.steps_per_epoch, checkpoint_dir)
    if not resumed and dist_info.is_main:
        _set_aside_earlier_run(cfg, run_dir)
    barrier()  # (no rank writes in the folder before it is cleared)
    if state.epoch >= cfg.trainer.epochs and (done := finished_results(run_dir)) is not None:
        _logger.info(  # a relaunched finished run (a resumed sweep): its results stand
            "the run had finished all %d epochs: val top-1 %.2f (%s)",
            state.epoch,  # (its own: trainer.epochs may say fewer now)
            done["top1"],
            run_dir / "results.json",
        )
        cleanup()
        return done
    logger = build_logger(
        cfg.logger if dist_info.is_main else None,
        run_dir,
        OmegaConf.to_container(cfg, resolve=True),
        resume_step=state.step if resumed else None,
    )
    media = EpochMedia(cfg, run_dir, logger, enabled=dist_info.is_main)  # snapshots, W&B media
    checkpoints = Checkpointer(
        state,
        model,
        cfg,
        checkpoint_dir,
        every=cfg.trainer.checkpoint_every,
        extra={"classes": loaders.classes},  # for eval.py's checks
        is_main=dist_info.is_main,
    )

    def validate() -> dict[str, float]:
        return validate_model_and_ema(
            model, state.ema, loaders.val, state.device, state.amp_dtype, state.channels_last
        )

    # 6. epochs, 7. checkpoints
    state.clock_start = time.perf_counter()  # the run's time: from here, plus a resume's before
    metrics = {} if state.epoch < cfg.trainer.epochs else validate()  # a finished run: report
    media.start(model, state.epoch)
    while state.epoch < cfg.trainer.epochs:
        loaders.train_sampler.set_epoch(state.epoch, state.batch_in_epoch * cfg.data.batch_size)
        metrics = train_one_epoch(state, loaders.train, updates_per_epoch, checkpoints.on_update)
        metrics |= validate()
        metrics |= dcls.position_statistics(model)
        metrics |= {"epoch": state.epoch + 1, "lr": schedule_lr(state.optimizer)}
        metrics |= positions_lr(state.optimizer)
        state.record_val_top1(metrics["val_ema_top1" if state.ema is not None else "val_top1"])
        _logger.info(
            "epoch %d/%d  %s",
            state.epoch + 1,
            cfg.trainer.epochs,
            "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch"),
        )
        logger.log(metrics, state.step)
        media.end(model, state.epoch + 1, state.step)
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        checkpoints.save()
        checkpoints.on_update(state, saved=True)
    # 8. results
    record = RunRecord(
        cfg=cfg,
        run_dir=run_dir,
        checkpoint=checkpoint_dir / ckpt.LAST,
        metrics=metrics,
        val_count=len(loaders.val.dataset),
        best_val_top1=state.best_val_top1,
        best_epoch=state.best_epoch,
        wall_time_s=state.run_seconds(),
        weights="ema" if state.ema is not None else "model",
    )
    results = write_results(record, enabled=dist_info.is_main)
    logger.finish()
    cleanup()
    return results


def _set_aside_earlier_run(cfg: DictConfig, run_dir: Path) -> None:
    """A fresh start in a folder an earlier run used: its outputs go to ``.earlier/``."""
    outputs = ["checkpoints", RUN_RESULTS_FILE, RESULTS_FILE, "metrics.csv"]
    if (cfg.get("logger") or {}).get("csv") is not None:
        outputs.append(cfg.logger.csv.get("filename", "metrics.csv"))
    snapshots = sorted(p.name for p in (run_dir / HISTORY_DIR).glob("*"))
    if snapshots[1:]:  # the initial positions alone: nothing trained (a kill in epoch 1)
        outputs.append(HISTORY_DIR)
    moved = set_aside_earlier_run(run_dir, outputs)
    if moved is not None:
        _logger.warning(
            "%s held an earlier run's outputs and this run starts over (resume=%s): they are "
            "kept in %s",
            run_dir,
            cfg.resume,
            moved,
        )


def _update_freq(cfg: DictConfig, world_size: int) -> int:
    """Micro-batches per optimizer update (from ``trainer.effective_batch_size`` if set)."""
    update_freq = resolve_update_freq(cfg, world_size)
    if (effective := cfg.trainer.effective_batch_size) is not None:
        _logger.info(
            "trainer.effective_batch_size=%d: update_freq %d (data.batch_size=%d x %d %s)",
            effective,
            update_freq,
            cfg.data.batch_size,
            world_size,
            "process" if world_size == 1 else "processes",
        )
    return update_freq


def _updates_per_epoch(cfg: DictConfig, steps_per_epoch: int, update_freq: int) -> int:
    """Optimizer updates in an epoch of ``steps_per_epoch`` micro-batches.

    Raises:
        ConfigError: if ``update_freq`` exceeds the batches of an epoch.
    """
    freq_text = f"trainer.update_freq={update_freq}"
    if (effective := cfg.trainer.effective_batch_size) is not None:
        freq_text += f" (from trainer.effective_batch_size={effective})"
    updates_per_epoch = steps_per_epoch // update_freq
    if updates_per_epoch < 1:
        raise ConfigError(
            f"{freq_text} is invalid: it exceeds the {steps_per_epoch} batches of an epoch"
        )
    if unused := steps_per_epoch % update_freq:
        _logger.info(
            "%s: %d batches per epoch make %d updates; the last %d of each epoch are not used",
            freq_text,
            steps_per_epoch,
            updates_per_epoch,
            unused,
        )
    return updates_per_epoch


def _build_state(
    cfg: DictConfig,
    model: torch.nn.Module,
    dist_info: DistInfo,
    update_freq: int,
    updates_per_epoch: int,
) -> TrainState:
    """The loop's state at its start: the optimizer with DCLS position groups, the schedules,
    the EMA, Mixup/CutMix and the loss, and the model wrapped for DDP and ``torch.compile``."""
    dcls_schedule = DclsSchedule(cfg.trainer)
    dcls_schedule.prepare(model)  # scheduled widths are not learned
    effective_batch = cfg.data.batch_size * dist_info.world_size * update_freq
    optimizer = build_optimizer(model, cfg.optimizer, effective_batch)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.trainer.epochs, updates_per_epoch)
    ema_cfg = cfg.trainer.ema
    ema = build_ema(model, ema_cfg.decay, ema_cfg.shared_positions) if ema_cfg.enabled else None
    mixup = build_mixup(cfg.data)
    net = DistributedDataParallel(model) if dist_info.distributed else model
    return TrainState(
        model=torch.compile(net) if cfg.trainer.compile else net,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=build_criterion(cfg.data, mixup),
        device=dist_info.device,
        epochs=cfg.trainer.epochs,
        update_freq=update_freq,
        clip_grad=cfg.trainer.clip_grad,
        amp_dtype=AMP_DTYPES[cfg.trainer.amp],
        scaler=torch.amp.GradScaler(dist_info.device.type) if cfg.trainer.amp == "fp16" else None,
        ema=ema,
        mixup=mixup,
        channels_last=cfg.trainer.channels_last,
        log_every=cfg.trainer.log_every,
        max_bad_steps=cfg.trainer.max_bad_steps,
        dcls_schedule=dcls_schedule,
    )


def _resume(
    cfg: DictConfig,
    state: TrainState,
    model: torch.nn.Module,
    dist_info: DistInfo,
    steps_per_epoch: int,
    checkpoint_dir: Path,
) -> bool:
    """Restore ``state`` and ``model`` from the checkpoint ``cfg.resume`` names, if any; whether
    one was restored."""
    resume_from = ckpt.resolve_resume(cfg.resume, checkpoint_dir)
    if resume_from is None:
        return False
    checkpoint, resume_from = ckpt.load_resumable(resume_from)
    ckpt.restore_training(
        state,
        model,
        checkpoint,
        cfg.data.batch_size,
        dist_info.world_size,
        rank=dist_info.rank,
        seed=cfg.seed,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    if state.epoch < cfg.trainer.epochs:
        _logger.info(
            "resumed from %s after epoch %d and update %d; epoch %d continues after "
            "micro-batch %d of %d (processes x update_freq: %d x %d; the checkpoint's "
            "processes: %d)",
            resume_from,
            state.epoch,
            state.step,
            state.epoch + 1,
            state.batch_in_epoch,
            steps_per_epoch,
            dist_info.world_size,
            state.update_freq,
            checkpoint.get("world_size", 1),
        )
    else:  # a relaunched finished run (a resumed sweep): nothing continues
        _logger.info("loaded %s, written after the last epoch (%d)", resume_from, state.epoch)
    return True
