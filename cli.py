"""Command line of the entry points: flags, config loading, one-line errors.

train.py and eval.py share `--config`, `--workdir` and `--cpu_devices`
(defined here); only train.py adds the multi-host flags
(`define_distributed_flags`), so eval.py does not accept them.

`parse_flags` is the absl flags parser of every entry point
(`app.run(main, flags_parser=cli.parse_flags)`): a `--config.<path>=value`
override naming a field the recipe does not declare becomes one error line
that lists the valid fields at that level (ml_collections would raise a
multi-line traceback), and any other flag error is one line too; both exit
with status 2 before anything is built. `run_cli` runs an entry point's work
and turns bad input, NaN stops and workdir errors into one line and exit
status 2.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import sys
import threading
from typing import Any, Sequence

from absl import flags
import jax
from ml_collections import config_flags

from compression.errors import InputError
import data

CONFIG_PREFIX = '--config.'


def override_keys(argv: Sequence[str]) -> list[str]:
  """The dotted config paths that `--config.<path>=value` flags set."""
  keys = []
  for a in argv:
    if a.startswith(CONFIG_PREFIX):
      keys.append(a[len(CONFIG_PREFIX):].partition('=')[0])
  return keys


def _recipe(argv: Sequence[str]) -> Any:
  """The ConfigDict that `--config=file.py[:arg]` names, or None."""
  spec = None
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      spec = a[len('--config='):]
    elif a == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  if not spec:
    return None
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    return None
  module_spec = importlib.util.spec_from_file_location('_recipe', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def unknown_override(config: Any, keys: Sequence[str]) -> str | None:
  """The first override path that `config` does not declare, as a message.

  Args:
    config: the recipe's ConfigDict.
    keys: dotted paths (`data.kwargs.path`).

  Returns:
    '--config.<path>: unknown field ...; valid: ...', or None when every
    path exists.
  """
  for key in keys:
    node, walked = config, []
    for part in key.split('.'):
      fields = node.keys() if hasattr(node, 'keys') else None
      if fields is None or part not in fields:
        where = '.'.join(walked) or 'config'
        valid = ', '.join(sorted(fields)) if fields is not None else (
            f'none ({where} is a value, not a section)')
        return (f'{CONFIG_PREFIX}{key}: unknown field {part!r} in {where}; '
                f'valid: {valid}')
      node = node[part]
      walked.append(part)
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with one-line errors (exit status 2).

  Args:
    argv: the full command line (program name first).

  Returns:
    The arguments that are not flags, as `flags.FLAGS(argv)` returns them.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _exit(str(e))
  except (AttributeError, KeyError, TypeError, ValueError, InputError) as e:
    # ml_collections raises these for an override of an undeclared field.
    message = None
    try:
      config = _recipe(argv)
      if config is not None:
        message = unknown_override(config, override_keys(argv))
    except Exception:  # pylint: disable=broad-except
      pass  # The recipe itself fails; report the original error below.
    if message is None:
      first = str(e).strip().strip('\'"').splitlines() or [type(e).__name__]
      message = f'command line: {first[0]}'
    _exit(message)
  raise AssertionError('unreachable')


def _exit(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


# ----------------------------------------------------------------------------
# Flags

CONFIG_FLAG = config_flags.DEFINE_config_file(
    'config', None, 'Recipe file, e.g. configs/gru_baseline.py:smoke.',
    lock_config=True)
WORKDIR_FLAG = flags.DEFINE_string(
    'workdir', None, 'Run directory; default runs/<config name>.')
CPU_DEVICES_FLAG = flags.DEFINE_integer(
    'cpu_devices', None, 'On CPU: split the host into this many JAX devices '
    'and train data-parallel over them (0 = one per core this process may '
    'use). Unset: $JAX_NUM_CPU_DEVICES, else JAX\'s default of 1 (the '
    'XLA_FLAGS setting --xla_force_host_platform_device_count works too; '
    'this flag overrides it). data.batch_size must divide by the count. No '
    'effect on GPU/TPU.')

# train.py's multi-host flags; None until `define_distributed_flags`.
DISTRIBUTED_FLAG = None
COORDINATOR_FLAG = None
NUM_PROCESSES_FLAG = None
PROCESS_ID_FLAG = None
DISTRIBUTED_TIMEOUT_FLAG = None


def define_distributed_flags() -> None:
  """Defines train.py's multi-host flags (only train.py calls it, so eval.py
  and the benchmarks, which import train, do not accept them)."""
  global DISTRIBUTED_FLAG, COORDINATOR_FLAG, NUM_PROCESSES_FLAG
  global PROCESS_ID_FLAG, DISTRIBUTED_TIMEOUT_FLAG
  DISTRIBUTED_FLAG = flags.DEFINE_bool(
      'distributed', False, 'Multi-host: call jax.distributed.initialize() first '
      '(SLURM, Open MPI, Cloud TPU and GKE are detected; elsewhere also give '
      '--coordinator, --num_processes, --process_id).')
  COORDINATOR_FLAG = flags.DEFINE_string(
      'coordinator', None, 'host:port of process 0 (default '
      '$JAX_COORDINATOR_ADDRESS).')
  NUM_PROCESSES_FLAG = flags.DEFINE_integer(
      'num_processes', None, 'Processes in the job.')
  PROCESS_ID_FLAG = flags.DEFINE_integer(
      'process_id', None, 'This process, 0..num_processes-1.')
  DISTRIBUTED_TIMEOUT_FLAG = flags.DEFINE_integer(
      'distributed_timeout', 300, 'Seconds --distributed waits for the '
      'coordinator and every process to join; then one error line, exit 2.')


def initialize_distributed_from_flags() -> None:
  """Joins the multi-process job that --distributed asks for, if it does."""
  if DISTRIBUTED_FLAG is not None and DISTRIBUTED_FLAG.value:
    run_cli(lambda: initialize_distributed(
        COORDINATOR_FLAG.value, NUM_PROCESSES_FLAG.value,
        PROCESS_ID_FLAG.value, DISTRIBUTED_TIMEOUT_FLAG.value))


def first_line(e: BaseException) -> str:
  """'Type: first line of the message' of an exception (200 characters)."""
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0][:200]}' if text else type(e).__name__


def usable_cores() -> int:
  """Cores this process may run on (its affinity mask, else the CPU count)."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


def configure_cpu_devices(count: int) -> int:
  """Sets how many devices the CPU backend offers; call before any JAX use.

  XLA:CPU runs the recurrence's small per-step operations one after another:
  a scan of (64, 128) x (128, 384) products keeps one core busy however many
  there are. Several CPU devices, one per core, each with its share of the
  batch, put the other cores to work (README, "Speed and scale").

  Args:
    count: devices wanted (>= 1), or 0 for one per usable core.

  Returns:
    The count configured.

  Raises:
    InputError: a negative count.
  """
  if count < 0:
    raise InputError(f'--cpu_devices: must be >= 0 (0 = one per core), got '
                     f'{count}')
  count = count or usable_cores()
  jax.config.update('jax_num_cpu_devices', count)
  return count


def configure_cpu_devices_from_flag() -> None:
  """Applies --cpu_devices when given (bad input: one line, exit 2).

  Entry points call it first thing in `main`, before any device use.
  """
  if CPU_DEVICES_FLAG.value is not None:
    run_cli(lambda: configure_cpu_devices(CPU_DEVICES_FLAG.value))


def config_from_flags() -> Any:
  """The --config ConfigDict with its --config.* overrides recorded.

  Choosing another dataset on the command line (`--config.data.name=file`)
  drops the recipe's keyword arguments that the new dataset does not take
  (JapaneseVowels' `normalize` is kept for `file`, which takes it too); the
  keywords given on the command line are always kept, and `data.load`
  refuses those the dataset does not take.
  """
  config = CONFIG_FLAG.value
  overrides = [a for a in sys.argv[1:] if a.startswith('--config.')]
  given = set(override_keys(overrides))
  with config.unlocked():
    config.overrides = ' '.join(overrides)
    if 'data.name' in given and config.data.name in data.DATASETS:
      takes = data.default_kwargs(config.data.name)
      for key in config.data.kwargs.keys():
        if key not in takes and f'data.kwargs.{key}' not in given:
          config.data.kwargs[key] = None
  return config


def initialize_distributed(coordinator: str | None,
                           num_processes: int | None,
                           process_id: int | None, timeout: int) -> None:
  """Joins a multi-process job (`jax.distributed.initialize`), or says why not.

  Every process calls it first, before any device use. Where a cluster
  environment (SLURM, Open MPI, Cloud TPU, GKE) is detected, the three may be
  None.

  Args:
    coordinator: host:port of process 0, or None ($JAX_COORDINATOR_ADDRESS
      or the cluster's).
    num_processes: processes in the job, or None.
    process_id: this process, 0..num_processes-1, or None.
    timeout: seconds to wait for the coordinator and every process.

  Raises:
    InputError: a bad flag. A coordinator that never answers (or a process
      that never joins) ends this process after `timeout` seconds with one
      error line and exit status 2: JAX itself aborts the process from C++
      on that error, so a timer says it first.
  """
  if timeout < 1:
    raise InputError(f'--distributed_timeout: must be >= 1 second, got '
                     f'{timeout}')
  if num_processes is not None and num_processes < 1:
    raise InputError(f'--num_processes: must be >= 1, got {num_processes}')
  if process_id is not None and num_processes is not None and not (
      0 <= process_id < num_processes):
    raise InputError(f'--process_id: must be in 0..{num_processes - 1}, got '
                     f'{process_id}')
  host, _, port = (coordinator or '').rpartition(':')
  if coordinator is not None and not (host and port.isdigit()):
    raise InputError(f'--coordinator: expected host:port, got '
                     f'{coordinator!r}')
  where = coordinator or os.environ.get('JAX_COORDINATOR_ADDRESS',
                                        'the detected coordinator')

  def give_up() -> None:
    print(f'error: --coordinator: {where} did not answer, or not every '
          f'process joined, within {timeout} s (--distributed_timeout); is '
          'process 0 running and its port reachable from here?',
          file=sys.stderr, flush=True)
    os._exit(2)  # pylint: disable=protected-access

  timer = threading.Timer(timeout, give_up)
  timer.daemon = True
  timer.start()
  try:
    # JAX's own deadline comes later than the timer, which reports first.
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=timeout + 60)
  except (ValueError, RuntimeError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise InputError(f'--distributed: {first} (outside SLURM, Open MPI, '
                     'Cloud TPU and GKE give --coordinator=host:port, '
                     '--num_processes and --process_id)') from e
  finally:
    timer.cancel()


# What to do about an OSError of the workdir, by errno.
_OS_ADVICE = {
    errno.EACCES: 'no permission: fix its permissions or choose another '
                  '--workdir',
    errno.EPERM: 'not permitted: fix its permissions or choose another '
                 '--workdir',
    errno.EROFS: 'the file system is read-only: choose a writable --workdir',
    errno.ENOTDIR: 'a file stands where a directory is needed: move it away '
                   'or choose another --workdir',
    errno.EEXIST: 'a file stands where a directory is needed: move it away '
                  'or choose another --workdir',
    errno.EISDIR: 'a directory stands where a file is needed: move it away',
    errno.ENOSPC: 'the disk is full: free space, then rerun the same command '
                  '(it resumes from the last verified checkpoint)',
    errno.EDQUOT: 'the disk quota is exceeded: free space, then rerun the '
                  'same command (it resumes from the last verified '
                  'checkpoint)',
    errno.ENOENT: 'not found: check the path',
}


def describe_os_error(e: OSError) -> str:
  """One line for a file-system error: the path, the cause, what to do."""
  why = e.strerror or str(e) or type(e).__name__
  advice = _OS_ADVICE.get(e.errno, 'check the path, its permissions and the '
                          'free space, then rerun')
  path = f'{e.filename}: ' if e.filename else ''
  return ' '.join(f'{path}{why}; {advice}'.split())


def _os_error_in(e: BaseException) -> OSError | None:
  """The OSError behind an exception (its cause chain), if any."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


def as_os_error(e: BaseException, path: str) -> OSError:
  """An OSError for `path` from an exception that orbax or tensorstore raised.

  The errno comes from an OSError in the cause chain, else from a system
  error text in the message (tensorstore reports 'No space left on device'
  inside a ValueError), else EIO.
  """
  inner = _os_error_in(e)
  if inner is not None and inner.errno:
    return type(inner)(inner.errno, inner.strerror or str(inner),
                       inner.filename or path)
  text = str(e)
  for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
               errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.ENOENT):
    if os.strerror(code) in text:
      return OSError(code, os.strerror(code), path)
  return OSError(errno.EIO, f'cannot be written ({first_line(e)})', path)


def run_cli(fn) -> Any:
  """Runs `fn()` and returns its value; errors the user can fix exit 2.

  Bad input, NaN stops and workdir errors (permissions, a read-only file
  system, not a directory, a full disk; also when orbax or absl wrap the
  OSError) become one line on stderr that names the path and what to do.
  """
  try:
    return fn()
  except (InputError, FloatingPointError) as e:
    message = str(e)
  except Exception as e:  # pylint: disable=broad-except
    inner = _os_error_in(e)
    if inner is None:
      raise
    message = describe_os_error(inner)
  print(' '.join(f'error: {message}'.split()), file=sys.stderr, flush=True)
  sys.exit(2)
