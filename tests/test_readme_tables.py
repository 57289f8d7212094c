"""readme_tables.py: README's result tables are written from results.json."""

import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), '..')


def test_tables_come_from_the_runs_they_name(tmp_path):
  readme = tmp_path / 'README.md'
  shutil.copy(os.path.join(ROOT, 'README.md'), readme)
  original = readme.read_text()
  args = [sys.executable, os.path.join(ROOT, 'readme_tables.py'), '--smoke',
          '--only=lm_kd', f'--root={tmp_path / "runs"}', f'--readme={readme}']
  proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = readme.read_text()
  block = re.search(r'<!-- table:lm_kd -->\n(.*?)<!-- /table -->', text,
                    re.DOTALL).group(1)
  with open(tmp_path / 'runs' / 'lm_kd' / 'results.json') as f:
    r = json.load(f)
  # The numbers are the run's, as the table formats them.
  for key in ('teacher_test_bits_per_char', 'test_bits_per_char',
              'scratch_test_bits_per_char'):
    assert f'{r[key]:.3f}' in block, (key, block)
  helped = r['test_bits_per_char'] < r['scratch_test_bits_per_char']
  assert ('distillation helped' in block) == helped
  assert '--workdir=runs/readme/lm_kd' in block  # Its command is shown.
  # The rest of the file is left as it was.
  strip = lambda t: re.sub(r'<!-- table:lm_kd -->.*?<!-- /table -->', '', t,
                           flags=re.DOTALL)
  assert strip(text) == strip(original)
  # Rewriting from the same runs gives the same file.
  again = subprocess.run(args + ['--tables_only'], cwd=ROOT,
                         capture_output=True, text=True)
  assert again.returncode == 0, again.stderr
  assert readme.read_text() == text


def test_every_table_of_the_readme_is_generated():
  import readme_tables
  text = open(os.path.join(ROOT, 'README.md')).read()
  markers = re.findall(r'<!-- table:([a-z0-9_]+) -->', text)
  assert sorted(markers) == sorted(readme_tables.TABLES)
  for name, body in re.findall(
      r'<!-- table:([a-z0-9_]+) -->\n(.*?)<!-- /table -->', text, re.DOTALL):
    assert body.strip(), f'table {name} was never written'


def test_the_option_table_is_derived_from_the_declarations():
  import readme_tables
  text = open(os.path.join(ROOT, 'README.md')).read()
  body = re.search(r'<!-- table:options -->\n(.*?)<!-- /table -->', text,
                   re.DOTALL).group(1)
  assert body == readme_tables.options_render({})
  assert '`compression.prune.sparsity` | `0.8`' in body
