"""optax optimizers and learning-rate schedules from `config.optimizer`."""

import ml_collections
import optax

OPTIMIZERS = ("adagrad", "adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


def create_learning_rate_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """constant | cosine | step (x`decay_factor` at `boundaries`), with linear warm-up."""
  lr = cfg.learning_rate
  warmup = cfg.get("warmup_steps", 0)
  name = cfg.get("schedule", "constant")
  if name == "constant":
    main = optax.constant_schedule(lr)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(lr, max(1, num_steps - warmup), alpha=cfg.get("final_lr_fraction", 0.0))
  elif name == "step":
    main = optax.piecewise_constant_schedule(
        lr, {int(b) - warmup: cfg.get("decay_factor", 0.1) for b in cfg.get("boundaries", ())})
  else:
    raise ValueError(f"config.optimizer.schedule={name!r}: use constant, cosine or step")
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


def create_optimizer(cfg: ml_collections.ConfigDict, num_steps: int,
                     lr_scale: float = 1.0) -> optax.GradientTransformation:
  """AdaGrad (the FaceNet paper's), Adam/AdamW or SGD with momentum.

  `weight_decay` is decoupled for adamw and an L2 term added to the gradient
  otherwise (the classic "L2 regularisation" of the seeds' recipes).
  `lr_scale` multiplies the whole schedule (the divergence guard lowers it
  after a rollback); the optimizer state has the same structure for any scale,
  so a checkpoint restores under either.
  """
  base_schedule = create_learning_rate_schedule(cfg, num_steps)
  schedule = base_schedule if lr_scale == 1.0 else (lambda count: base_schedule(count) * lr_scale)
  name = cfg.name
  wd = cfg.get("weight_decay", 0.0)
  if name == "adagrad":
    opt = optax.adagrad(schedule, initial_accumulator_value=cfg.get("initial_accumulator_value", 0.1),
                        eps=cfg.get("eps", 1e-7))
  elif name == "adam":
    opt = optax.adam(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8))
  elif name == "adamw":
    opt = optax.adamw(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                      eps=cfg.get("eps", 1e-8), weight_decay=wd)
    wd = 0.0
  elif name == "sgd":
    opt = optax.sgd(schedule, momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False))
  else:
    raise ValueError(f"config.optimizer.name={name!r}: use adagrad, adam, adamw or sgd")
  chain = []
  if cfg.get("grad_clip_norm"):
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if wd:
    chain.append(optax.add_decayed_weights(wd))
  chain.append(opt)
  return optax.chain(*chain)
