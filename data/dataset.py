"""The `Dataset` record that every loader returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# The tasks a dataset can pose; models pick their head from this.
TASKS = ('classification', 'forecasting', 'language_model')

Split = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A loaded dataset: two splits of numpy arrays plus JSON-ready facts.

  Attributes:
    name: the registry name (`cfg.name`).
    task: one of `TASKS`.
    train: arrays 'x', 'y', 'lengths' with a shared first axis.
    test: the same keys as `train`.
    info: JSON-serialisable scalars and strings; always 'input_dim' and
      'max_len', plus the task's own keys (see `data.load`).
  """
  name: str
  task: str
  train: Split
  test: Split
  info: dict[str, Any]

  def __repr__(self) -> str:
    # The default repr would print every array.
    def shapes(split: Split) -> str:
      return ', '.join(f'{k}={v.dtype}{list(v.shape)}'
                       for k, v in split.items())
    return (f'Dataset(name={self.name!r}, task={self.task!r}, '
            f'train=({shapes(self.train)}), test=({shapes(self.test)}), '
            f'info={self.info!r})')
