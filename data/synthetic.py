"""Synthetic datasets of any size, generated from their keyword arguments.

They need no files, so tests and smoke runs can exercise every task in
milliseconds, and they are learnable, so a broken model or compression method
shows up as a loss that does not fall. Each is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np

from compression.errors import InputError
from data import checks
from data import transforms
from data.dataset import Dataset

# Words of the synthetic corpus; its vocabulary is fixed by this list so that
# every seed gives the same ids.
_SUBJECTS = ('the cat', 'the dog', 'a bird', 'my fox')
_VERBS = ('sat on', 'ran to', 'saw', 'ate')
_OBJECTS = ('the mat', 'a log', 'the hill', 'my hat')
LM_VOCAB = ''.join(sorted(set(' .\n' + ''.join(_SUBJECTS + _VERBS + _OBJECTS))))


def load_classification(num_train: int = 512, num_test: int = 256,
                        min_len: int = 8, max_len: int = 32,
                        features: int = 4, num_classes: int = 4,
                        seed: int = 0) -> Dataset:
  """Noisy sinusoids whose frequency is the class.

  Each sequence has a random length in [min_len, max_len] and Gaussian noise
  (std 0.5) on every channel; one random channel also carries a sine of
  random phase whose frequency, one of `num_classes` evenly spaced values in
  [0.05, 0.45] cycles per step, is the label.

  Args:
    num_train: train sequences.
    num_test: test sequences.
    min_len: shortest sequence.
    max_len: longest sequence (the padded length T).
    features: channels per step.
    num_classes: number of classes (frequencies).
    seed: generator seed.

  Returns:
    A classification Dataset with x float32 (N, max_len, features).
  """
  num_train = checks.integer(num_train, 'num_train', 1)
  num_test = checks.integer(num_test, 'num_test', 1)
  min_len = checks.integer(min_len, 'min_len', 1)
  max_len = checks.integer(max_len, 'max_len', 1)
  features = checks.integer(features, 'features', 1)
  num_classes = checks.integer(num_classes, 'num_classes', 2)
  seed = checks.integer(seed, 'seed')
  if max_len < min_len:
    raise InputError(f'data.kwargs.max_len: must be >= min_len ({min_len}), '
                     f'got {max_len}')
  freqs = np.linspace(0.05, 0.45, num_classes)

  def split(n: int, stream: int) -> dict[str, np.ndarray]:
    # Separate streams, so num_test does not change the train split.
    rng = np.random.default_rng((seed, stream))
    lengths = rng.integers(min_len, max_len + 1, n)
    y = rng.integers(0, num_classes, n)
    channel = rng.integers(0, features, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    x = 0.5 * rng.standard_normal((n, max_len, features))
    t = np.arange(max_len)
    x[np.arange(n), :, channel] += np.sin(
        2 * np.pi * freqs[y][:, None] * t + phase[:, None])
    x = transforms.zero_padding(x.astype(np.float32), lengths)
    return transforms.classification_split(x, lengths, y)

  info = {'input_dim': features, 'max_len': max_len,
          'num_classes': num_classes}
  return Dataset(name='synthetic_classification', task='classification',
                 train=split(num_train, 0), test=split(num_test, 1), info=info)


def load_forecast(length: int = 2000, window: int = 48, horizon: int = 6,
                  test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """A noisy sum of three sines (periods 12, 37 and 101 steps).

  Amplitudes and phases are drawn from the seed; Gaussian noise has std 0.1
  of the unit-amplitude scale. Examples are cut as for `sunspots`.

  Args:
    length: points in the series.
    window: input steps per example.
    horizon: steps to forecast.
    test_fraction: the share of the series, at its end, for the test targets.
    seed: generator seed.

  Returns:
    A forecasting Dataset with the same info keys as `sunspots`.
  """
  length = checks.integer(length, 'length', 2)
  window = checks.integer(window, 'window', 1)
  horizon = checks.integer(horizon, 'horizon', 1)
  test_fraction = checks.fraction(test_fraction, 'test_fraction')
  seed = checks.integer(seed, 'seed')
  rng = np.random.default_rng(seed)
  t = np.arange(length)[:, None]
  periods = np.array([12.0, 37.0, 101.0])
  amplitude = rng.uniform(0.5, 1.5, 3)
  phase = rng.uniform(0, 2 * np.pi, 3)
  series = (np.sin(2 * np.pi * t / periods + phase) @ amplitude
            + 0.1 * rng.standard_normal(length) + 2.0)
  train, test, info = transforms.forecast_windows(series, window, horizon,
                                                  test_fraction)
  return Dataset(name='synthetic_forecast', task='forecasting', train=train,
                 test=test, info=info)


def _sentences(rng: np.random.Generator, num_chars: int) -> str:
  """Random 'subject verb object.' sentences, at least num_chars long."""
  parts, total = [], 0
  while total < num_chars:
    # Draw in chunks; a Python loop per sentence would be slow for big corpora.
    picks = rng.integers(0, 4, (256, 3))
    for s, v, o in picks:
      sentence = f'{_SUBJECTS[s]} {_VERBS[v]} {_OBJECTS[o]}.'
      sentence += '\n' if s == o else ' '
      parts.append(sentence)
      total += len(sentence)
  return ''.join(parts)[:num_chars]


def load_lm(seq_len: int = 32, num_train: int = 256, num_test: int = 32,
            seed: int = 0) -> Dataset:
  """A corpus of random four-word sentences from a tiny grammar.

  Spelling within words, the word order and the spaces are deterministic
  given earlier characters, so a character model can get well below the
  uniform log(vocab_size) bits per character.

  Args:
    seq_len: characters per example.
    num_train: train examples.
    num_test: test examples (drawn from text after the train text).
    seed: generator seed.

  Returns:
    A language_model Dataset with the same conventions as `asv_bible`.
  """
  seq_len = checks.integer(seq_len, 'seq_len', 1)
  num_train = checks.integer(num_train, 'num_train', 1)
  num_test = checks.integer(num_test, 'num_test', 1)
  seed = checks.integer(seed, 'seed')
  rng = np.random.default_rng(seed)
  train_chars = num_train * seq_len + 1
  text = _sentences(rng, train_chars + num_test * seq_len + 1)
  ids = transforms.encode(text, LM_VOCAB)
  train = transforms.lm_examples(ids[:train_chars], seq_len, 'train')
  test = transforms.lm_examples(ids[train_chars:], seq_len, 'test')
  info = {'input_dim': len(LM_VOCAB), 'max_len': seq_len,
          'vocab_size': len(LM_VOCAB), 'vocab': LM_VOCAB}
  return Dataset(name='synthetic_lm', task='language_model', train=train,
                 test=test, info=info)
