"""Datasets as numpy arrays, and deterministic batching over them.

`load(cfg)` dispatches on `cfg.name` to a loader in `DATASETS`, called with
`cfg.kwargs` as keyword arguments, and returns a `Dataset`:

  ds = data.load(config.data)     # name='japanese_vowels', kwargs={...}
  batch = data.train_batch(ds.train, batch_size=32, seed=0, step=step)
  for batch in data.eval_batches(ds.test, batch_size=256): ...

Array conventions (numpy, first axis = examples):
  classification: x float32 (N, T, F), zero after each sequence's length;
    lengths int32 (N,); y int32 (N,) in [0, num_classes).
  forecasting: x float32 (N, W, F) standardised with the train statistics;
    lengths int32, all W; y float32 (N, horizon), standardised the same way.
  language_model: x int32 (N, T) character ids; y int32 (N, T), the next
    characters; lengths int32, all T.

`Dataset.info` always has 'input_dim' (features per step; the vocabulary size
for language models) and 'max_len'; classification adds 'num_classes';
forecasting adds 'horizon', 'mean', 'std' (to undo the standardisation) and
'naive_rmse' (last-value forecast on the test split, original units);
language models add 'vocab_size' and 'vocab' (the characters, index = id).

Real datasets ship inside the repository (see each folder's README.md); no
file is ever unpickled.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from compression.errors import InputError
from data import asv_bible
from data import japanese_vowels
from data import sunspots
from data import synthetic
from data import user_file
from data.batching import eval_batches
from data.batching import num_train_steps_per_epoch
from data.batching import train_batch
from data.dataset import Dataset
from data.dataset import TASKS

# name -> loader(**kwargs) -> Dataset.
DATASETS: dict[str, Callable[..., Dataset]] = {
    'asv_bible': asv_bible.load,
    'file': user_file.load,
    'japanese_vowels': japanese_vowels.load,
    'sunspots': sunspots.load,
    'synthetic_classification': synthetic.load_classification,
    'synthetic_forecast': synthetic.load_forecast,
    'synthetic_lm': synthetic.load_lm,
}


def _kwargs_dict(kwargs: Any) -> dict[str, Any]:
  """ConfigDict, mapping, plain object or None -> a plain dict."""
  if kwargs is None:
    return {}
  if hasattr(kwargs, 'to_dict'):  # ml_collections.ConfigDict
    return dict(kwargs.to_dict())
  if isinstance(kwargs, Mapping):
    return dict(kwargs)
  return {k: v for k, v in vars(kwargs).items() if not k.startswith('_')}


def default_kwargs(name: str) -> dict[str, Any]:
  """The keyword arguments a dataset accepts, with their defaults.

  Args:
    name: a key of `DATASETS`.

  Returns:
    {keyword: default}, e.g. to declare every key in a config.
  """
  params = inspect.signature(_loader(name)).parameters.values()
  return {p.name: p.default for p in params}


def _loader(name: Any) -> Callable[..., Dataset]:
  if name not in DATASETS:
    raise InputError(f'data.name: unknown dataset {name!r}; valid: '
                     f'{", ".join(sorted(DATASETS))}')
  return DATASETS[name]


def load(cfg: Any) -> Dataset:
  """Loads the dataset a config names.

  Args:
    cfg: an `ml_collections.ConfigDict` (or any object or mapping) with
      `name`, a key of `DATASETS`, and `kwargs`, that loader's keyword
      arguments (missing ones, and ones set to None, take their defaults).

  Returns:
    The Dataset, following the conventions in this module's docstring.

  Raises:
    InputError: an unknown dataset or keyword, a bad keyword value, or a bad
      data file; the message names the field or file.
  """
  if isinstance(cfg, Mapping):
    name, kwargs = cfg.get('name'), cfg.get('kwargs')
  else:
    name, kwargs = getattr(cfg, 'name', None), getattr(cfg, 'kwargs', None)
  loader = _loader(name)
  # None stands for the dataset's own default (configs declare every
  # dataset's keywords, unset ones as None).
  kwargs = {k: v for k, v in _kwargs_dict(kwargs).items() if v is not None}
  valid = default_kwargs(name)
  for key in kwargs:
    if key not in valid:
      raise InputError(f'data.kwargs.{key}: unknown keyword for dataset '
                       f'{name!r}; valid: {", ".join(valid)}')
  return loader(**kwargs)


__all__ = ['DATASETS', 'Dataset', 'InputError', 'TASKS', 'default_kwargs',
           'eval_batches', 'load', 'num_train_steps_per_epoch',
           'train_batch']
