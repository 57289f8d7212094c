r"""Writes README.md's result tables from the runs they name.

  python readme_tables.py                 # runs what is missing, then writes
  python readme_tables.py --tables_only   # rewrites from existing runs only
  python readme_tables.py --only=lstm,kd  # some tables (their runs) only
  python readme_tables.py --smoke --root=/tmp/t --readme=/tmp/README.md
                                          # every row as a :smoke run (tests)

Every number in README.md's result tables comes from a `results.json` that
the command printed beside the table produced: each row is one command,
`python train.py --config=configs/<recipe> --workdir=runs/readme/<name>
[flags]`, run here as a subprocess exactly as typed (a finished workdir is
reused; an interrupted one resumes). The tables go between the markers
`<!-- table:NAME -->` and `<!-- /table -->` of README.md, never by hand.
Accuracies are printed with three decimals of the test split's exact
fraction (JapaneseVowels: k / 370), means over seeds are the means of the
values shown.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable, NamedTuple, Sequence

from compression import files
from reproduce import markdown_table

# A generated block: marker, table name, body, end marker.
_MARKER = r'<!-- table:([a-z0-9_]+) -->'
_BLOCK = r'(<!-- table:([a-z0-9_]+) -->\n)(.*?)(<!-- /table -->)'

ROOT = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(ROOT, 'README.md')


SMOKE = False  # --smoke: every recipe gets its `smoke` arg.


class Run(NamedTuple):
  """One command: `train.py --config=configs/<recipe> <flags>`."""
  name: str  # Workdir under the runs root.
  recipe: str  # 'gru_qat.py:bits=4'.
  flags: tuple[str, ...] = ()
  # Runtimes that then evaluate the run's artifact, each a command
  # `eval.py --artifact=<workdir>/model.rnnc --runtime=<name>` whose report
  # the results get as `eval_<name>`.
  evals: tuple[str, ...] = ()

  def command(self, root: str) -> list[str]:
    recipe = self.recipe
    if SMOKE:
      recipe += (',' if ':' in recipe else ':') + 'smoke'
    return ['python', 'train.py', f'--config=configs/{recipe}',
            f'--workdir={os.path.join(root, self.name)}', *self.flags]

  def eval_commands(self, root: str) -> list[list[str]]:
    artifact = os.path.join(root, self.name, 'model.rnnc')
    return [['python', 'eval.py', f'--artifact={artifact}',
             f'--runtime={runtime}'] for runtime in self.evals]

  def shown(self) -> str:
    """The command as README shows it (workdir under runs/readme)."""
    return '\n    '.join(' '.join(c) for c in [self.command('runs/readme')]
                         + self.eval_commands('runs/readme'))


def _init(root: str, name: str) -> str:
  return f'--config.init_from={os.path.join(root, name)}'


def execute(run: Run, root: str) -> dict:
  """Runs `run` unless its workdir holds results; returns results.json."""
  path = os.path.join(root, run.name, 'results.json')
  trained = not os.path.exists(path)
  if trained:
    cmd = run.command(root)
    print('$ ' + ' '.join(cmd), flush=True)
    cmd[0] = sys.executable
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
      sys.stderr.write(proc.stderr[-2000:])
      raise SystemExit(f'readme_tables: {run.name} failed (exit '
                       f'{proc.returncode})')
    print(f'  {time.perf_counter() - t:.0f} s', flush=True)
  with open(path) as f:
    results = json.load(f)
  for runtime, cmd in zip(run.evals, run.eval_commands(root)):
    report = os.path.join(root, run.name, f'model.rnnc.eval.{runtime}.json')
    if trained or not os.path.exists(report):
      print('$ ' + ' '.join(cmd), flush=True)
      proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT,
                            capture_output=True, text=True)
      if proc.returncode:
        sys.stderr.write(proc.stderr[-2000:])
        raise SystemExit(f'readme_tables: {run.name} --runtime={runtime} '
                         f'failed (exit {proc.returncode})')
    with open(report) as f:
      results[f'eval_{runtime}'] = json.load(f)
  # Kernel parameters of the model the run's artifact holds.
  from compression import export  # pylint: disable=g-import-not-at-top
  header = export.read(os.path.join(root, run.name, 'model.rnnc')).header
  results['artifact_hidden'] = header['model']['hidden']
  results['kernel_params'] = sum(
      int(np_prod(leaf['shape'])) for leaf in header['leaves']
      if leaf['path'].endswith('kernel'))
  return results


def np_prod(shape: Sequence[int]) -> int:
  out = 1
  for n in shape:
    out *= int(n)
  return out


# ----------------------------------------------------------------------------
# Formatting


def acc(r: dict) -> str:
  return f"{r['test_accuracy']:.3f}"


def nbytes(n: float) -> str:
  return f'{int(round(n)):,}'


def ratio(r: dict) -> str:
  return f"{r['dense_bytes'] / r['compressed_bytes']:.1f}x"




# ----------------------------------------------------------------------------
# Tables: each a list of runs and a function of their results.


class Table(NamedTuple):
  runs: Callable[[str], list[Run]]
  render: Callable[[dict[str, dict]], str]


BASELINES = [
    ('gru_baseline', 'gru_baseline.py',
     'speaker id, JapaneseVowels (9 classes)', 'GRU 64, last-state pooling'),
    ('lstm_baseline', 'lstm_baseline.py', 'same', 'LSTM 64'),
    ('rnn_baseline', 'rnn_baseline.py', 'same', 'tanh RNN 64'),
    ('gru_forecast', 'gru_forecast.py',
     'next 6 monthly sunspot numbers from 48', 'GRU 32'),
    ('gru_lm', 'gru_lm.py', 'characters, ASV Bible (last 5% held out)',
     'embed 32, GRU 256'),
]


def _baseline_result(r: dict) -> str:
  secs = f"{r['train_seconds']:.0f} s training"
  if r['task'] == 'classification':
    return f'test accuracy {acc(r)}, {secs}'
  if r['task'] == 'forecasting':
    return (f"test RMSE {r['test_rmse']:.1f} (naive last value: "
            f"{r['naive_rmse']:.1f}), {secs}")
  return f"{r['test_bits_per_char']:.3f} bits/char, {secs}"


def baselines_runs(root: str) -> list[Run]:
  runs = [Run(n, recipe) for n, recipe, _, _ in BASELINES]
  runs += [Run(f'lm_ptq{b}', f'lm_ptq.py:bits={b}', (_init(root, 'gru_lm'),))
           for b in (8, 4, 3)]
  return runs


def baselines_render(R: dict[str, dict]) -> str:
  rows = [[f'`{recipe}`', task, model, _baseline_result(R[n])]
          for n, recipe, task, model in BASELINES]
  lm = [R[f'lm_ptq{b}'] for b in (8, 4, 3)]
  rows.append([
      '`lm_ptq.py:bits=B`', 'post-training quantization of `gru_lm`', 'same',
      ' / '.join(f"{r['test_bits_per_char']:.3f}" for r in lm)
      + ' bits/char at 8 / 4 / 3 bits ('
      + nbytes(R['gru_lm']['dense_bytes']) + ' -> '
      + ' / '.join(nbytes(r['compressed_bytes']) for r in lm) + ' bytes)'])
  return markdown_table(['recipe', 'task, data', 'model', 'result'], rows)


# (name, recipe, method description) of the compression table; `{cell}`
# is the cell's recipe arg.
COMPRESSION = [
    ('qat8', 'gru_qat.py:bits=8', '8-bit fake-quant, per channel, fine-tuned'),
    ('qat4', 'gru_qat.py:bits=4', '4-bit'),
    ('qat2', 'gru_qat.py:bits=2', '2-bit (codes -1, 0, 1)'),
    ('ptq', 'gru_ptq.py', '8-bit post-training, 4 calibration batches, no '
     'training'),
    ('kmeans', 'gru_kmeans.py', '16-cluster k-means weight sharing, centroids '
     'fine-tuned'),
    ('prune', 'gru_prune.py', 'gradual magnitude pruning (Zhu and Gupta) to '
     '80%'),
    ('prune90', 'gru_prune.py:sparsity=0.9', '90%'),
    ('taylor', 'gru_taylor.py', 'first-order (Taylor) sensitivity, 80%'),
    ('l1', 'gru_l1.py', 'L1 penalty then threshold, 80%'),
    ('structured', 'gru_structured.py', 'half the hidden units removed (Wen '
     'et al. groups), 8-bit codes; the file holds the shrunk model'),
    ('svd', 'gru_svd.py', 'SVD factors of the recurrent kernel at a quarter '
     'of full rank, fine-tuned'),
    ('dct', 'gru_dct.py', '25% of 8x8-block DCT coefficients of the recurrent '
     'kernel'),
    ('threshold', 'gru_threshold.py', 'weights with \\|w\\| < 0.3 max\\|w\\| '
     'removed (threshold pruning), fine-tuned'),
    ('deep_compression', 'deep_compression.py', '95% pruning, then 16-cluster '
     'sharing of survivors, then Huffman (Han et al.)'),
]
LSTM_ROWS = ('qat8', 'qat4', 'ptq', 'kmeans', 'prune90', 'structured', 'svd',
             'dct', 'deep_compression', 'kd')
# Rows of the LSTM table only.
COMPRESSION.append(
    ('kd', 'gru_kd.py', 'a 16-unit student distilled from a 128-unit teacher '
     '(soft labels, hidden states, attention maps); ratio against the '
     "teacher's float size"))


# Rows whose files hold integer weights: also run by `eval.py --artifact
# --runtime=int` (the integer reference, equal to the generated C), shown
# beside the fake-quant accuracy. The others store float32 weights.
INT_ROWS = ('qat8', 'qat4', 'qat2', 'ptq', 'kmeans', 'structured',
            'deep_compression')


def in_table(name: str, cell: str) -> bool:
  """Whether row `name` of COMPRESSION is in the table of `cell`."""
  return name in LSTM_ROWS if cell != 'gru' else name != 'kd'


def _with_cell(recipe: str, cell: str) -> str:
  if cell == 'gru':
    return recipe
  name, _, arg = recipe.partition(':')
  return f'{name}:cell={cell}' + (f',{arg}' if arg else '')


def compression_runs(cell: str) -> Callable[[str], list[Run]]:
  prefix = '' if cell == 'gru' else f'{cell}_'
  names = [n for n, _, _ in COMPRESSION if in_table(n, cell)]

  def runs(root: str) -> list[Run]:
    del root
    base = f'{cell}_baseline'
    return [Run(base, f'{base}.py')] + [
        Run(prefix + n, _with_cell(recipe, cell),
            evals=('int',) if n in INT_ROWS else ())
        for n, recipe, _ in COMPRESSION if n in names]

  return runs


def compression_render(cell: str) -> Callable[[dict[str, dict]], str]:
  prefix = '' if cell == 'gru' else f'{cell}_'

  def render(R: dict[str, dict]) -> str:
    rows = []
    for n, recipe, what in COMPRESSION:
      if not in_table(n, cell):
        continue
      r = R[prefix + n]
      # A distilled student is compared with the teacher it replaces.
      dense = r.get('teacher_dense_bytes', r['dense_bytes'])
      in_int = (f"{r['eval_int']['test_accuracy']:.3f}" if 'eval_int' in r
                else 'float weights')
      rows.append([f'`{_with_cell(recipe, cell)}`', what, acc(r), in_int,
                   nbytes(r['compressed_bytes']),
                   f"{dense / r['compressed_bytes']:.1f}x",
                   nbytes(r['entropy_coded_bytes'])])
    base = R[f'{cell}_baseline']
    head = (f"Baseline `{cell}_baseline.py`: test accuracy "
            f"{acc(base)}, {nbytes(base['dense_bytes'])} float32 bytes.\n\n")
    return head + markdown_table(['recipe', 'method', 'test acc.',
                                  'in integers (`--runtime=int`)',
                                  'file bytes', 'ratio', 'Huffman payload'],
                                 rows)

  return render


RANKS = (1, 2, 4, 8, 16, 32)
KEEPS = (0.05, 0.1, 0.25, 0.5)


def rank_runs(root: str) -> list[Run]:
  init = (_init(root, 'gru_baseline'),)
  return ([Run('gru_baseline', 'gru_baseline.py')]
          + [Run(f'svd_rank{k}', f'gru_svd.py:rank={k}', init) for k in RANKS]
          + [Run(f'dct_keep{k}', f'gru_dct.py:keep={k}', init) for k in KEEPS])


def rank_render(R: dict[str, dict]) -> str:
  svd = [R[f'svd_rank{k}'] for k in RANKS]
  full = R['gru_baseline']['kernel_params']
  # Factoring changes only kernels: the other parameters are the same.
  kernel = lambda r: r['params_total'] - (
      R['gru_baseline']['params_total'] - full)
  t1 = markdown_table(
      ['SVD rank of the recurrent kernel'] + [str(k) for k in RANKS],
      [['kernel parameters (reduction)'] + [
          f'{kernel(r):,} ({full / kernel(r):.1f}x)' for r in svd],
       ['test accuracy'] + [acc(r) for r in svd]])
  dct = [R[f'dct_keep{k}'] for k in KEEPS]
  t2 = markdown_table(['DCT keep (8x8 blocks, recurrent kernel)'] + [str(k) for k in KEEPS],
             [['test accuracy'] + [acc(r) for r in dct]])
  return t1 + '\n' + t2


SEEDS = (0, 1, 2)
KD_VARIANTS = [
    ('kd', '', 'distilled GRU-16'),
    ('kd_scratch', None, 'GRU-16 from scratch'),
    ('kd_q4', 'quant=4', 'distilled GRU-16, 4-bit (`:quant=4`)'),
    ('kd_s80', 'sparsity=0.8', 'distilled GRU-16, 80% pruned (`:sparsity=0.8`)'),
]
KD_ABLATIONS = [
    ('kd_soft', ('--config.distill.feature_weight=0',
                 '--config.distill.attention_weight=0'), 'soft labels alone'),
    ('kd_soft_hidden', ('--config.distill.attention_weight=0',),
     'soft labels + hidden states'),
    ('kd_soft_attention', ('--config.distill.feature_weight=0',),
     'soft labels + attention maps'),
]


def kd_runs(root: str) -> list[Run]:
  teacher = (f"--config.teacher.workdir={os.path.join(root, 'kd_teacher')}",)
  runs = [Run('kd_teacher', 'gru_kd.py:teacher')]
  for s in SEEDS:
    for n, arg, _ in KD_VARIANTS:
      if arg is None:
        continue
      recipe = f'gru_kd.py:seed={s}' + (f',{arg}' if arg else '')
      runs.append(Run(f'{n}_s{s}', recipe, teacher))
    for n, flags, _ in KD_ABLATIONS:
      runs.append(Run(f'{n}_s{s}', f'gru_kd.py:seed={s}',
                      teacher + flags + ('--config.distill.scratch=false',)))
  return runs


def _seed_row(label: str, values: list[float]) -> list[str]:
  shown = [round(v, 3) for v in values]
  return ([label] + [f'{v:.3f}' for v in shown]
          + [f'**{sum(shown) / len(shown):.3f}**'])


def kd_render(R: dict[str, dict]) -> str:
  rows = []
  for n, arg, label in KD_VARIANTS:
    if arg is None:
      values = [R[f'kd_s{s}']['scratch_test_accuracy'] for s in SEEDS]
    else:
      values = [R[f'{n}_s{s}']['test_accuracy'] for s in SEEDS]
    rows.append(_seed_row(label, values))
  for n, _, label in KD_ABLATIONS:
    rows.append(_seed_row(label, [R[f'{n}_s{s}']['test_accuracy']
                                  for s in SEEDS]))
  t = R['kd_teacher']
  student = R['kd_s0']
  head = (f"Teacher GRU-128: test accuracy {acc(t)}, "
          f"{nbytes(t['dense_bytes'])} float32 bytes; the float student "
          f"{nbytes(student['dense_bytes'])}; the 4-bit student's file "
          f"{nbytes(R['kd_q4_s0']['compressed_bytes'])} bytes.\n\n")
  return head + markdown_table(['', *(f'seed {s}' for s in SEEDS), 'mean'], rows)


WORKED = [
    ('seed_gru_predictor', 'seed_gru_predictor.py',
     'GRU forecaster: 10 features per step (10 months), hidden 64 teacher, '
     'hidden-32 student distilled, 50% L1 pruning, int8'),
    ('seed_rnn_prune_quant', 'seed_rnn_prune_quant.py',
     'Elman RNN, hidden 20, threshold pruning 50%, 3-bit'),
    ('seed_sensitivity_kd', 'seed_sensitivity_kd.py',
     'Taylor pruning to 50%, 8-bit, distillation at T=10'),
]


def worked_runs(root: str) -> list[Run]:
  del root
  return [Run(n, recipe) for n, recipe, _ in WORKED]


def worked_render(R: dict[str, dict]) -> str:
  rows = []
  for n, recipe, what in WORKED:
    r = R[n]
    if r['task'] == 'forecasting':
      metric = (f"RMSE {r['test_rmse']:.2f} (teacher "
                f"{r['teacher_test_rmse']:.2f}, naive {r['naive_rmse']:.2f})")
    else:
      metric = f'accuracy {acc(r)}'
      if 'teacher_test_accuracy' in r:
        metric += f" (teacher {r['teacher_test_accuracy']:.3f})"
    rows.append([f'`{recipe}`', what, metric, nbytes(r['compressed_bytes']),
                 ratio(r)])
  return markdown_table(['recipe', 'what', 'metric', 'file bytes', 'ratio'], rows)


def lm_kd_runs(root: str) -> list[Run]:
  del root
  return [Run('lm_kd', 'lm_kd.py')]


def lm_kd_render(R: dict[str, dict]) -> str:
  r = R['lm_kd']
  verdict = ('so on this setting distillation helped' if
             r['test_bits_per_char'] < r['scratch_test_bits_per_char'] else
             'so on this setting distillation did not help yet')
  return (f"`lm_kd.py` distils the character LM per step (GRU-256 teacher "
          f"{r['teacher_test_bits_per_char']:.3f} bits/char into a GRU-64 "
          f"student): the student reached {r['test_bits_per_char']:.3f} "
          f"bits/char against {r['scratch_test_bits_per_char']:.3f} from "
          f'scratch, {verdict}.\n')


BUDGETS = (4000, 2000, 1200, 800, 600)


def budget_runs(root: str) -> list[Run]:
  del root
  return [Run(f'auto_{b}', f'auto.py:budget={b}') for b in BUDGETS]


def budget_render(R: dict[str, dict]) -> str:
  """`auto` at each budget: the file, its accuracy, what the program chose."""
  rows = []
  for b in BUDGETS:
    r = R[f'auto_{b}']
    chosen = '; '.join(
        f"`{a['tensor'].removeprefix('rnn/layer_0/')}` {a['setting']}"
        for a in r['allocation'] if a['tensor'].endswith('kernel'))
    # Against the float GRU-64 it started from (the distillation teacher).
    source = r['teacher_dense_bytes']
    rows.append([nbytes(b), nbytes(r['compressed_bytes']),
                 f"{source / r['compressed_bytes']:.1f}x", acc(r),
                 str(r['artifact_hidden']), chosen])
  return markdown_table(['budget', 'file bytes', 'ratio (float GRU-64 / file)',
                         'accuracy', 'hidden width',
                         'settings chosen for the kernels'], rows)


# (name, recipe arg, weights, activations) of the integer-ready recipe.
INT8 = [
    ('int8', '', '8-bit', '8-bit, input step calibrated'),
    ('int8_w4', 'weights=4', '4-bit', 'same'),
    ('int8_dyn', 'dynamic', '8-bit', '8-bit, input step per time step'),
]


def int8_runs(root: str) -> list[Run]:
  runs = []
  for cell in ('gru', 'lstm'):
    base = f'{cell}_baseline'
    runs.append(Run(base, f'{base}.py'))
    for n, arg, _, _ in INT8:
      args = ([] if cell == 'gru' else [f'cell={cell}']) + ([arg] if arg
                                                           else [])
      recipe = 'gru_int8.py' + (':' + ','.join(args) if args else '')
      runs.append(Run(('' if cell == 'gru' else f'{cell}_') + n, recipe,
                      (_init(root, base),), evals=('int',)))
  return runs


def int8_render(R: dict[str, dict]) -> str:
  """Fake-quant and integer accuracy of gru_int8.py per cell and variant."""
  rows = []
  for cell in ('gru', 'lstm'):
    base = R[f'{cell}_baseline']
    for n, arg, weights, acts in INT8:
      r = R[('' if cell == 'gru' else f'{cell}_') + n]
      args = ([] if cell == 'gru' else [f'cell={cell}']) + ([arg] if arg
                                                           else [])
      rows.append([
          '`gru_int8.py' + (':' + ','.join(args) if args else '') + '`',
          weights, acts, acc(base), acc(r), acc(r['eval_int']),
          nbytes(r['compressed_bytes'])])
  return markdown_table(
      ['recipe', 'weights', 'activations', 'float baseline',
       'fake-quant', '`--runtime=int`', 'file bytes'], rows)


# (name, recipe, what) of the deployment table: README recipes whose
# artifacts are exported to ONNX and StableHLO and evaluated through both.
DEPLOY = [
    ('gru_baseline', 'gru_baseline.py', 'float32 GRU-64'),
    ('qat8', 'gru_qat.py:bits=8', '8-bit codes, per channel'),
    ('qat4', 'gru_qat.py:bits=4', '4-bit'),
    ('qat2', 'gru_qat.py:bits=2', '2-bit'),
    ('prune', 'gru_prune.py', '80% pruned'),
    ('prune90', 'gru_prune.py:sparsity=0.9', '90% pruned'),
    ('structured', 'gru_structured.py', 'half the units removed (GRU-32)'),
    ('deep_compression', 'deep_compression.py', '95% pruned, 16 shared '
     'values'),
    ('kd_q4_s0', 'gru_kd.py:seed=0,quant=4', 'distilled GRU-16 student, '
     '4-bit'),
]
DEPLOY_RUNTIMES = ('jax', 'onnx', 'stablehlo')


def deploy_runs(root: str) -> list[Run]:
  teacher = (f"--config.teacher.workdir={os.path.join(root, 'kd_teacher')}",)
  runs = [Run('kd_teacher', 'gru_kd.py:teacher')]
  for n, recipe, _ in DEPLOY:
    runs.append(Run(n, recipe, teacher if n.startswith('kd_') else (),
                    evals=DEPLOY_RUNTIMES))
  return runs


def deploy_render(R: dict[str, dict]) -> str:
  """Artifact, ONNX and StableHLO bytes, and the metric through each."""
  float_onnx = R['gru_baseline']['eval_onnx']['onnx_bytes']
  rows = []
  for n, recipe, what in DEPLOY:
    r = R[n]
    onnx = r['eval_onnx']['onnx_bytes']
    rows.append([f'`{recipe}`', what,
                 nbytes(r['eval_jax']['compressed_bytes']), nbytes(onnx),
                 f'{float_onnx / onnx:.1f}x',
                 nbytes(r['eval_stablehlo']['stablehlo_bytes']),
                 ' / '.join(acc(r[f'eval_{k}']) for k in DEPLOY_RUNTIMES)])
  return markdown_table(
      ['recipe', 'model', 'artifact bytes', 'ONNX bytes',
       'float ONNX / ONNX', 'StableHLO bytes',
       'test acc. jax / onnx / stablehlo'], rows)


def options_runs(root: str) -> list[Run]:
  del root
  return []


def options_render(R: dict[str, dict]) -> str:
  """Every method's options, from each module's one declaration."""
  del R
  import compression  # pylint: disable=g-import-not-at-top
  from compression import activations  # pylint: disable=g-import-not-at-top
  from compression import api  # pylint: disable=g-import-not-at-top
  from compression import distillation  # pylint: disable=g-import-not-at-top
  from compression import early_exit  # pylint: disable=g-import-not-at-top
  from compression import layers  # pylint: disable=g-import-not-at-top
  modules = [api._MODULES[name] for name in sorted(compression.METHODS)]  # pylint: disable=protected-access
  blocks = []
  for module in ([activations] + modules
                 + [distillation, early_exit, layers]):
    table = module.OPTIONS.table()
    blocks.append(table if not blocks else table.split('\n', 2)[2])
  return ''.join(blocks)


# Early exit, Kronecker / tensor-train factors, layer removal, logit-MSE
# distillation and float16 compute.
_KD_SOFT = ('--config.distill.feature_weight=0',
            '--config.distill.attention_weight=0',
            '--config.distill.scratch=false')


def techniques_runs(root: str) -> list[Run]:
  teacher = (f"--config.teacher.workdir={os.path.join(root, 'kd_teacher')}",)
  return [
      Run('gru_baseline', 'gru_baseline.py'),
      Run('early_exit', 'gru_early_exit.py', evals=('jax',)),
      Run('early_exit_q4', 'gru_early_exit.py:bits=4', evals=('jax',)),
      Run('kron', 'gru_kron.py'),
      Run('kron_q8', 'gru_kron.py:bits=8'),
      Run('tt', 'gru_kron.py:tt'),
      Run('tt_q8', 'gru_kron.py:tt,bits=8'),
      Run('layer_drop', 'gru_layer_drop.py'),
      Run('kd_teacher', 'gru_kd.py:teacher'),
      Run('kd_soft_s0', 'gru_kd.py:seed=0', teacher + _KD_SOFT),
      Run('kd_mse_s0', 'gru_kd.py:seed=0',
          teacher + _KD_SOFT + ('--config.distill.soft_loss=mse',)),
      Run('float16', 'gru_baseline.py', ('--config.model.dtype=float16',)),
  ]


def techniques_render(R: dict[str, dict]) -> str:
  base = R['gru_baseline']
  rows = []
  for n, what in (('early_exit', 'early exit over time, float GRU-64'),
                  ('early_exit_q4', 'early exit, 4-bit QAT')):
    r, art = R[n], R[n]['eval_jax']
    same = all(art[k] == r[k] for k in ('early_exit_accuracy',
                                        'mean_steps_fraction'))
    rows.append([f'`{r["config"]}`', what, acc(r),
                 f"exits past confidence {r['early_exit_threshold']:.5f} "
                 f"(chosen on the training split): reads "
                 f"{100 * r['mean_steps_fraction']:.1f}% of the steps, test "
                 f"accuracy {r['early_exit_accuracy']:.3f}"
                 + ('; the artifact alone gives the same' if same else
                    '; the artifact alone DIFFERS')])
  for n, what in (('kron', '2 Kronecker terms per input / recurrent kernel'),
                  ('kron_q8', 'the same, factors and head 8-bit'),
                  ('tt', 'tensor train, 3 cores of rank 4'),
                  ('tt_q8', 'the same, cores and head 8-bit')):
    r = R[n]
    rows.append([f'`{r["config"]}`', what, acc(r),
                 f"{r['factored_kernel_params']:,} kernel parameters "
                 f"({r['kernel_reduction']:.1f}x fewer than "
                 f"{r['dense_kernel_params']:,}), file "
                 f"{nbytes(r['compressed_bytes'])} bytes ({ratio(r)})"])
  r = R['layer_drop']
  sens = ', '.join(f'{k} {v:.3g}' for k, v in r['layer_sensitivity'].items())
  removed = ', '.join(f'layer_{l}' for l in r['removed_layers'])
  rows.append([f'`{r["config"]}`', 'a 2-layer GRU-64, the least sensitive '
               'removable layer removed, fine-tuned', acc(r),
               f"2-layer float {r['source_test_accuracy']:.3f}; sensitivity "
               f"(sum of \\|g w\\|) {sens}; removed {removed}: "
               f"{r['params_total']:,} parameters left"])
  r, kl = R['kd_mse_s0'], R['kd_soft_s0']
  rows.append(['`gru_kd.py:seed=0` soft labels only, '
               '`--config.distill.soft_loss=mse`', 'GRU-16 student regressing '
               "the teacher's logits (Ba and Caruana)", acc(r),
               f"KL soft labels, same flags: {acc(kl)}; teacher "
               f"{r['teacher_test_accuracy']:.3f}"])
  r = R['float16']
  rows.append(['`gru_baseline.py --config.model.dtype=float16`',
               'float16 compute, dynamic loss scaling, float32 master '
               'weights', acc(r), f'float32: {acc(base)}'])
  head = (f"Baseline `gru_baseline.py`: test accuracy {acc(base)}; its "
          f"kernels (input, recurrent, head) hold "
          f"{R['kron']['dense_kernel_params']:,} parameters.\n\n")
  return head + markdown_table(['recipe', 'what', 'test acc.', 'result'],
                               rows)


TABLES = {
    'baselines': Table(baselines_runs, baselines_render),
    'compression': Table(compression_runs('gru'), compression_render('gru')),
    'lstm': Table(compression_runs('lstm'), compression_render('lstm')),
    'rank_keep': Table(rank_runs, rank_render),
    'kd': Table(kd_runs, kd_render),
    'worked': Table(worked_runs, worked_render),
    'lm_kd': Table(lm_kd_runs, lm_kd_render),
    'options': Table(options_runs, options_render),
    'onnx': Table(deploy_runs, deploy_render),
    'int8': Table(int8_runs, int8_render),
    'budget': Table(budget_runs, budget_render),
    'techniques': Table(techniques_runs, techniques_render),
}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--root', default=os.path.join('runs', 'readme'),
                      help='where the runs live (default runs/readme)')
  parser.add_argument('--only', default='',
                      help='comma-separated tables: ' + ', '.join(TABLES))
  parser.add_argument('--tables_only', action='store_true',
                      help='write from existing runs; run nothing')
  parser.add_argument('--smoke', action='store_true',
                      help='run every row as its :smoke variant (a test of '
                      'the pipeline; the numbers mean nothing)')
  parser.add_argument('--readme', default=README,
                      help='the markdown file to write (default README.md)')
  args = parser.parse_args(argv)
  global SMOKE
  SMOKE = args.smoke
  names = [n for n in args.only.split(',') if n] or list(TABLES)
  unknown = [n for n in names if n not in TABLES]
  if unknown:
    print(f'error: --only: unknown {", ".join(unknown)}; valid: '
          + ', '.join(TABLES), file=sys.stderr)
    return 2
  root = args.root
  rendered = {}
  for name in names:
    runs = TABLES[name].runs(root)
    results = {}
    for run in runs:
      if args.tables_only and not os.path.exists(
          os.path.join(root, run.name, 'results.json')):
        print(f'error: {run.name}: no results (run without --tables_only)',
              file=sys.stderr)
        return 2
      results[run.name] = execute(run, root)
    rendered[name] = TABLES[name].render(results)
    if runs:
      commands = '\n'.join(f'    {r.shown()}' for r in runs)
      rendered[name] += ('\n<details><summary>Commands</summary>\n\n'
                         + commands + '\n\n</details>\n')
  with open(args.readme) as f:
    text = f.read()
  missing = sorted(set(rendered) - set(re.findall(_MARKER, text)))
  if missing:
    print(f'error: {args.readme} has no marker <!-- table:{missing[0]} -->',
          file=sys.stderr)
    return 2
  text = re.sub(_BLOCK, lambda m: (m.group(1) + rendered[m.group(2)]
                                   + m.group(4)) if m.group(2) in rendered
                else m.group(0), text, flags=re.DOTALL)
  files.atomic_write(args.readme, text)
  print(f'wrote {len(rendered)} table(s) into {args.readme}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
