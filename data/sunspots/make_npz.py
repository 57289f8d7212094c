"""Converts the statsmodels sunspot text files into sunspots.npz.

Run once from the repository root (the .npz is committed; this documents and
reproduces how it was made):

  python -m data.sunspots.make_npz --src_dir=SM/statsmodels/datasets/sunspots

`src_dir` is the `statsmodels/datasets/sunspots` folder of an unpacked
statsmodels source tree or wheel (SM above); it holds `sunspots.csv`
(yearly) and `src/sunspots_monthly.dat`.

The monthly file is a fixed-width table (one row per year, twelve monthly
means) whose header repeats every few decades and which ends with six
preliminary months of 2009. We keep the complete, final years 1749-2008 and
check that every year appears exactly once with twelve non-negative values.
The file has no missing-value marker: its footnote says February 1824 had no
observations and the value shown was interpolated from January and March;
we keep that interpolated value (see README.md).
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np

from data.sunspots import NPZ_PATH

FIRST_MONTHLY_YEAR = 1749
LAST_FINAL_YEAR = 2008  # The file marks later data as preliminary.


def read_monthly(path: str) -> np.ndarray:
  """Reads the monthly table into a flat (months,) array, Jan 1749 first."""
  rows = {}
  with open(path, encoding='ascii') as f:
    for line in f:
      tokens = line.split()
      # Data rows start with a 4-digit year; headers, rules and notes do not.
      if not tokens or not (tokens[0].isdigit() and len(tokens[0]) == 4):
        continue
      year = int(tokens[0])
      if year > LAST_FINAL_YEAR:
        continue
      if year in rows:
        raise ValueError(f'{path}: year {year} appears twice')
      values = [float(t) for t in tokens[1:]]
      if len(values) != 12:
        raise ValueError(f'{path}: year {year} has {len(values)} months')
      rows[year] = values
  years = sorted(rows)
  expected = list(range(FIRST_MONTHLY_YEAR, LAST_FINAL_YEAR + 1))
  if years != expected:
    raise ValueError(f'{path}: years {years[0]}..{years[-1]} are not the '
                     f'complete range {expected[0]}..{expected[-1]}')
  monthly = np.array([rows[y] for y in years], np.float64).ravel()
  if np.any(monthly < 0):
    raise ValueError(f'{path}: negative values (a missing-value marker?)')
  return monthly


def read_yearly(path: str) -> tuple[np.ndarray, int]:
  """Reads sunspots.csv (YEAR, SUNACTIVITY) into (values, first year)."""
  with open(path, encoding='ascii', newline='') as f:
    rows = list(csv.DictReader(f))
  years = [int(float(r['YEAR'])) for r in rows]
  if years != list(range(years[0], years[0] + len(years))):
    raise ValueError(f'{path}: years are not consecutive')
  values = np.array([float(r['SUNACTIVITY']) for r in rows], np.float64)
  if np.any(values < 0) or not np.all(np.isfinite(values)):
    raise ValueError(f'{path}: negative or non-finite values')
  return values, years[0]


def convert(src_dir: str, out_path: str = NPZ_PATH) -> None:
  """Reads both series and writes them as .npz.

  Args:
    src_dir: the statsmodels `datasets/sunspots` folder.
    out_path: the .npz to write.
  """
  monthly = read_monthly(os.path.join(src_dir, 'src', 'sunspots_monthly.dat'))
  yearly, yearly_start = read_yearly(os.path.join(src_dir, 'sunspots.csv'))
  arrays = {'monthly': monthly.astype(np.float32),
            'monthly_start': np.int32(FIRST_MONTHLY_YEAR),
            'yearly': yearly.astype(np.float32),
            'yearly_start': np.int32(yearly_start)}
  np.savez_compressed(out_path, **arrays)
  print(f'monthly: {len(monthly)} months from Jan {FIRST_MONTHLY_YEAR} to '
        f'Dec {LAST_FINAL_YEAR}; yearly: {len(yearly)} years from '
        f'{yearly_start}')
  print(f'wrote {out_path} ({os.path.getsize(out_path)} bytes)')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--src_dir', required=True,
                      help='statsmodels/datasets/sunspots folder')
  parser.add_argument('--out', default=NPZ_PATH, help='the .npz to write')
  args = parser.parse_args()
  convert(args.src_dir, args.out)


if __name__ == '__main__':
  main()
