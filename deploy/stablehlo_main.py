r"""Runs a serialized StableHLO program on batches, in a process of its own.

  python -I deploy/stablehlo_main.py PROGRAM BATCHES.npz OUTPUTS.npz

`deploy.stablehlo.run` starts it (`-I`: the repository is not on the path).
It imports numpy and jax only: the program comes from PROGRAM
(`jax.export.deserialize`), the batches from BATCHES.npz (`count`, then
`x_<i>` and `lengths_<i>` for each batch), and it writes `output_<i>` for
each batch to OUTPUTS.npz, with `project_modules`: the names of the modules
it imported from this repository (none, unless something is wrong). No
pickle is read or written.
"""

import os
import sys

import jax
from jax import export
import numpy as np

USAGE = ('usage: python -I deploy/stablehlo_main.py PROGRAM BATCHES.npz '
         'OUTPUTS.npz')


def project_modules(root: str) -> list[str]:
  """Imported modules whose files lie under `root` (this script aside).

  Installed packages do not count, even where the Python environment lies
  inside `root` (a virtual environment in the repository, say): files under
  `sys.prefix` or in a `site-packages` / `dist-packages` folder.
  """
  installed = tuple(os.path.abspath(p) + os.sep
                    for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
  found = []
  for name, module in list(sys.modules.items()):
    path = getattr(module, '__file__', None)
    if name == '__main__' or not path:
      continue
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    if (path.startswith(root + os.sep) and not path.startswith(installed)
        and 'site-packages' not in parts and 'dist-packages' not in parts):
      found.append(name)
  return sorted(found)


def main(argv: list[str]) -> int:
  """Runs PROGRAM on every batch of BATCHES.npz into OUTPUTS.npz.

  Args:
    argv: the script name, PROGRAM, BATCHES.npz, OUTPUTS.npz.

  Returns:
    The exit status: 0, or 2 for a wrong command line.
  """
  if len(argv) != 4:
    print(USAGE, file=sys.stderr)
    return 2
  program, batches, outputs = argv[1:]
  with open(program, 'rb') as f:
    exported = export.deserialize(f.read())
  call = jax.jit(exported.call)
  results = {}
  with np.load(batches, allow_pickle=False) as z:
    for i in range(int(z['count'])):
      results[f'output_{i}'] = np.asarray(call(z[f'x_{i}'], z[f'lengths_{i}']))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  np.savez(outputs, allow_pickle=False,
           project_modules=np.asarray(project_modules(root), str), **results)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
