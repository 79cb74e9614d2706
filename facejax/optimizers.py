"""optax optimizers and learning-rate schedules from `config.optimizer`.

  config.optimizer = dict(name="adam", learning_rate=1e-3,
                          kwargs=dict(b1=0.9, eps=0.1),          # -> optax.adam(...)
                          schedule=dict(name="cosine", warmup_steps=100, final_lr_fraction=0.0),
                          weight_decay=0.0, grad_clip_norm=0.0)

`name` is any optax optimizer that takes `learning_rate` (adagrad, adam, adamw,
sgd, lamb, ...); `kwargs` go to it unchanged, so optax's own defaults apply
and optax's constructor names an unknown keyword. `configs/common.py`'s
`optimizer()` writes this section.
"""

import inspect
from typing import Any, Callable

import ml_collections
import optax

from facejax.errors import ConfigError, did_you_mean, unknown_keys


def _constant(lr: float, num_steps: int, warmup_steps: int) -> optax.Schedule:
  del num_steps, warmup_steps
  return optax.constant_schedule(lr)


def _cosine(lr: float, num_steps: int, warmup_steps: int,
            final_lr_fraction: float = 0.0) -> optax.Schedule:
  """Cosine decay from `lr` to `lr * final_lr_fraction` over the steps after warm-up."""
  return optax.cosine_decay_schedule(lr, max(1, num_steps - warmup_steps), alpha=final_lr_fraction)


def _step(lr: float, num_steps: int, warmup_steps: int, boundaries: tuple[int, ...] = (),
          decay_factor: float = 0.1) -> optax.Schedule:
  """x`decay_factor` at each of `boundaries`, steps counted from the start of the run."""
  del num_steps
  if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
    raise ConfigError(f"config.optimizer.schedule.boundaries={tuple(boundaries)!r} must be "
                      "increasing")
  # The schedule after warm-up restarts its count at 0.
  return optax.piecewise_constant_schedule(
      lr, {int(b) - warmup_steps: decay_factor for b in boundaries})


def _polynomial(lr: float, num_steps: int, warmup_steps: int, power: float = 1.0,
                final_lr_fraction: float = 0.0) -> optax.Schedule:
  """`lr (1 - t / T)^power` down to `lr * final_lr_fraction` over the T steps after warm-up.

  power 1 with a linear warm-up from 0 is arcface_torch's `PolynomialLRWarmup`.
  """
  return optax.polynomial_schedule(lr, lr * final_lr_fraction, power,
                                   max(1, num_steps - warmup_steps))


# name -> schedule(lr, num_steps, warmup_steps, **config.optimizer.schedule keys) for
# the steps after warm-up.
SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": _constant, "cosine": _cosine, "step": _step, "polynomial": _polynomial}


def call_with_section(fn: Callable[..., Any], args: tuple, section: dict, path: str,
                      what: str) -> Any:
  """`fn(*args, **section)`, with an unknown keyword reported as `<path>.<key>` and a hint."""
  accepted = list(inspect.signature(fn).parameters)[len(args):]
  problems = unknown_keys(path, section, accepted, what)
  if problems:
    raise ConfigError(problems)
  return fn(*args, **section)


def create_learning_rate_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """`cfg.schedule` (a SCHEDULES name and its keys) after a linear warm-up of `warmup_steps`."""
  kwargs = dict(cfg.schedule)
  name = kwargs.pop("name")
  warmup = kwargs.pop("warmup_steps", 0)
  lr = cfg.learning_rate
  if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0:
    raise ConfigError(f"config.optimizer.learning_rate={lr!r}: must be a number >= 0")
  if name not in SCHEDULES:
    raise ConfigError(f"config.optimizer.schedule.name={name!r} is not one of "
                      f"{tuple(SCHEDULES)}" + did_you_mean(name, SCHEDULES))
  if not isinstance(warmup, int) or warmup < 0:
    raise ConfigError(f"config.optimizer.schedule.warmup_steps={warmup!r}: must be an int >= 0")
  main = call_with_section(SCHEDULES[name], (lr, num_steps, warmup), kwargs,
                           "config.optimizer.schedule", f"schedule {name!r}")
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


def create_optimizer(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """`optax.<cfg.name>(schedule, **cfg.kwargs)`, after gradient clipping and the L2 term.

  `cfg.accumulate_steps` = k > 1 wraps it all in `optax.MultiSteps`: the
  gradients of k train steps are averaged and applied once (an effective
  batch of k x batch_size), and the schedule counts those updates, i.e. runs
  over num_steps // k. Raises ConfigError naming the key for an unknown
  optimizer, schedule or keyword.
  """
  k = cfg.get("accumulate_steps", 1)
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise ConfigError(f"config.optimizer.accumulate_steps={k!r}: must be an int >= 1")
  if k > 1:
    return optax.MultiSteps(_create_optimizer(cfg, max(1, num_steps // k)),
                            every_k_schedule=k).gradient_transformation()
  return _create_optimizer(cfg, num_steps)


def _create_optimizer(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  name = cfg.name
  factory = getattr(optax, name, None) if isinstance(name, str) else None
  if factory is None or "learning_rate" not in inspect.signature(factory).parameters:
    raise ConfigError(f"config.optimizer.name={name!r} is not one of optax's optimizers (a "
                      "function of optax that takes a learning_rate)"
                      + did_you_mean(name, ("adagrad", "adam", "adamw", "sgd", "lamb", "lion",
                                            "rmsprop", "lars")))
  schedule = create_learning_rate_schedule(cfg, num_steps)
  opt = call_with_section(factory, (schedule,), dict(cfg.kwargs), "config.optimizer.kwargs",
                          f"optax.{name}")
  chain = []
  for key in ("grad_clip_norm", "weight_decay"):
    value = cfg[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
      raise ConfigError(f"config.optimizer.{key}={value!r}: must be a number >= 0 (0: off)")
  if cfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.weight_decay:
    chain.append(optax.add_decayed_weights(cfg.weight_decay))
  chain.append(opt)
  return optax.chain(*chain)
