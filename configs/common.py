"""Shared pieces of every recipe: the `:key=value` parser and the base config.

A recipe file defines `get_config(arg=None)`. The `arg` is the text after the
colon in `--config=configs/gru_qat.py:bits=4,smoke`; `parse_arg` turns it into
a typed ConfigDict using the recipe's declared defaults, so `bits=4` becomes
the int 4 and a bare `smoke` becomes True. An unknown key or a value of the
wrong type is one clear error line.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict

import compression
from compression import activations
from compression import distillation
from compression import early_exit
from compression import layers
from compression.errors import InputError
import data


def _convert(key: str, text: str, default: Any) -> Any:
  """Converts `text` to the type of `default`, or raises InputError."""
  kind = type(default)
  if kind is bool:
    lowered = text.lower()
    if lowered in ('', '1', 'true', 'yes', 'on'):
      return True
    if lowered in ('0', 'false', 'no', 'off'):
      return False
    raise InputError(f'config arg {key}: expected true/false, got {text!r}')
  if text == '':
    raise InputError(f'config arg {key}: needs a value ({key}=...)')
  try:
    if kind is int:
      return int(text)
    if kind is float:
      return float(text)
  except ValueError:
    raise InputError(
        f'config arg {key}: expected {kind.__name__}, got {text!r}') from None
  return text


def parse_arg(arg: str | None, lists: tuple[str, ...] = (),
              **defaults: Any) -> ml_collections.ConfigDict:
  """Parses a `key=value,flag,...` string against typed defaults.

  Args:
    arg: the text after the colon of `--config=file.py:arg`, or None.
    lists: string keys whose value is a comma-separated list: bare items
      after `key=first` that are not keys themselves continue it
      (`methods=prune,quantize,smoke` gives methods 'prune,quantize').
    **defaults: every accepted key with its default value; the default's type
      (bool, int, float, str) is the key's type.

  Returns:
    A ConfigDict with every key of `defaults`, overridden by `arg`.

  Raises:
    InputError: an unknown key or a value that does not fit the key's type.

  Example:
    >>> parse_arg('bits=4,smoke', bits=8, smoke=False).bits
    4
  """
  values = dict(defaults)
  current_list = None
  for item in (arg or '').split(','):
    item = item.strip()
    if not item:
      continue
    key, _, text = item.partition('=')
    key = key.strip()
    if current_list and '=' not in item and key not in defaults:
      values[current_list] += ',' + key
      continue
    current_list = key if key in lists and '=' in item else None
    if key not in defaults:
      valid = ', '.join(sorted(defaults)) or '(none)'
      raise InputError(f'config arg {key!r}: unknown; valid keys: {valid}')
    if '=' not in item and not isinstance(defaults[key], bool):
      raise InputError(f'config arg {key}: needs a value ({key}=...)')
    values[key] = _convert(key, text.strip(), defaults[key])
  return ml_collections.ConfigDict(values)


def base_config() -> ml_collections.ConfigDict:
  """The keys every recipe has, with defaults; recipes override a few fields.

  Returns:
    A ConfigDict declaring every key the training code reads.
  """
  c = ml_collections.ConfigDict()
  c.name = ''  # Recipe name; the default workdir is runs/<name>.
  c.arg = ''  # The `:key=value` string the recipe was built from.
  c.overrides = ''  # Filled by train.py: the --config.* flags of the run.
  c.seed = 0  # Seeds parameter init, dropout-free rng stream and batch order.
  # A workdir whose latest checkpoint's parameters start this run (fine-tuning
  # or post-training compression of a trained float model); '' = from scratch.
  c.init_from = ''
  # A recipe ('gru_baseline' or 'gru_baseline.py:smoke') that train.py runs
  # first when the init_from workdir holds no checkpoint yet; with init_from
  # empty it trains into <workdir>/init.
  c.init_config = ''
  # True for recipes that compress a trained run (compress.py): init_from (or
  # init_config) must then name it.
  c.needs_source = False

  c.data = ml_collections.ConfigDict()
  c.data.name = 'japanese_vowels'  # A name in data.DATASETS.
  # That dataset's keyword arguments: every keyword of every dataset is
  # declared (None = the dataset's own default), so any dataset can be chosen
  # and configured from the command line (`--config.data.name=file
  # --config.data.kwargs.path=X.ts`); `data.load` refuses a set keyword that
  # the named dataset does not take.
  c.data.kwargs = data_kwargs()
  c.data.batch_size = 32  # Global batch, split over all devices.
  c.data.eval_batch_size = 512  # Evaluation batch (padded, weighted).

  c.model = ml_collections.ConfigDict()
  c.model.cell = 'gru'  # rnn | lstm | gru.
  c.model.hidden = 64  # Hidden units per layer.
  c.model.layers = 1  # Stacked recurrent layers.
  c.model.pooling = 'last'  # Classification: last | mean | attention.
  c.model.embed_dim = 32  # Language model: character embedding width.
  # Compute dtype: float32 | bfloat16 | float16 (float16 trains with dynamic
  # loss scaling, optimizer.loss_scale); parameters stay float32.
  c.model.dtype = 'float32'
  c.model.unroll = 1  # Scan unroll factor.
  # jax.default_matmul_precision of the model's float32 products: default |
  # high | highest | bfloat16 | tensorfloat32 | float32 (GPU TF32 choice).
  c.model.matmul_precision = 'default'

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'  # adam | adamw | sgd.
  c.optimizer.learning_rate = 1e-2  # Peak learning rate.
  c.optimizer.schedule = 'cosine'  # constant | cosine | linear (after warmup).
  c.optimizer.warmup_steps = 20  # Linear warmup from 0 to the peak.
  c.optimizer.end_factor = 0.01  # Final rate as a fraction of the peak.
  c.optimizer.weight_decay = 0.0  # Decoupled decay (adamw only).
  c.optimizer.momentum = 0.9  # sgd only.
  c.optimizer.grad_clip_norm = 1.0  # Global-norm clipping; 0 disables.
  # model.dtype float16 only: the initial dynamic loss scale (> 0), halved
  # after a step whose gradients overflow (the step is skipped) and doubled
  # after `loss_scale_period` finite steps in a row.
  c.optimizer.loss_scale = 2.0**15
  c.optimizer.loss_scale_period = 200

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000  # Optimizer steps.
  c.train.log_every = 100  # Progress line and metrics.jsonl row.
  c.train.eval_every = 500  # Test evaluation during training; 0 = only at end.
  c.train.checkpoint_every = 500  # Checkpoint period; the end always saves.
  c.train.keep_checkpoints = 2  # Checkpoints kept on disk.

  # Knowledge distillation: a teacher recipe ('' = none) trained first into
  # `workdir` (default <workdir>/teacher) when that holds no checkpoint.
  c.teacher = ml_collections.ConfigDict()
  c.teacher.config = ''
  c.teacher.workdir = ''
  c.distill = distillation.config()

  # Early exit over time (compression/early_exit.py): a head on every step,
  # a loss over all steps, and a confidence threshold chosen on the training
  # split; off unless `enabled`.
  c.early_exit = early_exit.config()
  # Whole-layer removal from the trained init_from stack by first-order
  # sensitivity (compression/layers.py); off while `remove` is 0.
  c.layer_drop = layers.config()

  c.compression = ml_collections.ConfigDict()
  c.compression.methods = ''  # Comma-separated names from compression.METHODS.
  # Training batches whose mean loss `calibrate` minimizes before training
  # (post-training quantization); 0 = no calibration.
  c.compression.calibration_batches = 0
  c.compression.hidden_state = ml_collections.ConfigDict()
  c.compression.hidden_state.bits = 0  # Quantize h_t inside the scan; 0 = off.
  c.compression.hidden_state.cell_bits = 0  # LSTM cell state c_t; 0 = off.
  c.compression.hidden_state.cell_clip = 4.0  # c_t grid covers [-clip, clip].
  # Activations on the integer runtimes' grids (input, gates, c, h, the
  # head's input; `compression/activations.py`); bits 0 = off.
  c.compression.activations = activations.config()
  # One section per registered method with its documented defaults, so
  # `--config.compression.methods=prune,quantize` works on every recipe and
  # each option is a flag (`--config.compression.prune.sparsity=0.9`).
  for name in sorted(compression.METHODS):
    c.compression[name] = compression.default_section(name)
  return c


def data_kwargs() -> ml_collections.ConfigDict:
  """Every keyword of every dataset in `data.DATASETS`, each set to None.

  Each is a typed placeholder (the type of the dataset's default; str where
  that is None), so `--config.data.kwargs.window=24` parses as an int.
  """
  kinds: dict[str, type] = {}
  for name in sorted(data.DATASETS):
    for key, default in data.default_kwargs(name).items():
      kinds.setdefault(key, str if default is None else type(default))
  kw = ml_collections.ConfigDict()
  for key in sorted(kinds):
    kw[key] = config_dict.placeholder(kinds[key])
  return kw


def use_cell(c: ml_collections.ConfigDict, cell: str) -> None:
  """Sets `model.cell` and names the recipe after it (gru_qat -> lstm_qat).

  Args:
    c: the recipe's config (its `name` starting with 'gru').
    cell: 'rnn' | 'lstm' | 'gru'.

  Raises:
    InputError: an unknown cell.
  """
  cells = ('gru', 'lstm', 'rnn')
  if cell not in cells:
    raise InputError(f'config arg cell: unknown {cell!r}; valid: '
                     + ', '.join(cells))
  c.model.cell = cell
  if cell != 'gru' and c.name.startswith('gru'):
    c.name = cell + c.name[3:]


def finetune(c: ml_collections.ConfigDict, smoke: bool,
             learning_rate: float, warmup_steps: int = 0,
             steps: int = 200) -> None:
  """Makes `c` fine-tune the float `gru_baseline` (trained first into
  `<workdir>/init` when `init_from` names no run) for `steps` steps at
  `learning_rate`, evaluating and saving halfway and at the end."""
  c.init_config = 'gru_baseline.py:smoke' if smoke else 'gru_baseline'
  c.optimizer.learning_rate = learning_rate
  c.optimizer.warmup_steps = warmup_steps
  c.train.steps = steps
  c.train.eval_every = steps // 2
  c.train.checkpoint_every = steps // 2


def make_smoke(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config in place to a run of a few seconds (for tests)."""
  c.model.hidden = 8
  c.train.steps = 4
  c.train.log_every = 1
  c.train.eval_every = 2
  c.train.checkpoint_every = 2
  c.optimizer.warmup_steps = 1
  c.data.batch_size = min(c.data.batch_size, 16)


def baseline_point(seed: int, smoke: bool) -> dict:
  """The sweep point of the float GRU-64 baseline that a grid fine-tunes from.

  It runs in stage 0, so the grid's other points can name it in
  `init_from` ('{sweep_dir}/baseline_s<seed>').
  """
  return dict(name=f'baseline_s{seed}', group='baseline',
              method='float baseline', config='gru_baseline.py',
              arg='smoke' if smoke else '', overrides={'seed': seed}, stage=0)


def finetune_grid(arg: str | None, key: str, values: tuple, smoke_values: tuple,
                  tag: str, method: str) -> list[dict]:
  """A sweep grid: per seed the float baseline, then one fine-tuned point per
  value of the recipe arg `key`, each starting from that seed's baseline.

  Args:
    arg: the sweep's own arg: `smoke` (a tiny grid), `seeds=N` (default 3;
      1 under smoke).
    key: the recipe's `:key=value` arg that the grid varies.
    values: its values; `smoke_values` under smoke.
    smoke_values: the values of the smoke grid.
    tag: point names are `<tag><value>_s<seed>`, groups `<tag><value>`.
    method: the label of the points in tables and plots.

  Returns:
    The list of point dicts that sweep.py documents.
  """
  a = parse_arg(arg, smoke=False, seeds=0)
  smoke = ',smoke' if a.smoke else ''
  points = []
  for s in range(a.seeds or (1 if a.smoke else 3)):
    points.append(baseline_point(s, a.smoke))
    for v in (smoke_values if a.smoke else values):
      points.append(dict(
          name=f'{tag}{v}_s{s}', group=f'{tag}{v}', method=method,
          arg=f'{key}={v}' + smoke,
          overrides={'seed': s, 'init_from': f'{{sweep_dir}}/baseline_s{s}'}))
  return points
