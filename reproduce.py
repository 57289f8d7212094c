r"""Regenerates every table and plot of REPRODUCTION.md from fresh runs.

  python reproduce.py                  # runs all sweeps (resuming), then writes
  python reproduce.py --tables_only    # rewrites tables and plots from runs/
  python reproduce.py --smoke          # the whole pipeline on :smoke grids,
                                       # into /tmp/reproduction_smoke

Each item of REPRODUCTION.md is the `sweep()` grid of one recipe (see
sweep.py), run into `<root>/<item>` (default root runs/reproduction) on the
same Ray engine as sweep.py: an embedded local Ray running `--parallel`
points at once, or a cluster joined with `--ray_address` (one Ray session
for all grids; `--point_cpus`, `--point_gpus` and `--point_resources` as in
sweep.py). The float baselines of every grid
are the same runs (same recipe and seeds, so bit-identical parameters), so
they are trained once, in the first grid, and copied into the others before
those start. Then the tables are written into REPRODUCTION.md between the
markers `<!-- table:NAME -->` and `<!-- /table -->` (never by hand), and the
plots into docs/reproduction/. Rerunning after an interruption finishes the
unfinished points only.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import time
from typing import Sequence

from compression import files
import sweep as sweep_lib

ROOT = os.path.dirname(os.path.abspath(__file__))

# Item -> recipe whose sweep() is its grid, in run order. The first grid
# trains the shared baselines.
SWEEPS = {
    'prune': 'configs/gru_prune.py',
    'deep_compression': 'configs/deep_compression.py',
    'kmeans': 'configs/gru_kmeans.py',
    'svd': 'configs/gru_svd.py',
    'structured': 'configs/gru_structured.py',
    'ptq': 'configs/gru_ptq.py',
    'qat': 'configs/gru_qat.py',
    'kd': 'configs/gru_kd.py',
    'budget': 'configs/auto.py',
    'lm': 'configs/lm_compress.py',
}

# REPRODUCTION.md's parts, by the items they read.
PARTS = {
    'Part I (JapaneseVowels)': tuple(i for i in SWEEPS if i != 'lm'),
    'Part II (character language model)': ('lm',),
}

# Columns averaged over seeds for the tables.
SUMMARY_KEYS = (
    'value', 'compressed_bytes', 'dense_bytes', 'params_nonzero',
    'params_total', 'compression_ratio', 'fixed_width_bytes',
    'entropy_coded_bytes', 'scratch_test_accuracy', 'teacher_test_accuracy',
    'kept_hidden', 'shrunk_params_total', 'shrunk_dense_bytes',
    'train_seconds', 'steps', 'scratch_test_bits_per_char',
    'teacher_test_bits_per_char')

# "No loss": a mean test accuracy at most this many percentage points below
# the baseline's (one test example of 370 is 0.27 points).
TOLERANCE_POINTS = 0.5

_MARKER_RE = re.compile(r'(<!-- table:([a-z0-9_]+) -->\n)(.*?)(<!-- /table -->)',
                        re.DOTALL)


# ----------------------------------------------------------------------------
# Formatting


def _mean_std(s: dict | None, key: str, scale: float, digits: int) -> str:
  """`key`'s mean (± its std over seeds when there are several), times
  `scale`, to `digits` decimals; 'n/a' when missing."""
  if not s or key not in s:
    return 'n/a'
  text = f'{scale * s[key]:.{digits}f}'
  if s.get('n', 1) > 1:
    text += f' ± {scale * s.get(key + "_std", 0.0):.{digits}f}'
  return text


def _pct(s: dict | None, key: str = 'value') -> str:
  """'98.38 ± 0.27' (percent, mean ± std over seeds) or 'n/a'."""
  return _mean_std(s, key, 100.0, 2)


def _int(s: dict | None, key: str) -> str:
  if not s or key not in s or not math.isfinite(s[key]):
    return 'n/a'
  return f'{round(s[key]):,}'


def _ratio(s: dict | None, dense: float | None) -> str:
  if not s or not dense or not s.get('compressed_bytes'):
    return 'n/a'
  return f'{dense / s["compressed_bytes"]:.1f}x'


def markdown_table(header: Sequence[str],
                   rows: Sequence[Sequence[str]]) -> str:
  """A markdown table (README.md's and REPRODUCTION.md's generated tables)."""
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
  return '\n'.join(lines) + '\n'


def _n(s: dict | None) -> str:
  return str(s['n']) if s else '0'


# ----------------------------------------------------------------------------
# Tables (one function per marker; each gets {item: {group: summary}})

Summaries = dict[str, dict[str, dict]]


def table_zhu_gupta(S: Summaries) -> str:
  """Large-sparse GRU-64 against small-dense GRU-21."""
  g = S.get('prune', {})
  base = g.get('baseline')
  rows = [['GRU-64 dense (baseline)', '400', _int(base, 'params_nonzero'),
           _int(base, 'compressed_bytes'), _pct(base), _n(base)]]
  for sp in (0.5, 0.75, 0.9, 0.95):
    s = g.get(f'prune{sp}')
    rows.append([f'GRU-64, {100 * sp:g}% sparse, fine-tuned from baseline',
                 '400 + 400', _int(s, 'params_nonzero'),
                 _int(s, 'compressed_bytes'), _pct(s), _n(s)])
  s = g.get('scratch0.9')
  rows.append(['GRU-64, 90% sparse, pruned while training from scratch',
               '400', _int(s, 'params_nonzero'), _int(s, 'compressed_bytes'),
               _pct(s), _n(s)])
  for hidden, like in ((21, 90), (16, 95)):
    for steps in (400, 800):
      s = g.get(f'dense{hidden}_{steps}')
      rows.append([f'GRU-{hidden} dense (about the nonzeros of {like}% '
                   'sparse)', str(steps), _int(s, 'params_nonzero'),
                   _int(s, 'compressed_bytes'), _pct(s), _n(s)])
  out = markdown_table(['model', 'training steps', 'nonzero params',
                'compressed bytes', 'test accuracy (%)', 'seeds'], rows)
  sparse_ft, sparse_sc = g.get('prune0.9'), g.get('scratch0.9')
  small4, small8 = g.get('dense21_400'), g.get('dense21_800')
  if sparse_ft and sparse_sc and small4 and small8:
    out += (
        f'\nAt about 2.3k nonzeros and equal training steps: large-sparse '
        f'{_pct(sparse_sc)} vs small-dense {_pct(small4)} (400 steps); '
        f'large-sparse {_pct(sparse_ft)} vs small-dense {_pct(small8)} '
        f'(800 steps).')
  sparse95, small16 = g.get('prune0.95'), g.get('dense16_800')
  if sparse95 and small16:
    out += (f' At about 1.6k nonzeros (800 steps): large-sparse '
            f'{_pct(sparse95)} vs small-dense {_pct(small16)}.')
  if not out.endswith('\n'):
    out += '\n'
  return out


def table_deep_compression(S: Summaries) -> str:
  """Prune -> share -> Huffman, with the size after each stage."""
  g = S.get('deep_compression', {})
  base = g.get('baseline')
  dense = base.get('dense_bytes') if base else None
  rows = [['float baseline', _int(base, 'params_nonzero'),
           _int(base, 'fixed_width_bytes'), _int(base, 'entropy_coded_bytes'),
           _int(base, 'compressed_bytes'), _ratio(base, dense), _pct(base),
           _n(base)]]
  for sp in (0.8, 0.92):
    stages = [(f'prune{sp}', f'pruned to {100 * sp:g}%')]
    for k in (16, 4):
      stages.append((f'prune{sp}_share{k}',
                     f'pruned {100 * sp:g}% + {k} shared values + Huffman'))
    for group, label in stages:
      s = g.get(group)
      rows.append([label, _int(s, 'params_nonzero'),
                   _int(s, 'fixed_width_bytes'),
                   _int(s, 'entropy_coded_bytes'),
                   _int(s, 'compressed_bytes'), _ratio(s, dense), _pct(s),
                   _n(s)])
  return markdown_table(['model', 'nonzero params', 'payload bytes (fixed width)',
                 'payload bytes (Huffman)', 'artifact bytes',
                 'ratio (float32 / artifact)', 'test accuracy (%)', 'seeds'],
                rows)


def table_kmeans(S: Summaries) -> str:
  """Weight sharing alone, by codebook size."""
  g = S.get('kmeans', {})
  base = g.get('baseline')
  dense = base.get('dense_bytes') if base else None
  rows = [['float baseline', '32', _int(base, 'compressed_bytes'),
           _ratio(base, dense), _pct(base), _n(base)]]
  for k in (2, 4, 8, 16, 32):
    s = g.get(f'kmeans{k}')
    rows.append([f'{k} shared values per kernel', str(int(math.log2(k))),
                 _int(s, 'compressed_bytes'), _ratio(s, dense), _pct(s),
                 _n(s)])
  return markdown_table(['model', 'bits per kernel weight', 'artifact bytes',
                 'ratio', 'test accuracy (%)', 'seeds'], rows)


def table_hinton(S: Summaries, rows_by_item: dict[str, list[dict]]) -> str:
  """Distilled GRU-16 against the same GRU-16 from scratch, per seed."""
  num = sweep_lib._is_number  # pylint: disable=protected-access
  runs = [r for r in rows_by_item.get('kd', [])
          if r.get('group') == 'student' and r.get('status') == 'done'
          and num(r.get('scratch_test_accuracy'))
          and num(r.get('teacher_test_accuracy'))]
  rows = []
  for r in sorted(runs, key=lambda r: str(r['name'])):
    rows.append([str(r['name']).rsplit('_s', 1)[-1],
                 f'{100 * r["teacher_test_accuracy"]:.2f}',
                 f'{100 * r["value"]:.2f}',
                 f'{100 * r["scratch_test_accuracy"]:.2f}',
                 f'{100 * (r["value"] - r["scratch_test_accuracy"]):+.2f}'])
  s = S.get('kd', {}).get('student')
  if s and runs:
    gain = [r['value'] - r['scratch_test_accuracy'] for r in runs]
    rows.append(['mean', _pct(s, 'teacher_test_accuracy'), _pct(s),
                 _pct(s, 'scratch_test_accuracy'),
                 f'{100 * sum(gain) / len(gain):+.2f}'])
  teacher = S.get('kd', {}).get('teacher')
  out = markdown_table(['seed', 'teacher GRU-128 (%)', 'distilled GRU-16 (%)',
                'GRU-16 from scratch (%)', 'distilled - scratch (points)'],
               rows)
  if teacher and s:
    out += (f'\nSizes: teacher {_int(teacher, "compressed_bytes")} bytes, '
            f'student {_int(s, "compressed_bytes")} bytes (artifact).\n')
  return out


def _no_loss(base: dict | None, candidates: list[tuple[str, dict]]
             ) -> tuple[str, dict] | None:
  """The smallest candidate whose mean accuracy is within the tolerance."""
  if not base:
    return None
  ok = [(label, s) for label, s in candidates
        if s and 100 * (base['value'] - s['value']) <= TOLERANCE_POINTS]
  return min(ok, key=lambda x: x[1]['compressed_bytes']) if ok else None


def table_prabhavalkar(S: Summaries) -> str:
  """SVD rank against accuracy and size."""
  g = S.get('svd', {})
  base = g.get('baseline')
  dense = base.get('dense_bytes') if base else None
  rows = [['64 (float baseline)', _int(base, 'params_total'),
           _int(base, 'compressed_bytes'), _ratio(base, dense), _pct(base),
           _n(base)]]
  cands = []
  for rank in (32, 16, 8, 4, 2, 1):
    s = g.get(f'rank{rank}')
    cands.append((f'rank {rank}', s))
    rows.append([str(rank), _int(s, 'params_total'),
                 _int(s, 'compressed_bytes'), _ratio(s, dense), _pct(s),
                 _n(s)])
  out = markdown_table(['recurrent-kernel rank', 'params', 'artifact bytes', 'ratio',
                'test accuracy (%)', 'seeds'], rows)
  best = _no_loss(base, cands)
  if best:
    out += (f'\nSmallest within {TOLERANCE_POINTS} points of the baseline: '
            f'{best[0]}, {_int(best[1], "compressed_bytes")} bytes '
            f'({_ratio(best[1], dense)} smaller than float32).\n')
  return out


def table_wen_iss(S: Summaries) -> str:
  """Hidden units removed by unit pruning with group lasso."""
  g = S.get('structured', {})
  base = g.get('baseline')
  dense = base.get('dense_bytes') if base else None
  rows = [['0 (float baseline)', '64', _int(base, 'params_total'),
           _int(base, 'compressed_bytes'), _ratio(base, dense), _pct(base),
           _n(base)]]
  cands = []
  for units in (0.25, 0.5, 0.75, 0.875):
    s = g.get(f'units{units}')
    cands.append((f'{100 * units:g}% of units removed', s))
    kept = f'{s["kept_hidden"]:.1f}'.rstrip('0').rstrip('.') if s and (
        'kept_hidden' in s) else 'n/a'
    rows.append([f'{100 * units:g}%', kept, _int(s, 'shrunk_params_total'),
                 _int(s, 'compressed_bytes'), _ratio(s, dense), _pct(s),
                 _n(s)])
  out = markdown_table(['hidden units removed', 'hidden units kept',
                'params of the shrunk GRU', 'artifact bytes', 'ratio',
                'test accuracy (%)', 'seeds'], rows)
  best = _no_loss(base, cands)
  if best:
    out += (f'\nMost removed within {TOLERANCE_POINTS} points of the '
            f'baseline: {best[0]} ({_ratio(best[1], dense)} smaller).\n')
  return out


def table_quant_bits(S: Summaries) -> str:
  """PTQ against QAT by bit width."""
  p, q = S.get('ptq', {}), S.get('qat', {})
  base = p.get('baseline') or q.get('baseline')
  dense = base.get('dense_bytes') if base else None
  rows = [['32 (float)', _pct(base), _pct(base), _int(base, 'compressed_bytes'),
           _ratio(base, dense)]]
  for bits in (8, 6, 4, 3, 2):
    sp, sq = p.get(f'ptq{bits}'), q.get(f'qat{bits}')
    rows.append([str(bits), _pct(sp), _pct(sq), _int(sq or sp,
                                                     'compressed_bytes'),
                 _ratio(sq or sp, dense)])
  return markdown_table(['weight bits', 'PTQ test accuracy (%)',
                 'QAT test accuracy (%)', 'artifact bytes (QAT)', 'ratio'],
                rows)


# ----------------------------------------------------------------------------
# Part II: the character language models (item 'lm', configs/lm_compress.py)

# The two float LMs of about equal recurrent weights (configs/gru_lm.py).
LM_CELLS = (('gru', 'GRU-128'), ('lstm', 'LSTM-110'))

# "No loss" on the LM: mean held-out bits per character at most this much
# above the float LM's (about 1% of it).
LM_TOLERANCE_BPC = 0.02


def _bpc(s: dict | None, key: str = 'value') -> str:
  """'2.077 ± 0.004' (held-out bits per character, mean ± std) or 'n/a'."""
  return _mean_std(s, key, 1.0, 3)


def _ppl(s: dict | None, key: str = 'value') -> str:
  """Perplexity per character, 2 ** (mean bits per character)."""
  return f'{2 ** s[key]:.3f}' if s and key in s else 'n/a'


def _lm(S: Summaries, cell: str) -> dict[str, dict]:
  """The LM grid's summaries of one cell, keyed without the cell prefix."""
  return {k[len(cell) + 1:]: v for k, v in S.get('lm', {}).items()
          if k.startswith(cell + '_')}


def _lm_rows(S: Summaries, specs, columns) -> list[list[str]]:
  """Rows `[cell name, label, *columns(summary, float summary)]` per cell."""
  rows = []
  for cell, name in LM_CELLS:
    g = _lm(S, cell)
    base = g.get('float')
    for group, label in specs:
      rows.append([name, label] + columns(g.get(group), base))
  return rows


def table_lm_models(S: Summaries) -> str:
  """The two float LMs."""
  rows = []
  for cell, name in LM_CELLS:
    s = _lm(S, cell).get('float')
    rows.append([name, _int(s, 'params_total'), _int(s, 'dense_bytes'),
                 _bpc(s), _ppl(s), _n(s)])
  return markdown_table(['float LM', 'params', 'float32 bytes',
                         'held-out bits/char', 'perplexity per char',
                         'seeds'], rows)


def _bpc_columns(count: str):
  """Row columns: the parameter count `count`, file bytes, ratio to the
  float LM's float32 size, bits/char, perplexity, seeds."""
  def columns(s: dict | None, base: dict | None) -> list[str]:
    dense = base.get('dense_bytes') if base else None
    return [_int(s, count), _int(s, 'compressed_bytes'), _ratio(s, dense),
            _bpc(s), _ppl(s), _n(s)]
  return columns


_BPC_HEADER = ['artifact bytes', 'ratio', 'held-out bits/char',
               'perplexity per char', 'seeds']


def table_lm_zhu_gupta(S: Summaries) -> str:
  """Pruned LMs against dense LMs of about their nonzeros."""
  specs = [('float', 'dense, float (the start)')]
  specs += [(f'prune{sp}', f'{100 * sp:g}% sparse, fine-tuned')
            for sp in (0.5, 0.8, 0.9, 0.95)]
  specs += [(f'dense{sp}', f'small dense, about the nonzeros of '
             f'{100 * sp:g}% sparse') for sp in (0.8, 0.9)]
  out = markdown_table(['cell', 'model', 'nonzero params'] + _BPC_HEADER,
                       _lm_rows(S, specs, _bpc_columns('params_nonzero')))
  for cell, name in LM_CELLS:
    g = _lm(S, cell)
    for sp in (0.8, 0.9):
      big, small = g.get(f'prune{sp}'), g.get(f'dense{sp}')
      if big and small:
        out += (f'\n{name}, {100 * sp:g}%: large-sparse {_bpc(big)} '
                f'({_int(big, "params_nonzero")} nonzero) vs small-dense '
                f'{_bpc(small)} ({_int(small, "params_nonzero")}).')
  return out + '\n'


def table_lm_deep_compression(S: Summaries) -> str:
  """Weight sharing alone, and Deep Compression's stages."""
  specs = [('float', 'float'), ('kmeans16', '16 shared values per matrix'),
           ('deep_prune0.9', '90% pruned, one global threshold'),
           ('deep', '90% pruned + 16 shared values + Huffman')]

  def cols(s, base):
    dense = base.get('dense_bytes') if base else None
    return [_int(s, 'params_nonzero'), _int(s, 'fixed_width_bytes'),
            _int(s, 'entropy_coded_bytes'), _int(s, 'compressed_bytes'),
            _ratio(s, dense), _bpc(s), _n(s)]
  return markdown_table(['cell', 'model', 'nonzero params',
                         'payload bytes (fixed width)',
                         'payload bytes (Huffman)', 'artifact bytes',
                         'ratio', 'held-out bits/char', 'seeds'],
                        _lm_rows(S, specs, cols))


def table_lm_hinton(S: Summaries, rows_by_item: dict[str, list[dict]]) -> str:
  """Distilled student LMs against the same students from scratch."""
  num = sweep_lib._is_number  # pylint: disable=protected-access
  rows = []
  for cell, name in LM_CELLS:
    runs = sorted((r for r in rows_by_item.get('lm', [])
                   if r.get('group') == f'{cell}_kd'
                   and r.get('status') == 'done'
                   and num(r.get('scratch_test_bits_per_char'))),
                  key=lambda r: str(r['name']))
    for r in runs:
      rows.append([name, str(r['name']).rsplit('_s', 1)[-1],
                   _int(r, 'params_total'),
                   f'{r["teacher_test_bits_per_char"]:.3f}',
                   f'{r["value"]:.3f}',
                   f'{r["scratch_test_bits_per_char"]:.3f}',
                   f'{r["value"] - r["scratch_test_bits_per_char"]:+.3f}'])
    s = _lm(S, cell).get('kd')
    if s and runs:
      rows.append([name, 'mean', _int(s, 'params_total'),
                   _bpc(s, 'teacher_test_bits_per_char'), _bpc(s),
                   _bpc(s, 'scratch_test_bits_per_char'),
                   f'{s["value"] - s["scratch_test_bits_per_char"]:+.3f}'])
  return markdown_table(['teacher', 'seed', 'student params',
                         'teacher bits/char', 'distilled student bits/char',
                         'student from scratch bits/char',
                         'distilled - scratch'], rows)


def table_lm_kd_search(rows_by_item: dict[str, list[dict]]) -> str:
  """The distillation settings tried on seed 0 of the GRU, and the chosen."""
  from configs import lm_compress  # pylint: disable=g-import-not-at-top
  num = sweep_lib._is_number  # pylint: disable=protected-access
  done = {r['group']: r for r in rows_by_item.get('lm', [])
          if r.get('status') == 'done' and str(r.get('name')).endswith('_s0')}
  chosen = done.get('gru_kd')
  rows = []
  for key, setting in [('chosen', 'temperature=1,alpha=0.5,feature=1')] + list(
                            lm_compress.KD_SEARCH.items()):
    r = chosen if key == 'chosen' else done.get(f'gru_kdsearch_{key}')
    # A run without its own twin is compared with the chosen run's twin,
    # which has the same student, seed, steps and batches.
    twin = r.get('scratch_test_bits_per_char') if r else None
    if r and not num(twin) and chosen:
      twin = chosen.get('scratch_test_bits_per_char')
    ok = r and num(twin)
    rows.append([f'`{setting}`' + (' (chosen: the rows above, seed 0)'
                                   if key == 'chosen' else ''),
                 str(r['steps']) if r else 'n/a',
                 f'{r["value"]:.3f}' if r else 'n/a',
                 f'{twin:.3f}' if ok else 'n/a',
                 f'{r["value"] - twin:+.3f}' if ok else 'n/a'])
  return markdown_table(['setting (`method=kd,...`)', 'student steps',
                         'distilled GRU-48 bits/char',
                         'scratch twin bits/char', 'distilled - scratch'],
                        rows)


def _lm_no_loss(base: dict | None, cands: list[tuple[str, dict | None]]
                ) -> tuple[str, dict] | None:
  """The smallest candidate within LM_TOLERANCE_BPC of the float LM."""
  if not base:
    return None
  ok = [(label, s) for label, s in cands
        if s and s['value'] - base['value'] <= LM_TOLERANCE_BPC]
  return min(ok, key=lambda x: x[1]['compressed_bytes']) if ok else None


def table_lm_prabhavalkar(S: Summaries) -> str:
  """SVD rank of the recurrent kernel."""
  ranks = (64, 32, 16)
  specs = [('float', 'full rank (float)')] + [(f'svd{r}', f'rank {r}')
                                               for r in ranks]
  out = markdown_table(['cell', 'recurrent kernel', 'params'] + _BPC_HEADER,
                       _lm_rows(S, specs, _bpc_columns('params_total')))
  for cell, name in LM_CELLS:
    g = _lm(S, cell)
    best = _lm_no_loss(g.get('float'), [(f'rank {r}', g.get(f'svd{r}'))
                                        for r in ranks])
    if g.get('float'):
      out += (f'\n{name}: smallest within {LM_TOLERANCE_BPC} bits/char of '
              'the float LM: ' + (f'{best[0]} ({_ratio(best[1], g["float"]["dense_bytes"])} smaller).'
                                  if best else 'none.'))
  return out + '\n'


def table_lm_wen_iss(S: Summaries) -> str:
  """Hidden units removed by ISS, the LM rebuilt without them."""
  specs = [('float', 'none (float)')] + [
      (f'units{u}', f'{100 * u:g}%') for u in (0.25, 0.5)]

  def cols(s, base):
    dense = base.get('dense_bytes') if base else None
    kept = (f'{s["kept_hidden"]:.1f}'.rstrip('0').rstrip('.')
            if s and 'kept_hidden' in s else 'all' if s is base and s
            else 'n/a')
    return [kept, _int(s, 'params_total' if s is base else
                       'shrunk_params_total'),
            _int(s, 'compressed_bytes'), _ratio(s, dense), _bpc(s), _n(s)]
  return markdown_table(['cell', 'hidden units removed', 'units kept',
                         'params of the shrunk LM', 'artifact bytes',
                         'ratio', 'held-out bits/char', 'seeds'],
                        _lm_rows(S, specs, cols))


def table_lm_quant_bits(S: Summaries) -> str:
  """PTQ against QAT of every matrix, by bit width."""
  rows = []
  for cell, name in LM_CELLS:
    g = _lm(S, cell)
    base = g.get('float')
    dense = base.get('dense_bytes') if base else None
    rows.append([name, '32 (float)', _bpc(base), _bpc(base),
                 _int(base, 'compressed_bytes'), _ratio(base, dense)])
    for bits in (8, 4, 3, 2):
      sp, sq = g.get(f'ptq{bits}'), g.get(f'qat{bits}')
      rows.append([name, str(bits), _bpc(sp), _bpc(sq),
                   _int(sq or sp, 'compressed_bytes'),
                   _ratio(sq or sp, dense)])
  return markdown_table(['cell', 'weight bits', 'PTQ bits/char',
                         'QAT bits/char', 'artifact bytes (QAT)', 'ratio'],
                        rows)


def _claims(S: Summaries) -> list[tuple[str, object, object, object]]:
  """Each claim with its verdict on JapaneseVowels and on each LM.

  A verdict is (holds: bool, the numbers it rests on: str), or None when a
  run is missing.
  """
  def pct(s):
    return f'{100 * s["value"]:.2f}%'

  def bpc(s):
    return f'{s["value"]:.3f}'

  def jv(item, a, b=None):
    g = S.get(item, {})
    return g.get(a), (g.get(b) if b else g.get('baseline'))

  def lm(cell, a, b='float'):
    g = _lm(S, cell)
    return g.get(a), g.get(b)

  def better(pair, fmt, higher):
    x, y = pair
    if not (x and y):
      return None
    ok = x['value'] > y['value'] if higher else x['value'] < y['value']
    return ok, f'{fmt(x)} vs {fmt(y)}'

  def no_loss(pair, fmt, tol, higher):
    x, base = pair
    if not (x and base):
      return None
    loss = (base['value'] - x['value']) if higher else (x['value']
                                                         - base['value'])
    return loss <= tol, f'{fmt(x)} vs {fmt(base)}'

  def kd(s, scratch_key, fmt, higher):
    """The student against its scratch twin (a column of the same row)."""
    twin = {'value': s[scratch_key]} if s and scratch_key in s else None
    return better((s, twin), fmt, higher)

  def third(g, base_key, prefix, ranks, fmt, tol, higher):
    """The largest rank whose file is at most a third of the float32 size:
    does it stay within the tolerance?"""
    base = g.get(base_key)
    if not base:
      return None
    small = [(r, g[f'{prefix}{r}']) for r in ranks if f'{prefix}{r}' in g]
    small = [(r, s) for r, s in small
             if 3 * s['compressed_bytes'] <= base['dense_bytes']]
    if not small:
      return None
    r, s = max(small, key=lambda rs: rs[0])
    res = no_loss((s, base), fmt, tol, higher)
    return res[0], f'rank {r}: ' + res[1]

  jv_tol, lm_tol = TOLERANCE_POINTS / 100, LM_TOLERANCE_BPC
  out = []
  for claim, on_jv, on_lm in (
      ('Large-sparse beats small-dense at about equal nonzeros (90% '
       'sparse, equal training steps)',
       better(jv('prune', 'prune0.9', 'dense21_800'), pct, True),
       lambda c: better(lm(c, 'prune0.9', 'dense0.9'), bpc, False)),
      ('Pruning to 90% costs no more than the tolerance',
       no_loss(jv('prune', 'prune0.9'), pct, jv_tol, True),
       lambda c: no_loss(lm(c, 'prune0.9'), bpc, lm_tol, False)),
      ('Deep Compression (pruned + shared values + Huffman) costs no more '
       'than the tolerance',
       no_loss(jv('deep_compression', 'prune0.92_share16'), pct, jv_tol,
               True),
       lambda c: no_loss(lm(c, 'deep'), bpc, lm_tol, False)),
      ('A distilled student beats its scratch twin (mean of seeds)',
       kd(S.get('kd', {}).get('student'), 'scratch_test_accuracy', pct,
          True),
       lambda c: kd(_lm(S, c).get('kd'), 'scratch_test_bits_per_char', bpc,
                    False)),
      ('SVD to a third of the float size costs no more than the tolerance',
       third(S.get('svd', {}), 'baseline', 'rank', (32, 16, 8, 4, 2, 1), pct,
             jv_tol, True),
       lambda c: third(_lm(S, c), 'float', 'svd', (64, 32, 16), bpc, lm_tol,
                       False)),
      ('Removing half of the hidden units (ISS) costs no more than the '
       'tolerance',
       no_loss(jv('structured', 'units0.5'), pct, jv_tol, True),
       lambda c: no_loss(lm(c, 'units0.5'), bpc, lm_tol, False)),
      ('4-bit PTQ costs no more than the tolerance',
       no_loss(jv('ptq', 'ptq4'), pct, jv_tol, True),
       lambda c: no_loss(lm(c, 'ptq4'), bpc, lm_tol, False)),
      ('QAT beats PTQ at 2 bits',
       better((S.get('qat', {}).get('qat2'), S.get('ptq', {}).get('ptq2')),
              pct, True),
       lambda c: better(lm(c, 'qat2', 'ptq2'), bpc, False)),
      ('QAT beats PTQ at 4 bits',
       better((S.get('qat', {}).get('qat4'), S.get('ptq', {}).get('ptq4')),
              pct, True),
       lambda c: better(lm(c, 'qat4', 'ptq4'), bpc, False)),
  ):
    out.append((claim, on_jv) + tuple(on_lm(c) for c, _ in LM_CELLS))
  return out


def table_lm_directions(S: Summaries) -> str:
  """Each claim's verdict on JapaneseVowels and on the LMs, side by side."""
  def cell(v):
    return 'n/a' if v is None else ('yes' if v[0] else 'no') + f' ({v[1]})'

  rows, differ = [], 0
  for claim, on_jv, *on_lm in _claims(S):
    known = [v for v in on_lm if v is not None]
    same = ('n/a' if on_jv is None or not known else
            'same' if all(v[0] == on_jv[0] for v in known) else 'differs')
    differ += same == 'differs'
    rows.append([claim, cell(on_jv)] + [cell(v) for v in on_lm] + [same])
  out = markdown_table(['claim', 'JapaneseVowels GRU-64 (accuracy)']
                       + [f'{name} LM (bits/char)' for _, name in LM_CELLS]
                       + ['direction'], rows)
  return out + (f'\nThe direction differs from JapaneseVowels for {differ} of '
                f'{len(rows)} claims (tolerance: {TOLERANCE_POINTS} points '
                f'of accuracy, {LM_TOLERANCE_BPC} bits per character).\n')


def plot_lm_pareto(rows_by_item: dict[str, list[dict]], plot_dir: str) -> None:
  """Bits per character against file bytes, every LM method, per cell."""
  lm = rows_by_item.get('lm', [])
  for cell, name in LM_CELLS:
    rows = [r for r in lm if str(r.get('group', '')).startswith(cell + '_')]
    # The scratch twins are the students' reference: charted too.
    rows += [{**r, 'name': f'{r["name"]}_scratch',
              'group': f'{cell}_kd_scratch', 'method': 'student from scratch',
              'value': r['scratch_test_bits_per_char']}
             for r in rows if r.get('group') == f'{cell}_kd'
             and r.get('status') == 'done'
             and sweep_lib._is_number(r.get('scratch_test_bits_per_char'))]  # pylint: disable=protected-access
    if rows:
      sweep_lib.plot_pareto(
          rows, os.path.join(plot_dir, f'lm_pareto_{cell}.png'),
          f'{name} character LM, ASV Bible: every method (mean of seeds)')


# The byte-budget item's hand-made recipes (configs/auto.py `sweep`).
BUDGET_HANDMADE = (
    ('qat2', 'uniform QAT, 2-bit'),
    ('pq0.9_4', 'pruned 90% + 4-bit, every parameter'),
    ('pq0.95_2', 'pruned 95% + 2-bit, every parameter'),
    ('dc0.95_16', 'Deep Compression, 95% + 16 shared values'),
    ('dc0.98_4', 'Deep Compression, 98% + 4 shared values'),
    ('kd16_4', 'distilled GRU-16, 4-bit'),
    ('kd8_2', 'distilled GRU-8, 2-bit'),
)


def _budgets(g: dict) -> list[int]:
  return sorted((int(k[4:]) for k in g if re.fullmatch(r'auto\d+', k)),
                reverse=True)


def table_budget(S: Summaries) -> str:
  """`auto` at each budget against the best hand-made file of no more bytes."""
  g = S.get('budget', {})
  base = g.get('baseline')
  rows = []
  verdicts = []
  for b in _budgets(g):
    a = g[f'auto{b}']
    fits = [(g[k]['value'], k, label) for k, label in BUDGET_HANDMADE
            if k in g and g[k].get('compressed_bytes', math.inf) <= b]
    best = max(fits) if fits else None
    hand = g[best[1]] if best else None
    rows.append([f'{b:,}', _int(a, 'compressed_bytes'), _pct(a),
                 best[2] if best else 'none fits', _int(hand,
                                                        'compressed_bytes'),
                 _pct(hand), _n(a)])
    if best:
      verdicts.append('at least as accurate' if a['value'] >= hand['value']
                      else 'less accurate')
  out = markdown_table(['budget (bytes)', 'auto: file bytes',
                        'auto: test accuracy (%)', 'best hand-made recipe '
                        'of no more bytes', 'its file bytes',
                        'its test accuracy (%)', 'seeds'], rows)
  if verdicts:
    n_ok = verdicts.count('at least as accurate')
    out += (f'\nWhere a hand-made file fits the budget, `auto` is at least as '
            f'accurate (mean of seeds) at {n_ok} of {len(verdicts)} budgets. '
            f'Float GRU-64 baseline: {_pct(base)}, '
            f'{_int(base, "dense_bytes")} bytes as float32.\n')
  rows = []
  for k, label in BUDGET_HANDMADE:
    h = g.get(k)
    rows.append([label, _int(h, 'compressed_bytes'), _pct(h), _n(h)])
  out += '\n' + markdown_table(['hand-made recipe', 'file bytes',
                                'test accuracy (%)', 'seeds'], rows)
  return out


def plot_budget(S: Summaries, path: str) -> None:
  """Test accuracy against file bytes: auto and the hand-made recipes."""
  plt = sweep_lib._pyplot()  # pylint: disable=protected-access
  g = S.get('budget', {})
  fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
  budgets = _budgets(g)
  if budgets:
    pts = [g[f'auto{b}'] for b in budgets]
    ax.errorbar([p['compressed_bytes'] for p in pts],
                [100 * p['value'] for p in pts],
                yerr=[100 * p.get('value_std', 0) for p in pts], marker='o',
                capsize=3, label='auto (one budget per point)')
  for (k, label), marker in zip(BUDGET_HANDMADE, 'sD^v<>p'):
    h = g.get(k)
    if h:
      ax.errorbar([h['compressed_bytes']], [100 * h['value']],
                  yerr=[100 * h.get('value_std', 0)], marker=marker,
                  capsize=3, linestyle='none', label=label)
  base = g.get('baseline')
  if base:
    ax.axhline(100 * base['value'], color='gray', linestyle=':',
               label='float32 baseline')
  _save_log_x(plt, fig, ax, path, 'artifact file bytes (log scale)',
              'GRU-64, JapaneseVowels: compression to a byte budget', 7)


def _save_log_x(plt, fig, ax, path: str, xlabel: str, title: str,
                legend_size: int) -> None:
  """Finishes an accuracy chart with a log x axis and writes it."""
  ax.set_xscale('log')
  sweep_lib._plain_log_ticks(ax.xaxis)  # pylint: disable=protected-access
  ax.set_xlabel(xlabel)
  ax.set_ylabel('test accuracy (%)')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=legend_size)
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def table_run_info(S: Summaries, info: dict) -> str:
  """How the numbers were made: per item the last call that ran it."""
  del S  # The record, not the runs, says how they were made.
  items = (info or {}).get('items', {})
  if not items:
    return 'Not run yet.\n'
  rows = []
  for item in SWEEPS:
    t = items.get(item)
    if not t:
      rows.append([item, 'n/a', 'n/a', 'n/a', 'not run', ''])
      continue
    where = (f'Ray cluster {t["ray_address"]}' if t.get('ray_address') else
             f'{t["cpus"]}-core CPU, --parallel {t["parallel"]}')
    rows.append([item, str(t['points']), str(t['points_run']),
                 f'{t["wall_minutes"]:.1f}', f'{t["date"]}, {where}',
                 f'`{t["command"]}`'])
  out = markdown_table(['item', 'grid points', 'run by that call',
                        'wall minutes', 'when, where', 'call'], rows)
  whole = [items[i] for i in SWEEPS if i in items]
  if len(whole) == len(SWEEPS) and all(t['points_run'] == t['points']
                                       for t in whole):
    for part, names in PARTS.items():
      minutes = sum(items[i]['wall_minutes'] for i in names)
      out += (f'\n{part}: {minutes:.1f} min wall from scratch.')
    out += '\n'
  return out


# ----------------------------------------------------------------------------
# Plots


def plot_quant_bits(S: Summaries, path: str) -> None:
  """Test accuracy against weight bits, PTQ and QAT."""
  plt = sweep_lib._pyplot()  # pylint: disable=protected-access
  fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
  for item, prefix, marker, label in (('ptq', 'ptq', 'o', 'PTQ (calibrated)'),
                                      ('qat', 'qat', 's', 'QAT (fine-tuned)')):
    g = S.get(item, {})
    bits = [b for b in (2, 3, 4, 6, 8) if f'{prefix}{b}' in g]
    ax.errorbar(bits, [100 * g[f'{prefix}{b}']['value'] for b in bits],
                yerr=[100 * g[f'{prefix}{b}'].get('value_std', 0) for b in bits],
                marker=marker, capsize=3, label=label)
  base = S.get('ptq', {}).get('baseline')
  if base:
    ax.axhline(100 * base['value'], color='gray', linestyle=':',
               label='float32 baseline')
  ax.set_xlabel('weight bits')
  ax.set_ylabel('test accuracy (%)')
  ax.set_xticks([2, 3, 4, 6, 8])
  ax.grid(True, alpha=0.3)
  ax.legend()
  ax.set_title('GRU-64, JapaneseVowels: PTQ vs QAT')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_zhu_gupta(S: Summaries, path: str) -> None:
  """Test accuracy against nonzero parameters: pruned vs small dense."""
  plt = sweep_lib._pyplot()  # pylint: disable=protected-access
  g = S.get('prune', {})
  fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
  series = (
      ('GRU-64 pruned, fine-tuned', [f'prune{s}' for s in (0.5, 0.75, 0.9,
                                                          0.95)], 'o'),
      ('GRU-64 90% pruned from scratch', ['scratch0.9'], 'D'),
      ('GRU-21 and GRU-16 dense, 400 steps', ['dense16_400', 'dense21_400'],
       's'),
      ('GRU-21 and GRU-16 dense, 800 steps', ['dense16_800', 'dense21_800'],
       '^'),
      ('GRU-64 dense baseline', ['baseline'], '*'))
  for label, groups, marker in series:
    pts = [g[k] for k in groups if k in g]
    if not pts:
      continue
    ax.errorbar([p['params_nonzero'] for p in pts],
                [100 * p['value'] for p in pts],
                yerr=[100 * p.get('value_std', 0) for p in pts],
                marker=marker, markersize=8, capsize=3, label=label,
                linestyle='-' if len(pts) > 1 else 'none')
  _save_log_x(plt, fig, ax, path, 'nonzero parameters (log scale)',
              'Large-sparse vs small-dense (Zhu & Gupta 2017)', 8)


# ----------------------------------------------------------------------------
# The run


def fill_markers(text: str, tables: dict[str, str]) -> str:
  """Replaces the body of every `<!-- table:NAME -->` block by tables[NAME].

  Args:
    text: the markdown.
    tables: marker name -> generated markdown.

  Returns:
    The new markdown.

  Raises:
    KeyError: a marker with no table, or a table with no marker.
  """
  found = set()

  def sub(m: re.Match) -> str:
    name = m.group(2)
    if name not in tables:
      raise KeyError(f'marker table:{name} has no generator')
    found.add(name)
    body = tables[name]
    return m.group(1) + body + ('' if body.endswith('\n') else '\n') + m.group(4)

  out = _MARKER_RE.sub(sub, text)
  missing = sorted(set(tables) - found)
  if missing:
    raise KeyError(f'no marker for tables: {", ".join(missing)}')
  return out


def _copy_baselines(root: str, items: Sequence[str]) -> None:
  """Copies finished baseline runs into grids that lack them.

  The baseline points of every grid are the same recipe and seed, and a run
  is a pure function of both, so a copy equals a rerun.
  """
  done: dict[str, str] = {}
  for item in items:
    for path in sorted(os.listdir(os.path.join(root, item))
                       if os.path.isdir(os.path.join(root, item)) else []):
      run = os.path.join(root, item, path)
      if path.startswith('baseline_s') and os.path.exists(
          os.path.join(run, 'results.json')):
        done.setdefault(path, run)
  for item in items:
    os.makedirs(os.path.join(root, item), exist_ok=True)
    for name, src in done.items():
      dst = os.path.join(root, item, name)
      if not os.path.exists(os.path.join(dst, 'results.json')):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


def run_all(root: str, items: Sequence[str], engine: sweep_lib.Engine,
            smoke: bool, seeds: int = 0,
            timings: dict[str, dict] | None = None) -> list[str]:
  """Runs every item's grid (resuming) in one Ray session.

  Args:
    root: the runs directory.
    items: keys of SWEEPS, in run order.
    engine: the Ray to run on and each point's resources (see sweep.py).
    smoke: the tiny grids.
    seeds: seeds per grid point (0: each grid's own).
    timings: filled per item with its wall minutes, its points and how
      many of them this call ran (the others were done before), when given.

  Returns:
    The failed points, as 'item/name'.
  """
  failed = []
  arg = ','.join((['smoke'] if smoke else []) +
                 ([f'seeds={seeds}'] if seeds else []))
  with sweep_lib.ray_session(engine):
    for item in items:
      t0 = time.time()
      spec = SWEEPS[item] + (f':{arg}' if arg else '')
      points = sweep_lib.load_points(spec)
      # Only grids with the standard baselines share them.
      if any(p.name.startswith('baseline_s') for p in points):
        _copy_baselines(root, [i for i in items if i != 'kd'])
      sweep_lib._say(f'=== {item}: {spec} ({len(points)} points)')  # pylint: disable=protected-access
      todo = sum(not sweep_lib.is_done(p, os.path.join(root, item))
                 for p in points)
      _, bad = sweep_lib.sweep(spec, os.path.join(root, item), engine)
      failed += [f'{item}/{n}' for n in bad]
      if timings is not None:
        timings[item] = {'wall_minutes': (time.time() - t0) / 60,
                         'points': len(points), 'points_run': todo}
  return failed


# The items each table and plot reads (`--only` rewrites just those).
TABLE_ITEMS = {
    'run_info': tuple(SWEEPS), 'zhu_gupta': ('prune',),
    'deep_compression': ('deep_compression',), 'kmeans': ('kmeans',),
    'hinton': ('kd',), 'prabhavalkar': ('svd',), 'wen_iss': ('structured',),
    'quant_bits': ('ptq', 'qat'), 'budget': ('budget',),
    'lm_models': ('lm',), 'lm_zhu_gupta': ('lm',),
    'lm_deep_compression': ('lm',), 'lm_hinton': ('lm',),
    'lm_kd_search': ('lm',),
    'lm_prabhavalkar': ('lm',), 'lm_wen_iss': ('lm',),
    'lm_quant_bits': ('lm',), 'lm_directions': tuple(SWEEPS),
}


def write_outputs(root: str, items: Sequence[str], markdown: str,
                  plot_dir: str, only: Sequence[str] = ()) -> None:
  """Writes the tables into `markdown` and the plots into `plot_dir`.

  With `only` (items), just the tables and plots that read nothing but those
  items are rewritten; every other table keeps its text.
  """
  rows_by_item: dict[str, list[dict]] = {}
  summaries: Summaries = {}
  for item in items:
    path = os.path.join(root, item, 'sweep.csv')
    rows = sweep_lib.read_csv(path) if os.path.exists(path) else []
    rows_by_item[item] = rows
    summaries[item] = {s['group']: s for s in
                       sweep_lib.summarize(rows, SUMMARY_KEYS)}
  info = sweep_lib._read_json(os.path.join(root, 'reproduce.json'))  # pylint: disable=protected-access
  tables: dict[str, str] = {
      'run_info': table_run_info(summaries, info),
      'zhu_gupta': table_zhu_gupta(summaries),
      'deep_compression': table_deep_compression(summaries),
      'kmeans': table_kmeans(summaries),
      'hinton': table_hinton(summaries, rows_by_item),
      'prabhavalkar': table_prabhavalkar(summaries),
      'wen_iss': table_wen_iss(summaries),
      'quant_bits': table_quant_bits(summaries),
      'budget': table_budget(summaries),
      'lm_models': table_lm_models(summaries),
      'lm_zhu_gupta': table_lm_zhu_gupta(summaries),
      'lm_deep_compression': table_lm_deep_compression(summaries),
      'lm_hinton': table_lm_hinton(summaries, rows_by_item),
      'lm_kd_search': table_lm_kd_search(rows_by_item),
      'lm_prabhavalkar': table_lm_prabhavalkar(summaries),
      'lm_wen_iss': table_lm_wen_iss(summaries),
      'lm_quant_bits': table_lm_quant_bits(summaries),
      'lm_directions': table_lm_directions(summaries),
  }
  with open(markdown) as f:
    text = f.read()
  if only:
    kept = {m[1]: m[2] for m in _MARKER_RE.findall(text)}
    tables = {k: (v if set(TABLE_ITEMS[k]) <= set(only) else kept[k])
              for k, v in tables.items()}
  text = fill_markers(text, tables)
  files.atomic_write(markdown, text)
  if only:
    os.makedirs(plot_dir, exist_ok=True)
    if 'budget' in only:
      plot_budget(summaries, os.path.join(plot_dir, 'budget.png'))
    if 'lm' in only:
      plot_lm_pareto(rows_by_item, plot_dir)
    return

  os.makedirs(plot_dir, exist_ok=True)
  # The chart is JapaneseVowels accuracy; the language models have their
  # own (bits per character).
  plot_lm_pareto(rows_by_item, plot_dir)
  all_rows = [r for item in items if item != 'lm'
              for r in rows_by_item[item]]
  # The teacher is a reference, not a compressed model: it stays off the
  # chart, where its 222 KB would only stretch the axis.
  chart_rows = [r for r in all_rows if r.get('group') != 'teacher']
  # Each distillation run also trained the same student from scratch; it is
  # the reference the distilled student should beat, so it is charted too.
  chart_rows += [
      {**r, 'name': f'{r["name"]}_scratch', 'group': 'student_scratch',
       'method': 'GRU-16 from scratch', 'value': r['scratch_test_accuracy']}
      for r in rows_by_item.get('kd', [])
      if r.get('group') == 'student' and r.get('status') == 'done'
      and sweep_lib._is_number(r.get('scratch_test_accuracy'))]  # pylint: disable=protected-access
  sweep_lib.plot_pareto(chart_rows, os.path.join(plot_dir, 'pareto.png'),
                        'GRU on JapaneseVowels: every method (mean of seeds)')
  plot_quant_bits(summaries, os.path.join(plot_dir, 'quant_bits.png'))
  plot_zhu_gupta(summaries, os.path.join(plot_dir, 'zhu_gupta.png'))
  plot_budget(summaries, os.path.join(plot_dir, 'budget.png'))
  prune_rows = rows_by_item.get('prune', [])
  sweep_lib.plot_curves(
      sweep_lib.curve_runs(prune_rows, os.path.join(root, 'prune')),
      os.path.join(plot_dir, 'curves_prune.png'),
      'Training curves of the pruning grid (seed 0)')


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', default=None,
                      help='runs directory (default runs/reproduction, or '
                      '/tmp/reproduction_smoke with --smoke)')
  sweep_lib.add_engine_flags(parser)
  parser.add_argument('--smoke', action='store_true',
                      help='tiny grids; writes <root>/REPRODUCTION.md and '
                      '<root>/docs instead of the repository files')
  parser.add_argument('--seeds', type=int, default=0,
                      help='seeds per grid point (default: each grid\'s own, '
                      '3; 1 with --smoke)')
  parser.add_argument('--tables_only', action='store_true',
                      help='only rewrite tables and plots from existing runs')
  parser.add_argument('--only', default='',
                      help='comma-separated items to run, and whose '
                      'tables and plots to rewrite (default all): '
                      + ', '.join(SWEEPS))
  args = parser.parse_args(argv)
  root = args.root or ('/tmp/reproduction_smoke' if args.smoke
                       else os.path.join('runs', 'reproduction'))
  items = [i for i in SWEEPS if not args.only or i in args.only.split(',')]
  unknown = set(args.only.split(',')) - set(SWEEPS) - {''}
  if unknown:
    print(f'error: --only: unknown items {sorted(unknown)}; valid: '
          + ', '.join(SWEEPS), file=sys.stderr)
    return 2
  markdown = os.path.join(ROOT, 'REPRODUCTION.md')
  plot_dir = os.path.join(ROOT, 'docs', 'reproduction')
  if args.smoke:
    os.makedirs(root, exist_ok=True)
    shutil.copy(markdown, os.path.join(root, 'REPRODUCTION.md'))
    markdown = os.path.join(root, 'REPRODUCTION.md')
    plot_dir = os.path.join(root, 'docs')
  failed = []
  if not args.tables_only:
    timings: dict[str, dict] = {}
    try:
      engine = sweep_lib.Engine(
          address=args.ray_address, parallel=args.parallel,
          cpus=args.point_cpus, gpus=args.point_gpus,
          resources=sweep_lib.parse_resources(args.point_resources))
      failed = run_all(root, items, engine, args.smoke, args.seeds, timings)
    except sweep_lib.SweepError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    # One record per item, kept across partial reruns (`--only`): the last
    # call that ran it, how long it took and how much of it that call ran.
    path = os.path.join(root, 'reproduce.json')
    info = sweep_lib._read_json(path) or {}  # pylint: disable=protected-access
    record = {
        'command': 'python ' + ' '.join(['reproduce.py'] + list(
            argv if argv is not None else sys.argv[1:])),
        'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        'cpus': os.cpu_count(), 'ray_address': args.ray_address,
        'parallel': args.parallel or sweep_lib._usable_cores()}  # pylint: disable=protected-access
    items_info = info.get('items', {})
    for item, t in timings.items():
      items_info[item] = {**record, **t}
    sweep_lib._write_json(path, {'items': items_info})  # pylint: disable=protected-access
  write_outputs(root, list(SWEEPS), markdown, plot_dir,
                only=[i for i in args.only.split(',') if i])
  print(f'wrote {markdown} and {plot_dir}/'
        + (f'; failed points: {", ".join(failed)}' if failed else ''))
  return 1 if failed else 0


if __name__ == '__main__':
  import cli  # pylint: disable=g-import-not-at-top
  sys.exit(cli.run_cli(main))  # A workdir OSError is one line, exit 2.
