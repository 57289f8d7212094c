"""The benchmarks run as documented: `python -m benchmarks.<name>` from the root.

No timing is checked (the benchmarks themselves are never part of pytest);
only that the command line works: the cheapest benchmark at a tiny shape as a
subprocess, typed as the README shows it, and every argparse benchmark's
`--help`.
"""

import importlib
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_inference_runs_as_module(tmp_path):
  out = tmp_path / 'inference.json'
  run = subprocess.run(
      [sys.executable, '-m', 'benchmarks.inference', '--variants', 'dense',
       '--batch', '4', '--steps', '4', '--features', '4', '--hidden', '8',
       '--repeats', '2', '--block', '2', '--warmup', '1', '--json', str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  assert 'dense/this' in run.stdout
  assert any(line.startswith('dense ') for line in run.stdout.splitlines())
  results = json.loads(out.read_text())
  assert results['args']['hidden'] == 8
  assert set(results['results']) == {'dense'}


@pytest.mark.parametrize('name', ['step_time', 'gru_vs_flax',
                                  'quant_overhead', 'inference',
                                  'cpu_scaling'])
def test_help(name, capsys):
  module = importlib.import_module(f'benchmarks.{name}')
  with pytest.raises(SystemExit) as exit_info:
    module.main(['--help'])
  assert exit_info.value.code == 0
  assert '--json' in capsys.readouterr().out
