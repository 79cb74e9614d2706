"""Static checks of the launch scripts in launch/ (Colab notebook, Cloud TPU VM, SLURM).

The scripts cannot run here (no TPU, cloud project or cluster). What can go wrong without
running them is checked instead: shell syntax, the notebook's structure and Python, and every
`python -m facejax.{main,evaluation,data.align}` command in them and in launch/README.md:
each flag must be defined by that module, `--config` must name a config file and a variant
its `get_config` accepts, and each `--config.a.b=value` override an existing key with a value
of its type. Shell variables (`$X`, `${X:-default}`) and IPython `{X}` are resolved from the
assignments in the same file. Also: `#SBATCH` directives and gcloud/gsutil subcommands come
from known lists, and tpu_vm.sh is run end to end with stub `gcloud`/`gsutil` programs.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib
import json
import math
import os
import pathlib
import re
import shlex
import stat
import subprocess
import sys
import warnings

import ml_collections
import numpy as np
import pytest
from absl import flags as absl_flags
from ml_collections import config_flags

# ml_collections loads config files with the deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
NOTEBOOK = LAUNCH / "colab_tpu.ipynb"
TPU_VM = LAUNCH / "tpu_vm.sh"
SLURM = LAUNCH / "slurm_gpu.sbatch"
LAUNCH_README = LAUNCH / "README.md"

# `python -m <module>` -> the file whose flags apply (plus the files it imports from facejax).
MODULES = {
    "facejax.main": "facejax/main.py",
    "facejax.evaluation": "facejax/evaluation/__main__.py",
    "facejax.data.align": "facejax/data/align.py",
    "facejax.evaluation.ablation": "facejax/evaluation/ablation.py",
    "facejax.evaluation.harmonic": "facejax/evaluation/harmonic.py",
    "facejax.evaluation.make_bin": "facejax/evaluation/make_bin.py",
    "facejax.convert": "facejax/convert.py",
    "facejax.export": "facejax/export/__main__.py",
    "facejax.tools": "facejax/tools/__main__.py",
    "facejax.data.prepare": "facejax/data/prepare.py",
    "facejax.data.synthetic_rec": "facejax/data/synthetic_rec.py",
}
# Modules whose command line takes positional arguments (a verb and its files).
POSITIONAL = {"facejax.tools"}
README = REPO / "README.md"
BENCHMARKS_README = REPO / "benchmarks" / "README.md"
# Multi-host flags announced for facejax/main.py. While main.py defines none of them (the
# change has not landed), their use is reported as pending (the test xfails) rather than as
# an error; once any of them is defined, all are checked like every other flag.
PENDING_MAIN_FLAGS = ("coordinator_address", "num_processes", "process_id", "distributed",
                      "cpu_collectives")
# Flags that absl.app and absl.logging define for every program.
ABSL_BUILTIN_FLAGS = {
    "flagfile", "undefok", "help", "helpshort", "helpfull", "helpxml", "only_check_args",
    "logtostderr", "alsologtostderr", "log_dir", "v", "verbosity", "stderrthreshold",
    "showprefixforinfo", "logger_levels", "run_with_pdb", "pdb_post_mortem", "pdb",
    "run_with_profiling", "profile_file", "use_cprofile_for_profiling",
}
# JAX devices the global batch of each script's training command must divide (the batch is
# checked against their least common multiple): Colab TPUs have 1 or 8; a v4-32 has 16 and
# the SLURM default is 2 nodes x 8 GPUs; 32 allows for larger slices and jobs.
DEVICE_COUNTS = {"colab_tpu.ipynb": (1, 8), "tpu_vm.sh": (8, 16, 32),
                 "slurm_gpu.sbatch": (8, 16, 32)}

# sbatch options (`man sbatch`, Slurm 23-24): long name -> takes a value.
SBATCH_LONG = {
    "account": True, "acctg-freq": True, "array": True, "batch": True, "bb": True,
    "begin": True, "chdir": True, "clusters": True, "comment": True, "constraint": True,
    "container": True, "contiguous": False, "core-spec": True, "cores-per-socket": True,
    "cpu-freq": True, "cpus-per-gpu": True, "cpus-per-task": True, "deadline": True,
    "delay-boot": True, "dependency": True, "distribution": True, "error": True,
    "exclude": True, "exclusive": False, "export": True, "export-file": True, "extra": True,
    "get-user-env": False, "gid": True, "gpu-bind": True, "gpu-freq": True, "gpus": True,
    "gpus-per-node": True, "gpus-per-socket": True, "gpus-per-task": True, "gres": True,
    "gres-flags": True, "hint": True, "hold": False, "ignore-pbs": False, "input": True,
    "job-name": True, "kill-on-invalid-dep": True, "licenses": True, "mail-type": True,
    "mail-user": True, "mcs-label": True, "mem": True, "mem-bind": True, "mem-per-cpu": True,
    "mem-per-gpu": True, "mincpus": True, "network": True, "nice": False, "no-kill": False,
    "no-requeue": False, "nodefile": True, "nodelist": True, "nodes": True, "ntasks": True,
    "ntasks-per-core": True, "ntasks-per-gpu": True, "ntasks-per-node": True,
    "ntasks-per-socket": True, "open-mode": True, "output": True, "overcommit": False,
    "oversubscribe": False, "partition": True, "power": True, "prefer": True, "priority": True,
    "profile": True, "propagate": False, "qos": True, "quiet": False, "reboot": False,
    "requeue": False, "reservation": True, "signal": True, "sockets-per-node": True,
    "spread-job": False, "switches": True, "thread-spec": True, "threads-per-core": True,
    "time": True, "time-min": True, "tmp": True, "tres-per-task": True, "uid": True,
    "use-min-nodes": False, "verbose": False, "wait": False, "wait-all-nodes": True,
    "wckey": True,
}
SBATCH_SHORT = {"A": True, "a": True, "B": True, "b": True, "C": True, "c": True, "D": True,
                "d": True, "e": True, "G": True, "H": False, "i": True, "J": True, "k": False,
                "L": True, "M": True, "m": True, "N": True, "n": True, "O": False, "o": True,
                "p": True, "Q": False, "q": True, "S": True, "s": False, "t": True, "v": False,
                "W": False, "w": True, "x": True}

# gcloud commands the launch scripts may use, with their flags (from `gcloud compute tpus tpu-vm
# <command> --help`, Cloud SDK 528), and gcloud-wide flags.
GCLOUD_COMMANDS = {
    "compute tpus tpu-vm create": {
        "zone", "version", "accelerator-type", "topology", "type", "async", "data-disk",
        "description", "internal-ips", "labels", "metadata", "metadata-from-file", "network",
        "preemptible", "queue-count", "range", "reserved", "scopes", "service-account",
        "shielded-secure-boot", "spot", "subnetwork", "tags"},
    "compute tpus tpu-vm ssh": {
        "zone", "worker", "command", "output-directory", "dry-run", "force-key-file-overwrite",
        "internal-ip", "plain", "ssh-flag", "ssh-key-file", "strict-host-key-checking",
        "ssh-key-expiration", "ssh-key-expire-after"},
    "compute tpus tpu-vm scp": {
        "zone", "worker", "compress", "dry-run", "force-key-file-overwrite", "internal-ip",
        "plain", "recurse", "scp-flag", "ssh-key-file", "strict-host-key-checking",
        "ssh-key-expiration", "ssh-key-expire-after"},
    "compute tpus tpu-vm delete": {"zone", "async"},
    "compute tpus tpu-vm describe": {"zone"},
    "compute tpus tpu-vm list": {"zone", "filter", "limit", "page-size", "sort-by", "uri"},
}
GCLOUD_WIDE_FLAGS = {"account", "billing-project", "configuration", "flags-file", "flatten",
                     "format", "help", "impersonate-service-account", "log-http", "project",
                     "quiet", "trace-token", "user-output-enabled", "verbosity"}
GSUTIL_COMMANDS = {"cp", "rsync", "ls", "mb", "du", "cat", "stat", "rm"}
GSUTIL_OPTIONS_WITH_VALUE = {"-o", "-h", "-u", "-i"}


# --- resolving shell and IPython variables ------------------------------------------------------

def logical_lines(text: str) -> list[tuple[int, str]]:
  """Physical lines joined at backslash-newline continuations, with their first line number."""
  out, buf, start = [], "", None
  for number, line in enumerate(text.split("\n"), 1):
    start = start or number
    if line.endswith("\\") and not line.endswith("\\\\"):
      buf += line[:-1]
      continue
    out.append((start, buf + line))
    buf, start = "", None
  if buf:
    out.append((start, buf))
  return out


# ${NAME}, ${NAME:-word} (also -, =, :=, +, :+) whose word holds no "${", or $NAME.
_SHELL_VAR = re.compile(r"\$\{(\w+)(?:(:?[-=+])((?:[^}$]|\$(?!\{))*))?\}|\$(\w+)")
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+|local\s+|readonly\s+)?([A-Za-z_]\w*)=(.*)$")


def expand_shell(text: str, env: dict[str, str]) -> str:
  """Expands the variables of `env`; unknown ones keep their `:-` default or stay as written."""

  def sub(m):
    name, op, word = m.group(1) or m.group(4), m.group(2), m.group(3) or ""
    if name in env:
      value = env[name]
      if op and op.endswith("+"):
        return word if value else ""
      return word if (op and op.startswith(":") and not value) else value
    if op and op[-1] in "-=":
      return word
    return m.group(0)

  for _ in range(10):  # inner ${...} first, then the ones around them
    expanded = _SHELL_VAR.sub(sub, text)
    if expanded == text:
      break
    text = expanded
  return text


def _assigned_value(raw: str) -> str:
  raw = raw.strip()
  if raw[:1] == '"':
    m = re.match(r'"((?:[^"\\]|\\.)*)"', raw)
    return m.group(1) if m else raw[1:]
  if raw[:1] == "'":
    end = raw.find("'", 1)
    return raw[1:end] if end > 0 else raw[1:]
  return raw.split()[0] if raw.split() else ""


def shell_variables(text: str) -> dict[str, str]:
  """NAME -> value of the first `NAME=value` assignment, expanded with the ones before it."""
  env: dict[str, str] = {}
  for _, line in logical_lines(text):
    m = _ASSIGNMENT.match(line)
    if m and m.group(1) not in env:
      env[m.group(1)] = expand_shell(_assigned_value(m.group(2)), env)
  return env


def python_variables(sources: list[str]) -> dict[str, str]:
  """NAME -> str(value) of the first `NAME = constant` or f-string of such names."""
  env: dict[str, str] = {}

  def value_of(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool)):
      return str(node.value)
    if isinstance(node, ast.JoinedStr):
      parts = []
      for part in node.values:
        if isinstance(part, ast.Constant):
          parts.append(str(part.value))
        elif (isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name)
              and part.value.id in env and part.format_spec is None):
          parts.append(env[part.value.id])
        else:
          return None
      return "".join(parts)
    return None

  for source in sources:
    for node in ast.walk(ast.parse(source)):
      if (isinstance(node, ast.Assign) and len(node.targets) == 1
          and isinstance(node.targets[0], ast.Name) and node.targets[0].id not in env):
        value = value_of(node.value)
        if value is not None:
          env[node.targets[0].id] = value
  return env


def expand_ipython(text: str, env: dict[str, str]) -> str:
  """IPython's `{NAME}` in `!` lines, for the names in `env`."""
  return re.sub(r"\{(\w+)\}", lambda m: env.get(m.group(1), m.group(0)), text)


# --- finding facejax commands -------------------------------------------------------------------

@dataclasses.dataclass
class Invocation:
  where: str  # file:line
  module: str  # e.g. "facejax.main"
  args: list[str]
  executable: bool  # a command a script runs (not documentation): required flags must be there


_INVOKE = re.compile(r"(?:^|(?<=[\s;&|(`\"']))(?:[\w./~${}-]*/)?python(?:3(?:\.\d+)?)?"
                     r"\s+-m\s+(facejax(?:\.\w+)+)")


def _quote_state(prefix: str) -> str | None:
  """The quote ('"', "'" or None) that a bash line is inside of after `prefix`."""
  state, i = None, 0
  while i < len(prefix):
    c = prefix[i]
    if state == "'":
      state = None if c == "'" else state
    elif c == "\\":
      i += 1
    elif c == '"':
      state = None if state == '"' else '"'
    elif c == "'" and state is None:
      state = "'"
    i += 1
  return state


def _command_text(s: str, enclosing: str | None = None) -> tuple[str, str]:
  """The arguments of a command starting at s[0]: up to a shell operator, a comment, a newline
  or the `enclosing` quote that closes the string the command sits in (e.g. an ssh
  --command="..."). Returns (text, the character it stopped at)."""
  out, quote, prev, i = [], None, " ", 0
  while i < len(s):
    c = s[i]
    if c == "\\" and quote != "'" and i + 1 < len(s):
      out.append(s[i:i + 2])
      prev, i = s[i + 1], i + 2
      continue
    if quote:
      if c == quote:
        quote = None
      out.append(c)
    elif c == enclosing:
      return "".join(out), c
    elif c in "\"'":
      quote = c
      out.append(c)
    elif c in ";&|)<>`\n" or (c == "#" and prev.isspace()):
      return "".join(out), c
    else:
      out.append(c)
    prev, i = c, i + 1
  return "".join(out), ""


def find_invocations(text: str, where: str, *, executable: bool,
                     line_offset: int = 0) -> tuple[list[Invocation], list[str]]:
  """facejax commands in (already expanded) text; errors for unknown modules or bad quoting."""
  invocations, errors = [], []
  for number, line in logical_lines(text):
    for m in _INVOKE.finditer(line):
      loc = f"{where}:{number + line_offset}"
      if m.group(1) not in MODULES:
        errors.append(f"{loc}: unknown module `python -m {m.group(1)}` "
                      f"(known: {', '.join(MODULES)})")
        continue
      args_text, stop = _command_text(line[m.end():], _quote_state(line[:m.start()]))
      try:
        args = shlex.split(args_text)
      except ValueError as e:
        errors.append(f"{loc}: cannot split {args_text!r}: {e}")
        continue
      if args and stop in ("<", ">") and args[-1].isdigit():
        args.pop()  # the `2` of `2>&1`
      invocations.append(Invocation(loc, m.group(1), args, executable))
  return invocations, errors


# --- the flags each module defines --------------------------------------------------------------

_DEFINE = re.compile(r"\b(?:flags|config_flags)\.DEFINE_(\w+)\(\s*(?:name\s*=\s*)?[\"'](\w+)[\"']")
_REQUIRED_LIST = re.compile(r"mark_flags_as_required\(\s*\[([^\]]*)\]")
_REQUIRED_ONE = re.compile(r"mark_flag_as_required\(\s*[\"'](\w+)[\"']")
# Module-level imports only: an import inside a function (e.g. the aligner a
# library loads on demand) does not run, and defines no flags, when the module loads.
_FROM_IMPORT = re.compile(r"^from\s+(facejax(?:\.\w+)*)\s+import\s+\(?([\w\s,]+)", re.M)
_IMPORT = re.compile(r"^import\s+(facejax(?:\.\w+)+)", re.M)


def _module_file(dotted: str) -> pathlib.Path | None:
  base = REPO.joinpath(*dotted.split("."))
  for candidate in (base.with_suffix(".py"), base / "__init__.py"):
    if candidate.is_file():
      return candidate
  return None


def _imported_files(path: pathlib.Path) -> list[pathlib.Path]:
  source = path.read_text()
  names = [m.group(1) for m in _IMPORT.finditer(source)]
  for m in _FROM_IMPORT.finditer(source):
    names.append(m.group(1))
    names += [f"{m.group(1)}.{n.strip().split()[0]}" for n in m.group(2).split(",") if n.strip()]
  files = []
  for name in names:
    parts = name.split(".")
    for k in range(1, len(parts) + 1):  # the package __init__ files run too
      f = _module_file(".".join(parts[:k]))
      if f is not None:
        files.append(f)
  return files


@dataclasses.dataclass(frozen=True)
class ModuleFlags:
  kinds: dict  # flag name -> DEFINE_ kind ("string", "bool", "config_file", ...)
  required: frozenset

  @property
  def config_flags(self) -> set[str]:
    return {n for n, k in self.kinds.items() if k.startswith("config")}


@functools.lru_cache(maxsize=None)
def module_flags(module: str) -> ModuleFlags:
  """absl flags of `python -m module`: DEFINE_* calls in its file and in the facejax files it
  imports, transitively (read from the source, so nothing heavy is imported)."""
  main_file = REPO / MODULES[module]
  todo = [main_file] + _imported_files(main_file)
  seen, kinds, required = set(), {}, set()
  while todo:
    path = todo.pop()
    if path in seen:
      continue
    seen.add(path)
    source = path.read_text()
    for m in _DEFINE.finditer(source):
      kinds.setdefault(m.group(2), m.group(1))
    for m in _REQUIRED_LIST.finditer(source):
      required.update(re.findall(r"[\"'](\w+)[\"']", m.group(1)))
    required.update(_REQUIRED_ONE.findall(source))
    todo += _imported_files(path)
  return ModuleFlags(kinds, frozenset(required))


def pending_flags_landed() -> bool:
  return any(f in module_flags("facejax.main").kinds for f in PENDING_MAIN_FLAGS)


# --- checking one command -----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _config_module(path: pathlib.Path):
  """`configs/<name>.py` (what `--config` names) as the package module `configs.<name>`."""
  return importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))


def _unresolved(value: str) -> bool:
  return "$" in value or re.search(r"\{\w+\}", value) is not None


def _suggest(word: str, options) -> str:
  close = difflib.get_close_matches(word, sorted(options), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


@dataclasses.dataclass
class CheckResult:
  errors: list[str]
  pending: list[str]  # announced main.py flags not defined yet
  config: ml_collections.ConfigDict | None = None  # after the overrides


def check_invocation(inv: Invocation) -> CheckResult:
  mf = module_flags(inv.module)
  errors, pending, given = [], [], set()
  config_value, overrides = None, []
  landed = pending_flags_landed()
  for token in inv.args:
    if not token.startswith("-") or token in ("-", "--"):
      if inv.module not in POSITIONAL:
        errors.append(f"{inv.where}: {inv.module} takes no positional argument, got {token!r}")
      continue
    name, has_value, value = token.lstrip("-").partition("=")
    root = name.split(".", 1)[0]
    if "." in name and root in mf.config_flags:
      overrides.append((name.split(".", 1)[1], token))
      continue
    if name in mf.kinds or name in ABSL_BUILTIN_FLAGS:
      given.add(name)
      if name in mf.config_flags:
        config_value = value if has_value else None
    elif name.startswith("no") and mf.kinds.get(name[2:]) in ("bool", "boolean"):
      given.add(name[2:])
    elif inv.module == "facejax.main" and name in PENDING_MAIN_FLAGS and not landed:
      pending.append(f"{inv.where}: --{name} (not in facejax/main.py yet)")
    else:
      errors.append(f"{inv.where}: {inv.module} has no flag --{name}"
                    f"{_suggest(name, list(mf.kinds) + list(PENDING_MAIN_FLAGS))}")
  if inv.executable:
    errors += [f"{inv.where}: {inv.module} needs --{f}" for f in sorted(mf.required - given)]
  config = None
  if mf.config_flags and (config_value is not None or overrides):
    if config_value is None:
      errors.append(f"{inv.where}: --config.* overrides without --config")
    else:
      config, config_errors = check_config(config_value, overrides, inv.where)
      errors += config_errors
  return CheckResult(errors, pending, config)


def check_config(value: str, overrides: list[tuple[str, str]], where: str):
  """(config after overrides or None, errors) for `--config=value` and `--config.key=...`."""
  if _unresolved(value):
    return None, [f"{where}: cannot resolve --config={value} (set the variable in the file)"]
  path, colon, variant = value.partition(":")
  config_file = REPO / path
  if not config_file.is_file():
    return None, [f"{where}: --config={value}: no file {path}"]
  try:
    module = _config_module(config_file)
    base = module.get_config(variant) if colon else module.get_config()
  except Exception as e:  # noqa: BLE001 -- the variant check is that get_config accepts it
    return None, [f"{where}: --config={value}: get_config({variant!r}) raised "
                  f"{type(e).__name__}: {e}"]
  errors = []
  for key, _ in overrides:
    node, walked = base, []
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        options = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        errors.append(f"{where}: {path} has no config key {'.'.join(walked + [part])!r}"
                      f"{_suggest(part, options)}")
        break
      node = node[part]
      walked.append(part)
  if errors:
    return None, errors
  # Parse the overrides exactly as the command line would (types, tuples, None fields).
  argv = ["prog", f"--config={config_file}{colon}{variant}"] + [t for _, t in overrides]
  fv = absl_flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  try:
    fv(argv)
  except Exception as e:  # noqa: BLE001
    return None, [f"{where}: {' '.join(t for _, t in overrides)}: {type(e).__name__}: {e}"]
  return fv.config, []


# --- SBATCH directives and gcloud/gsutil commands -----------------------------------------------

def check_sbatch(text: str, where: str) -> list[str]:
  errors, commands_started = [], False
  for number, line in enumerate(text.split("\n"), 1):
    if line.startswith("#SBATCH"):
      if commands_started:
        errors.append(f"{where}:{number}: #SBATCH after the first command is ignored by sbatch")
      tokens = shlex.split(line[len("#SBATCH"):], comments=True)
      if not tokens:
        errors.append(f"{where}:{number}: empty #SBATCH directive")
        continue
      option = tokens[0]
      if option.startswith("--"):
        name, has_value, _ = option[2:].partition("=")
        takes_value = SBATCH_LONG.get(name)
        known = name in SBATCH_LONG
        value_given = bool(has_value) or len(tokens) > 1
      elif re.fullmatch(r"-\w", option[:2]):
        name = option[1]
        takes_value = SBATCH_SHORT.get(name)
        known = name in SBATCH_SHORT
        value_given = len(option) > 2 or len(tokens) > 1
      else:
        errors.append(f"{where}:{number}: cannot read directive {line!r}")
        continue
      if not known:
        errors.append(f"{where}:{number}: unknown sbatch option {option!r}"
                      f"{_suggest(name, SBATCH_LONG)}")
      elif takes_value and not value_given:
        errors.append(f"{where}:{number}: sbatch option {option!r} needs a value")
    elif number > 1 and line.strip() and not line.lstrip().startswith("#"):
      commands_started = True
  return errors


def check_gcloud_argv(argv: list[str], where: str) -> list[str]:
  """argv starting with "gcloud" or "gsutil": known subcommand, known flags."""
  if argv[0] == "gsutil":
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
      i += 2 if argv[i] in GSUTIL_OPTIONS_WITH_VALUE else 1
    if i >= len(argv) or argv[i] not in GSUTIL_COMMANDS:
      got = argv[i] if i < len(argv) else None
      return [f"{where}: gsutil subcommand {got!r} is not one of {sorted(GSUTIL_COMMANDS)}"]
    return []
  words = []
  for token in argv[1:]:
    if token.startswith("-") or not re.fullmatch(r"[a-z][a-z0-9-]*", token):
      break
    words.append(token)
  command = next((" ".join(words[:k]) for k in range(len(words), 0, -1)
                  if " ".join(words[:k]) in GCLOUD_COMMANDS), None)
  if command is None:
    return [f"{where}: `gcloud {' '.join(words)}` is not an allowed command "
            f"(allowed: {sorted(GCLOUD_COMMANDS)})"]
  errors = []
  for token in argv[1:]:
    if token == "--":
      break
    if token.startswith("--"):
      name = token[2:].split("=", 1)[0]
      if name not in GCLOUD_COMMANDS[command] | GCLOUD_WIDE_FLAGS:
        errors.append(f"{where}: `gcloud {command}` has no flag --{name}"
                      f"{_suggest(name, GCLOUD_COMMANDS[command])}")
  return errors


def check_gcloud_text(text: str, where: str) -> list[str]:
  """gcloud/gsutil commands written in (expanded) shell text."""
  errors = []
  for number, line in logical_lines(text):
    if line.lstrip().startswith("#"):
      continue
    for m in re.finditer(r"(?:^|(?<=[\s;&|(`\"']))(gcloud|gsutil)\s", line):
      args_text, _ = _command_text(line[m.end():], _quote_state(line[:m.start()]))
      try:
        args = shlex.split(args_text)
      except ValueError as e:
        errors.append(f"{where}:{number}: cannot split {args_text!r}: {e}")
        continue
      errors += check_gcloud_argv([m.group(1)] + args, f"{where}:{number}")
  return errors


# --- the notebook -------------------------------------------------------------------------------

def notebook() -> dict:
  return json.loads(NOTEBOOK.read_text())


def cell_source(cell) -> str:
  source = cell["source"]
  return source if isinstance(source, str) else "".join(source)


def code_cells() -> list[tuple[int, str]]:
  return [(i, cell_source(c)) for i, c in enumerate(notebook()["cells"])
          if c["cell_type"] == "code"]


def as_python(source: str) -> str:
  """IPython cell -> plain Python: `!shell` and `%magic` lines (and their `\\` continuations)
  become `pass` at their indentation."""
  out, continued = [], False
  for line in source.split("\n"):
    stripped = line.lstrip()
    if continued or stripped.startswith(("!", "%")):
      indent = line[:len(line) - len(stripped)]
      out.append("" if continued else indent + "pass")
      continued = line.endswith("\\")
    else:
      out.append(line)
  return "\n".join(out)


def shell_lines(source: str) -> list[tuple[int, str]]:
  """(line number in the cell, command) of the `!` lines of a code cell."""
  return [(n, line.lstrip()[1:]) for n, line in logical_lines(source)
          if line.lstrip().startswith("!")]


def notebook_variables() -> dict[str, str]:
  return python_variables([as_python(s) for _, s in code_cells()])


# --- gathering every command ---------------------------------------------------------------------

def shell_file_invocations(path: pathlib.Path) -> tuple[list[Invocation], list[str]]:
  text = path.read_text()
  return find_invocations(expand_shell(text, shell_variables(text)), path.name, executable=True)


def notebook_invocations() -> tuple[list[Invocation], list[str]]:
  env = notebook_variables()
  invocations, errors = [], []
  for i, cell in enumerate(notebook()["cells"]):
    source = cell_source(cell)
    if cell["cell_type"] == "code":
      for number, command in shell_lines(source):
        found, errs = find_invocations(expand_ipython(command, env),
                                       f"{NOTEBOOK.name}[cell {i}]", executable=True,
                                       line_offset=number - 1)
        invocations += found
        errors += errs
    else:
      found, errs = find_invocations(source, f"{NOTEBOOK.name}[cell {i}]", executable=False)
      invocations += found
      errors += errs
  return invocations, errors


def all_invocations() -> tuple[list[Invocation], list[str]]:
  invocations, errors = [], []
  for found, errs in (notebook_invocations(), shell_file_invocations(TPU_VM),
                      shell_file_invocations(SLURM),
                      find_invocations(LAUNCH_README.read_text(), LAUNCH_README.name,
                                       executable=False),
                      *readme_invocations()):
    invocations += found
    errors += errs
  return invocations, errors


def readme_invocations() -> list[tuple[list[Invocation], list[str]]]:
  """The commands in README.md's and benchmarks/README.md's code blocks: each is meant to run
  as written (`$FACEJAX_DATA_DIR`-style paths aside), so required flags are checked too."""
  return [find_invocations(fenced_code(path.read_text()), str(path.relative_to(REPO)),
                           executable=True) for path in (README, BENCHMARKS_README)]


def check_text(text: str, *, where: str = "snippet") -> CheckResult:
  """Checks the facejax commands of a shell snippet (variables resolved from the snippet)."""
  found, errors = find_invocations(expand_shell(text, shell_variables(text)), where,
                                   executable=True)
  pending = []
  for inv in found:
    result = check_invocation(inv)
    errors += result.errors
    pending += result.pending
  return CheckResult(errors, pending)


# --- tests --------------------------------------------------------------------------------------

def test_launch_files_exist():
  for path in (NOTEBOOK, TPU_VM, SLURM, LAUNCH_README):
    assert path.is_file(), path
  assert os.access(TPU_VM, os.X_OK), f"{TPU_VM} should be executable (chmod +x)"


@pytest.mark.parametrize("path", [TPU_VM, SLURM], ids=lambda p: p.name)
def test_bash_syntax(path):
  run = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
  assert run.returncode == 0, run.stderr
  text = path.read_text()
  assert text.startswith("#!"), "missing #! line"
  assert "set -euo pipefail" in text


def test_notebook_shell_lines_bash_syntax(tmp_path):
  env = notebook_variables()
  lines = [expand_ipython(cmd, env) for _, src in code_cells() for _, cmd in shell_lines(src)]
  assert lines
  script = tmp_path / "notebook_shell.sh"
  script.write_text("\n".join(lines) + "\n")
  run = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
  assert run.returncode == 0, run.stderr


def test_notebook_is_valid_nbformat4():
  nb = notebook()
  assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int), nb.get("nbformat")
  assert set(nb) >= {"cells", "metadata", "nbformat", "nbformat_minor"}
  assert nb["metadata"]["kernelspec"]["language"] == "python"
  assert nb["metadata"].get("accelerator") == "TPU", "Colab should open it on a TPU runtime"
  ids = []
  for i, cell in enumerate(nb["cells"]):
    assert cell["cell_type"] in ("markdown", "code", "raw"), i
    assert isinstance(cell["metadata"], dict), i
    source = cell["source"]
    assert isinstance(source, str) or all(isinstance(s, str) for s in source), i
    if cell["cell_type"] == "code":
      assert isinstance(cell["outputs"], list) and "execution_count" in cell, i
    else:
      assert "outputs" not in cell, i
    if nb["nbformat_minor"] >= 5:
      assert re.fullmatch(r"[a-zA-Z0-9-_]{1,64}", cell["id"]), i
      ids.append(cell["id"])
  assert len(ids) == len(set(ids)), "cell ids must be unique"
  try:
    import nbformat  # noqa: PLC0415 -- optional
  except ImportError:
    return
  nbformat.validate(nbformat.reads(NOTEBOOK.read_text(), as_version=4))


def test_notebook_code_cells_compile():
  cells = code_cells()
  assert cells
  for i, source in cells:
    assert not source.startswith("%%"), f"cell {i}: cell magics are not checked"
    compile(as_python(source), f"{NOTEBOOK.name}[cell {i}]", "exec")


def test_notebook_covers_the_steps():
  text = "\n".join(s for _, s in code_cells())
  env = notebook_variables()
  for needle in ("jax.devices()", "pip install -q -e '.[tpu]'", "pip install -q -e '.[align]'",
                 "drive.mount(", "FACEJAX_DATA_DIR", "roc_fpr", "roc_tpr"):
    assert needle in text, needle
  for name in ("REPO_URL", "DATA_DIR", "WORKDIR", "CONFIG"):
    assert name in env, name
  # The kernel must not open the TPU that the !python subprocesses need.
  for i, source in code_cells():
    tree = ast.parse(as_python(source))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"jax", "facejax", "flax"}, f"cell {i} imports {imported}"


def test_each_script_runs_the_expected_modules():
  for (found, errors), expected in (
      (notebook_invocations(), {"facejax.main", "facejax.evaluation", "facejax.data.align"}),
      (shell_file_invocations(TPU_VM), {"facejax.main", "facejax.evaluation"}),
      (shell_file_invocations(SLURM), {"facejax.main"})):
    assert not errors, errors
    assert {inv.module for inv in found if inv.executable} == expected


def test_facejax_commands_use_real_flags_configs_and_keys():
  invocations, errors = all_invocations()
  assert len(invocations) >= 8, invocations
  pending = []
  for inv in invocations:
    result = check_invocation(inv)
    errors += result.errors
    pending += result.pending
  assert not errors, "\n".join(errors)
  if pending:
    pytest.xfail("multi-host flags used by the launch scripts are not in facejax/main.py yet:\n"
                 + "\n".join(pending))


def test_training_commands_pass_config_checks():
  """The training configs as launched pass facejax's start-up checks, including a global
  batch that the scripts' device counts divide."""
  from facejax import config_checks  # noqa: PLC0415 -- imports JAX

  seen = set()
  for inv in all_invocations()[0]:
    script = inv.where.split(":")[0].split("[")[0]
    if inv.module != "facejax.main" or not inv.executable or script not in DEVICE_COUNTS:
      continue
    key = (script, tuple(a for a in inv.args if a.startswith("--config")))
    if key in seen:
      continue
    seen.add(key)
    config = check_invocation(inv).config
    assert config is not None, inv
    devices = math.lcm(*DEVICE_COUNTS[script])
    config_checks.validate_config(config, devices)
  assert {k[0] for k in seen} == set(DEVICE_COUNTS)


def test_sbatch_directives():
  text = SLURM.read_text()
  assert not check_sbatch(text, SLURM.name)
  directives = {}
  for line in text.split("\n"):
    if line.startswith("#SBATCH --"):
      name, _, value = line[len("#SBATCH --"):].partition("=")
      directives[name.strip()] = value.strip()
  for required in ("nodes", "ntasks-per-node", "gpus-per-node", "time", "output"):
    assert required in directives, required
  # One process per GPU (JAX's SLURM detection binds process i to GPU SLURM_LOCALID), and each
  # task must see all GPUs of its node.
  assert directives["ntasks-per-node"] == directives["gpus-per-node"]
  assert "gpus-per-task" not in directives
  assert re.search(r"^srun .*\\\n\s*python -m facejax\.main", text, re.M), "srun launches main"


def fenced_code(markdown: str) -> str:
  """The lines inside ``` fences; the others blanked, so line numbers stay."""
  out, inside = [], False
  for line in markdown.split("\n"):
    if line.lstrip().startswith("```"):
      inside = not inside
      out.append("")
    else:
      out.append(line if inside else "")
  return "\n".join(out)


def test_gcloud_commands_in_text():
  tpu_vm = TPU_VM.read_text()
  for text, where in ((expand_shell(tpu_vm, shell_variables(tpu_vm)), TPU_VM.name),
                      (fenced_code(LAUNCH_README.read_text()), LAUNCH_README.name)):
    errors = check_gcloud_text(text, where)
    assert not errors, errors
  assert "gcloud compute tpus tpu-vm" in tpu_vm


def _stub_tools(tmp_path) -> tuple[dict, pathlib.Path]:
  """gcloud and gsutil stubs that log their argv (one JSON list per line) and succeed."""
  bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
  bin_dir.mkdir()
  for name in ("gcloud", "gsutil"):
    stub = bin_dir / name
    stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"with open(os.environ['STUB_LOG'], 'a') as f:\n"
                    f"  f.write(json.dumps([{name!r}] + sys.argv[1:]) + '\\n')\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
  settings = re.findall(r'^(\w+)="\$\{\1:-', TPU_VM.read_text(), re.M)
  env = {k: v for k, v in os.environ.items() if k not in settings}  # the script's defaults
  env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", STUB_LOG=str(log),
             RESULTS_DIR=str(tmp_path / "results"))
  return env, log


def _calls(log: pathlib.Path) -> list[list[str]]:
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_tpu_vm_usage():
  run = subprocess.run([str(TPU_VM), "--help"], capture_output=True, text=True)
  assert run.returncode == 0 and "copy_back" in run.stdout, run
  run = subprocess.run([str(TPU_VM), "no_such_step"], capture_output=True, text=True)
  assert run.returncode == 2 and not run.stdout and "copy_back" in run.stderr, run


def test_tpu_vm_dry_run_with_stub_gcloud(tmp_path):
  """`tpu_vm.sh all` with stub gcloud/gsutil: the commands it would run, fully expanded."""
  env, log = _stub_tools(tmp_path)
  run = subprocess.run([str(TPU_VM), "all"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
  assert run.returncode == 0, run.stderr
  calls = _calls(log)
  errors = [e for i, argv in enumerate(calls) for e in check_gcloud_argv(argv, f"call {i}")]
  assert not errors, errors
  steps = [" ".join(a for a in argv[1:5]) for argv in calls if argv[0] == "gcloud"]
  assert steps[0] == "compute tpus tpu-vm create" and steps[-1] == "compute tpus tpu-vm delete"
  remote = {}  # facejax module -> the ssh argv running it
  for i, argv in enumerate(calls):
    commands = [a.split("=", 1)[1] for a in argv if a.startswith("--command=")]
    for command in commands:
      script = tmp_path / f"remote_{i}.sh"
      script.write_text(command + "\n")
      bash = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
      assert bash.returncode == 0, (command, bash.stderr)
      found, errs = find_invocations(command, f"ssh call {i}", executable=True)
      assert not errs, errs
      pending = []
      for inv in found:
        result = check_invocation(inv)
        assert not result.errors, result.errors
        pending += result.pending
        remote[inv.module] = argv
  assert set(remote) == {"facejax.main", "facejax.evaluation"}
  assert "--worker=all" in remote["facejax.main"], "training must run on every worker"
  install = [argv for argv in calls if any("pip install" in a for a in argv)]
  assert install and "--worker=all" in install[0], "every worker needs the install"


def test_tpu_vm_copy_back_without_a_bucket(tmp_path):
  env, log = _stub_tools(tmp_path)
  env["WORKDIR"] = "/mnt/shared/facejax/run1"
  run = subprocess.run([str(TPU_VM), "copy_back"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
  assert run.returncode == 0, run.stderr
  calls = _calls(log)
  assert calls and all(argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
                       for argv in calls), calls
  assert "--recurse" in calls[0] and "facejax-tpu:/mnt/shared/facejax/run1/eval" in calls[0]


def test_notebook_roc_cells_plot_a_real_eval_json(tmp_path):
  """Runs the notebook's plotting cells on JSON written by LfwEvalResult.to_dict."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  from facejax.evaluation import lfw_eval, metrics  # noqa: PLC0415 -- imports JAX

  rng = np.random.default_rng(0)
  issame = np.repeat([True, False], 300)
  folds = np.tile(np.arange(10), 60)
  distances = np.clip(np.where(issame, rng.normal(0.8, 0.3, 600), rng.normal(1.5, 0.3, 600)),
                      0, 4)
  eval_dir = tmp_path / "eval"
  eval_dir.mkdir()
  for protocol, stem in (("view2", "lfw_2000"), ("view1", "lfw_view1_1000"),
                         ("view1", "lfw_view1_2000")):
    verification = metrics.evaluate_verification(distances, issame, folds=folds)
    result = lfw_eval.LfwEvalResult(
        protocol=protocol, step=int(stem.rsplit("_", 1)[1]), distance="euclidean", flip="none",
        subtract_mean=False, num_pairs=600, num_images=1200, verification=verification,
        json_path=None, roc_path=None)
    (eval_dir / f"{stem}.json").write_text(json.dumps(result.to_dict()))
  cells = [s for _, s in code_cells() if "roc_fpr" in s or "lfw_view1_" in s]
  assert len(cells) == 2
  namespace = {"WORKDIR": str(tmp_path), "CONFIG": notebook_variables()["CONFIG"]}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # plt.show() on Agg
    try:
      for source in cells:
        exec(compile(as_python(source), NOTEBOOK.name, "exec"), namespace)  # noqa: S102
    finally:
      plt.close("all")
  assert (eval_dir / "lfw_2000_roc_notebook.png").stat().st_size > 0
  assert namespace["step"] == 2000
  assert [s for s, _ in namespace["dev_test"]] == [1000, 2000]


# --- the checker catches mistakes ----------------------------------------------------------------

GOOD = """
CONFIG="${CONFIG:-configs/nn1.py:smoke}"
FLAGS="--config.model.dtype=bfloat16"
python -m facejax.main --config=$CONFIG --workdir=/tmp/w $FLAGS 2>&1 | tee log
python -m facejax.evaluation --config="${CONFIG}" --workdir=/tmp/w --protocol=view2 \\
    --nosubtract_mean --config.eval.batch_size=64
python -m facejax.data.align --input_dir=/d/lfw/lfw --output_dir=/d/out --mode=crop
"""


def test_checker_accepts_a_good_snippet():
  result = check_text(GOOD)
  assert not result.errors, result.errors


@pytest.mark.parametrize("snippet, expected", [
    ("python -m facejax.main --config=configs/nn1.py --wokrdir=/tmp/w",
     r"no flag --wokrdir \(did you mean 'workdir'\?\)"),
    ("python -m facejax.main --config=configs/nn1.py --workdir=/w --config.model.dtyp=bfloat16",
     r"has no config key 'model.dtyp' \(did you mean 'dtype'\?\)"),
    ("python -m facejax.main --config=configs/nn1.py --workdir=/w --config.optimiser.lr=1",
     r"has no config key 'optimiser'"),
    ("python -m facejax.main --config=configs/nn1.py:tiny --workdir=/w",
     r"get_config\('tiny'\) raised ValueError"),
    ("python -m facejax.main --config=configs/nn9.py --workdir=/w", r"no file configs/nn9.py"),
    ("python -m facejax.main --config=configs/nn1.py --workdir=/w --config.batch_size=big",
     r"config.batch_size=big"),
    ("python -m facejax.evaluation --config=configs/nn1.py", r"needs --workdir"),
    ("python -m facejax.main --config=configs/nn1.py --workdir=/w extra", r"positional"),
    ("python -m facejax.main --config=$UNSET --workdir=/w", r"cannot resolve --config"),
    ("python -m facejax.evaluation --config=configs/nn1.py --workdir=/w --protocl=view2",
     r"no flag --protocl"),
    ("python -m facejax.data.align --input_dir=/a --output_dir=/b --margn=32",
     r"no flag --margn"),
    ("python -m facejax.mian --config=configs/nn1.py", r"unknown module"),
    ("python -m facejax.main --config=configs/nn1.py --workdir=/w --distribute=auto",
     r"no flag --distribute"),
])
def test_checker_catches(snippet, expected):
  result = check_text(snippet)
  assert any(re.search(expected, e) for e in result.errors), result.errors


@pytest.mark.parametrize("landed", [False, True])
def test_checker_treats_announced_main_flags_as_pending_until_they_land(monkeypatch, landed):
  """Before the multi-host flags are in facejax/main.py their use is pending (not an error);
  after, they are ordinary flags. Both states are simulated from the real main.py flags."""
  real = module_flags("facejax.main")
  kinds = {k: v for k, v in real.kinds.items() if landed or k not in PENDING_MAIN_FLAGS}
  if landed:
    kinds.update({f: "string" for f in PENDING_MAIN_FLAGS if f not in kinds})
  main_flags = ModuleFlags(kinds, real.required)
  original = module_flags
  monkeypatch.setattr(sys.modules[__name__], "module_flags",
                      lambda m: main_flags if m == "facejax.main" else original(m))
  command = ("python -m facejax.main --config=configs/nn1.py --workdir=/w --distributed=auto "
             "--num_processes=2 --wokrdir=/x\n"
             "python -m facejax.evaluation --config=configs/nn1.py --workdir=/w --protocol=view2")
  result = check_text(command)
  assert len(result.errors) == 1 and "--wokrdir" in result.errors[0], result.errors
  assert len(result.pending) == (0 if landed else 2), result.pending


def test_checker_catches_bad_sbatch_and_gcloud():
  errors = check_sbatch("#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --gpus-per-nod=8\n"
                        "#SBATCH --time\necho hi\n#SBATCH --ntasks=2\n", "x.sbatch")
  assert any("unknown sbatch option '--gpus-per-nod=8'" in e for e in errors), errors
  assert any("'--time' needs a value" in e for e in errors), errors
  assert any("after the first command" in e for e in errors), errors
  errors = check_gcloud_text('gcloud compute tpus tpu-vm sshh "t" --zone=z\n'
                             'gcloud compute tpus tpu-vm ssh t --zone=z --workers=all\n'
                             "gsutil -m cpp gs://a b\n", "x.sh")
  assert len(errors) == 3, errors
  assert "not an allowed command" in errors[0] and "no flag --workers" in errors[1], errors
