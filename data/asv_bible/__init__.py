"""The American Standard Version Bible as a character-level corpus.

About 4.15M characters of public-domain English (vendored as asv.txt.xz; see
README.md here). The test split is the contiguous end of the text (the last
books of the New Testament).
"""

from __future__ import annotations

import functools
import lzma
import os

import numpy as np

from data import checks
from data import transforms
from data.dataset import Dataset

TEXT_PATH = os.path.join(os.path.dirname(__file__), 'asv.txt.xz')


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[str, np.ndarray]:
  """(vocab, ids) of the whole text; cached in memory for repeated loads."""
  with lzma.open(TEXT_PATH, 'rt', encoding='utf-8') as f:
    text = f.read()
  vocab = ''.join(sorted(set(text)))
  ids = transforms.encode(text, vocab)
  ids.flags.writeable = False  # Shared by every caller of the cache.
  return vocab, ids


def load(seq_len: int = 128, test_fraction: float = 0.05,
         max_test_sequences: int = 256, max_train_chars: int = 0) -> Dataset:
  """Loads the ASV Bible as next-character prediction windows.

  Args:
    seq_len: characters per example.
    test_fraction: the share of the text, at its end, used for testing.
    max_test_sequences: evaluate on this many evenly spaced test windows to
      keep evaluation fast (0 = all of them).
    max_train_chars: use only the first this many train characters (0 = all),
      for quick runs.

  Returns:
    A language_model Dataset: x, y int32 (N, seq_len) with y = x shifted by
    one character; info has 'vocab_size' and 'vocab' (the sorted characters
    of the whole text, index = id), so train and test ids agree.
  """
  seq_len = checks.integer(seq_len, 'seq_len', 1)
  test_fraction = checks.fraction(test_fraction, 'test_fraction')
  max_test_sequences = checks.integer(max_test_sequences, 'max_test_sequences')
  max_train_chars = checks.integer(max_train_chars, 'max_train_chars')
  vocab, ids = _corpus()
  train, test = transforms.lm_windows(ids, seq_len, test_fraction,
                                      max_test_sequences, max_train_chars)
  info = {'input_dim': len(vocab), 'max_len': seq_len,
          'vocab_size': len(vocab), 'vocab': vocab}
  return Dataset(name='asv_bible', task='language_model', train=train,
                 test=test, info=info)
