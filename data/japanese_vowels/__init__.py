"""The UEA JapaneseVowels speaker-classification dataset (shipped as .npz).

9 male speakers each uttered the vowels 'a' and 'e'; every utterance is a
sequence of 7 to 29 frames of 12 LPC cepstrum coefficients, and the task is to
name the speaker. 270 train and 370 test sequences; see README.md here.
"""

from __future__ import annotations

import os

import numpy as np

from data import checks
from data import transforms
from data.dataset import Dataset

NPZ_PATH = os.path.join(os.path.dirname(__file__), 'japanese_vowels.npz')
NUM_CLASSES = 9


def load(normalize: bool = True) -> Dataset:
  """Loads JapaneseVowels.

  Args:
    normalize: standardise each of the 12 channels with the train split's mean
      and std over valid (unpadded) steps; padding stays 0.

  Returns:
    A classification Dataset: x float32 (N, 29, 12) zero-padded, lengths
    int32 in [7, 29], y int32 speaker id in [0, 9).
  """
  normalize = checks.boolean(normalize, 'normalize')
  with np.load(NPZ_PATH, allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  x_tr, len_tr = arrays['x_train'], arrays['lengths_train']
  x_te, len_te = arrays['x_test'], arrays['lengths_test']
  if normalize:
    mean, std = transforms.channel_stats(x_tr, len_tr)
    x_tr = transforms.standardize(x_tr, len_tr, mean, std)
    x_te = transforms.standardize(x_te, len_te, mean, std)
  train = transforms.classification_split(x_tr, len_tr, arrays['y_train'])
  test = transforms.classification_split(x_te, len_te, arrays['y_test'])
  info = {'input_dim': int(x_tr.shape[2]), 'max_len': int(x_tr.shape[1]),
          'num_classes': NUM_CLASSES}
  return Dataset(name='japanese_vowels', task='classification', train=train,
                 test=test, info=info)
