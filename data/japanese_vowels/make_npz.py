"""Converts the UEA JapaneseVowels .ts files into japanese_vowels.npz.

Run once from the repository root (the .npz is committed; this documents and
reproduces how it was made):

  python -m data.japanese_vowels.make_npz --src_dir=/path/to/ts/files

`src_dir` must hold JapaneseVowels_TRAIN.ts and JapaneseVowels_TEST.ts, e.g.
from the aeon package (aeon/datasets/data/JapaneseVowels/) or
https://www.timeseriesclassification.com/description.php?Dataset=JapaneseVowels
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from data import transforms
from data import ts_format
from data.japanese_vowels import NPZ_PATH


def convert(src_dir: str, out_path: str = NPZ_PATH) -> None:
  """Parses both splits and writes them, padded to one length, as .npz.

  Args:
    src_dir: folder with JapaneseVowels_TRAIN.ts and JapaneseVowels_TEST.ts.
    out_path: the .npz to write.
  """
  splits = {s: ts_format.read_ts(
      os.path.join(src_dir, f'JapaneseVowels_{s.upper()}.ts'))
            for s in ('train', 'test')}
  # One time length for both splits, so a model sees the same shapes in
  # training and evaluation.
  max_len = max(d.x.shape[1] for d in splits.values())
  arrays = {}
  for s, d in splits.items():
    assert d.class_labels == tuple(str(i) for i in range(1, 10)), d.class_labels
    arrays[f'x_{s}'] = transforms.pad_time(d.x, max_len).astype(np.float32)
    arrays[f'lengths_{s}'] = d.lengths.astype(np.int32)
    arrays[f'y_{s}'] = d.y.astype(np.int32)
  np.savez_compressed(out_path, **arrays)
  for k, v in arrays.items():
    print(f'{k}: {v.dtype}{list(v.shape)}')
  print(f'wrote {out_path} ({os.path.getsize(out_path)} bytes)')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--src_dir', required=True,
                      help='folder with JapaneseVowels_{TRAIN,TEST}.ts')
  parser.add_argument('--out', default=NPZ_PATH, help='the .npz to write')
  args = parser.parse_args()
  convert(args.src_dir, args.out)


if __name__ == '__main__':
  main()
