"""Train a classifier: ``python train.py [experiment=NAME] [group=option] [key=value ...]``.

With no arguments it trains the embedded default (ConvNeXt-atto-dcls on scikit-learn's digits,
a few minutes on a laptop CPU). ``torchrun --nproc_per_node=N train.py ...`` trains with DDP.
See ``configs/train.yaml`` for every knob.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import dcls
import models  # noqa: F401  (registers the DCLS variants with timm)
from engine import checkpoint as ckpt
from engine import preemption
from engine.data import build_loaders
from engine.distributed import DistributedFaultError, cleanup, describe_fault, init_distributed
from engine.loggers import build_logger
from engine.loop import AMP_DTYPES, TrainState, evaluate, train_one_epoch
from engine.media import EpochMedia, positions_lr
from engine.optim import build_optimizer
from engine.validation import ConfigError, validate_config

_logger = logging.getLogger("train")


def _criterion(data_cfg: DictConfig, mixup: Mixup | None) -> nn.Module:
    if mixup is not None:
        return SoftTargetCrossEntropy()  # Mixup already smooths the targets
    if data_cfg.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(data_cfg.label_smoothing)
    return nn.CrossEntropyLoss()


def _mixup(data_cfg: DictConfig) -> Mixup | None:
    if data_cfg.mixup <= 0 and data_cfg.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=data_cfg.mixup,
        cutmix_alpha=data_cfg.cutmix,
        label_smoothing=data_cfg.label_smoothing,
        num_classes=data_cfg.num_classes,
    )


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, float]:
    """Train as ``cfg`` says; returns the final metrics (also written to ``results.json``)."""
    run_dir = Path(run_dir or HydraConfig.get().runtime.output_dir)
    validate_config(cfg)  # every user-facing value, before anything is built
    # 1. seeding and distributed setup
    dist_info = init_distributed(cfg.trainer.device, timeout_s=cfg.trainer.dist_timeout_s)
    device, amp_dtype = dist_info.device, AMP_DTYPES[cfg.trainer.amp]
    torch.use_deterministic_algorithms(cfg.trainer.deterministic)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    # 2. model
    model = instantiate(cfg.model).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(cfg.seed + dist_info.rank)  # then different augmentations per rank
    # 3. data
    loaders = build_loaders(cfg.data, dist_info, cfg.seed)
    update_freq = cfg.trainer.update_freq
    updates_per_epoch = loaders.steps_per_epoch // update_freq
    if updates_per_epoch < 1:
        raise ConfigError(
            f"trainer.update_freq={update_freq} is invalid: it exceeds the "
            f"{loaders.steps_per_epoch} batches of an epoch"
        )
    sigma_schedule = cfg.trainer.sigma_schedule
    if sigma_schedule.enabled:  # widths set each epoch, not learned
        for sigma_tensor in dcls.sigma_parameters(model):
            sigma_tensor.requires_grad_(False)
    # 4. optimizer with DCLS position groups, 5. schedule
    effective_batch = cfg.data.batch_size * dist_info.world_size * update_freq
    optimizer = build_optimizer(model, cfg.optimizer, effective_batch)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.scheduler.sched,
        num_epochs=cfg.trainer.epochs,
        warmup_epochs=cfg.scheduler.warmup_epochs,
        warmup_lr=cfg.scheduler.warmup_lr,
        min_lr=cfg.scheduler.min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    ema = ModelEmaV3(model, decay=cfg.trainer.ema.decay) if cfg.trainer.ema.enabled else None
    mixup = _mixup(cfg.data)
    net = DistributedDataParallel(model) if dist_info.distributed else model
    state = TrainState(
        model=torch.compile(net) if cfg.trainer.compile else net,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=_criterion(cfg.data, mixup),
        device=device,
        update_freq=update_freq,
        clip_grad=cfg.trainer.clip_grad,
        amp_dtype=amp_dtype,
        scaler=torch.amp.GradScaler(device.type) if cfg.trainer.amp == "fp16" else None,
        ema=ema,
        mixup=mixup,
        channels_last=cfg.trainer.channels_last,
        log_every=cfg.trainer.log_every,
        max_bad_steps=cfg.trainer.max_bad_steps,
    )
    checkpoint_dir = run_dir / "checkpoints"
    resume_from = ckpt.resolve_resume(cfg.resume, checkpoint_dir)
    if resume_from is not None:
        checkpoint = ckpt.load_checkpoint(resume_from)
        ckpt.restore_training(state, model, checkpoint, cfg.data.batch_size, dist_info.world_size)
        _logger.info("resumed from %s at epoch %d, step %d", resume_from, state.epoch, state.step)
    logger = build_logger(
        cfg.logger if dist_info.is_main else None,
        run_dir,
        OmegaConf.to_container(cfg, resolve=True),
    )
    media = EpochMedia(cfg, run_dir, logger, enabled=dist_info.is_main)  # snapshots, W&B media

    def save(state: TrainState) -> None:
        if dist_info.is_main:
            ckpt.save_checkpoint(ckpt.training_state(state, model, cfg), checkpoint_dir)

    def on_update(state: TrainState, saved: bool = False) -> None:
        every = cfg.trainer.checkpoint_every
        if every and state.step % every == 0 and not saved:
            save(state)
            saved = True
        if preemption.stop_requested(device):  # a signal: checkpoint this step, then exit
            if not saved:
                save(state)
            raise preemption.preempted(state.step)

    # 6. epochs, 7. checkpoints
    start_time, metrics = time.perf_counter(), {}
    repulsion = cfg.trainer.repulsive_loss
    state.repulsive_min_distance = repulsion.min_distance
    media.start(model, state.epoch)
    while state.epoch < cfg.trainer.epochs:
        loaders.train_sampler.set_epoch(state.epoch, state.batch_in_epoch * cfg.data.batch_size)
        state.repulsive_weight = repulsion.weight if state.epoch >= repulsion.start_epoch else 0.0
        if sigma_schedule.enabled:
            progress = state.epoch / max(cfg.trainer.epochs - 1, 1)
            sigma = sigma_schedule.start + (sigma_schedule.end - sigma_schedule.start) * progress
            dcls.set_sigma_(model, sigma)
        metrics = train_one_epoch(state, loaders.train, updates_per_epoch, on_update)
        evals = {"": model} | ({"ema_": ema.module} if ema is not None else {})
        for prefix, evaluated in evals.items():
            result = evaluate(evaluated, loaders.val, device, amp_dtype, cfg.trainer.channels_last)
            metrics |= {f"val_{prefix}{k}": v for k, v in result.items() if k != "count"}
        metrics |= dcls.position_statistics(model)
        if sigma_schedule.enabled:
            metrics["sigma"] = sigma
        metrics |= {"epoch": state.epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        metrics |= positions_lr(optimizer)
        _logger.info(
            "epoch %d/%d  %s",
            state.epoch + 1,
            cfg.trainer.epochs,
            "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch"),
        )
        logger.log(metrics, state.step)
        media.end(model, state.epoch + 1, state.step)
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        save(state)
        on_update(state, saved=True)
    # 8. results
    results = {
        **metrics,
        "epochs": cfg.trainer.epochs,
        "wall_time_s": time.perf_counter() - start_time,
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint_dir / ckpt.LAST),
    }
    if dist_info.is_main:
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        _logger.info(
            "checkpoint: %s\nlogs: %s\nresults: %s",
            results["checkpoint"],
            run_dir,
            run_dir / "results.json",
        )
    logger.finish()
    cleanup()
    return results


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    """Entry point; returns validation top-1 for Hydra sweepers.

    Exit status: 2 on an invalid config (one log line), ``trainer.preemption.exit_code`` (75)
    after a preemption signal and its checkpoint, 1 on other errors; a failed collective names
    the ranks that stopped answering (``DistributedFaultError``).
    """
    handling = cfg.trainer.preemption
    signals = handling.signals if handling.enabled else []
    try:
        validate_config(cfg)  # before the handlers: they read trainer.preemption
        with preemption.PreemptionHandler(signals, handling.exit_code):
            return train(cfg)["val_top1"]
    except ConfigError as error:
        _logger.error("config error: %s", error)
        sys.exit(2)
    except preemption.Preempted as preempted:
        preempted.exit()
    except RuntimeError as error:
        if isinstance(error, DistributedFaultError) or not torch.distributed.is_initialized():
            raise
        raise DistributedFaultError(describe_fault(error, cfg.trainer.dist_timeout_s)) from error


if __name__ == "__main__":
    main()
