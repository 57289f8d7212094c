"""Shared test setup: CPU only, and one compilation cache for the session.

Most of the suite's time is XLA compiling the same few tiny programs (the
smoke GRU's training step, its evaluation) again in every test and in every
`train.py` / `eval.py` subprocess. JAX's persistent compilation cache, in a
directory made fresh for this pytest session (so nothing carries over from
another checkout or version), lets each program compile once. A cached
executable is the one the compiler would build, so every result is
unchanged (resume tests compare parameter digests bit for bit). The
variables are set before anything imports JAX, and subprocesses inherit
them.
"""

import os
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(
      prefix='jax_cache_')
  # Cache every program, however small or quick to compile.
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
