"""Reliability: damaged checkpoints, hostile workdirs, artifacts and data.

Covers: verified checkpoints (single-byte flips restore the identical state or
fall back with one line; NaN parameters are refused; a resume from a damaged
checkpoint ends bit-identical; eval and init_from fall back too), workdir
failures (read-only file system, permission denied, a file where a directory
belongs, a read-only finished run opened by eval, a full disk) as one line,
1,000 artifact mutants, the data-file and config cases, and metrics.jsonl /
results.json across reruns. One smoke run is trained per module and copied.
"""

import contextlib
import glob
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

import compression
from compression import export
from compression import pruning
from compression import quantization
from compression.errors import InputError
from configs import common
import data
import eval as eval_lib
import models
import checkpoints
import cli
import train

sys.path.insert(0, os.path.dirname(__file__))
import integrity_cases  # pylint: disable=g-import-not-at-top

ROOT = os.path.join(os.path.dirname(__file__), '..')
FLIPS = 16  # Single-byte flips of the latest checkpoint's files.
MUTANTS = 1000  # Artifact mutants.


def _restore(workdir, config, target=None):
  """restore_latest on a read-only manager (what eval.py does)."""
  if target is None:
    target = train.init_state(config, train.build(config))
  mngr = checkpoints.checkpoint_manager(workdir, config, read_only=True)
  try:
    return checkpoints.restore_latest(mngr, target, workdir)
  finally:
    mngr.close()


def _copy(base, dest):
  shutil.copytree(base['workdir'], dest)
  return str(dest)


def _recorded(workdir):
  with open(os.path.join(workdir, checkpoints.DIGESTS)) as f:
    return {int(k): v['fields'] for k, v in json.load(f).items()}


def _flip(path, pos, mask=0x10):
  with open(path, 'r+b') as f:
    f.seek(pos)
    b = f.read(1)[0]
    f.seek(pos)
    f.write(bytes([b ^ mask]))


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  """A finished smoke run: 4 steps, verified checkpoints at 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('integrity') / 'run')
  config = integrity_cases.small_config()
  results = train.train_and_evaluate(config, workdir)
  return {'workdir': workdir, 'config': config, 'results': results}


@pytest.fixture(scope='module')
def flips(base, tmp_path_factory):
  """Restores after each of FLIPS single-byte flips of checkpoint 4's files.

  Returns (file, position, step restored, identical to what that step saved,
  stderr lines) per flip; each flip is undone before the next.
  """
  workdir = _copy(base, tmp_path_factory.mktemp('flips') / 'run')
  recorded = _recorded(workdir)
  # Data files have random names: order them by folder and size instead, so
  # the same flips are made every time.
  files = sorted((f for f in glob.glob(os.path.join(
      workdir, 'checkpoints', '4', '**', '*'), recursive=True)
                  if os.path.isfile(f)),
                 key=lambda f: (os.path.dirname(f), os.path.getsize(f), f))
  # Most flips go to the data files (ocdbt 'd/' chunks), the rest anywhere.
  chunks = [f for f in files if os.sep + 'd' + os.sep in f]
  rng = np.random.default_rng(0)
  target = train.init_state(base['config'], train.build(base['config']))
  out = []
  for i in range(FLIPS):
    pool = chunks if i % 4 else files
    path = pool[int(rng.integers(len(pool)))]
    pos = int(rng.integers(os.path.getsize(path)))
    _flip(path, pos)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.path.join(workdir, 'stderr.txt'), 'w+') as err:
      os.dup2(err.fileno(), 2)
      try:
        with contextlib.redirect_stderr(err):
          state = _restore(workdir, base['config'], target)
      finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
      err.seek(0)
      lines = [l for l in err.read().splitlines() if l.strip()]
    step = int(state.step)
    out.append((path, pos, step, checkpoints.state_digest(state) == recorded[step],
                lines))
    _flip(path, pos)  # Undo.
  return out


# ----------------------------------------------------------------------------
# Verified checkpoints


def test_every_save_records_the_digest_of_what_it_saved(base):
  recorded = _recorded(base['workdir'])
  assert sorted(recorded) == [2, 4]
  assert set(recorded[4]) == set(train.TrainState._fields)
  state = _restore(base['workdir'], base['config'])
  assert int(state.step) == 4 and checkpoints.state_digest(state) == recorded[4]


def test_single_byte_flips_restore_the_same_state_or_fall_back(flips):
  fell_back = 0
  for path, pos, step, identical, lines in flips:
    where = f'{os.path.relpath(path)}@{pos}'
    # Never a different model: what was restored is exactly what was saved.
    assert identical, where
    assert step in (2, 4), where
    if step == 2:
      fell_back += 1
      assert len(lines) == 1, (where, lines)
      assert lines[0].startswith('warning: checkpoint ') and (
          'checkpoints/4 ' in lines[0] and 'using step 2' in lines[0]), lines
    else:
      assert not lines, (where, lines)
  assert fell_back >= 1  # The flips did damage something.


def test_resume_from_a_flipped_checkpoint_ends_bit_identical(
    base, flips, tmp_path, capfd):
  path, pos = next((p, q) for p, q, step, _, _ in flips if step == 2)
  workdir = _copy(base, tmp_path / 'run')
  _flip(os.path.join(workdir, os.path.relpath(path, _flip_root(path))), pos)
  results = train.train_and_evaluate(base['config'], workdir)
  assert results['resumed_from_step'] == 2
  assert results['params_sha256'] == base['results']['params_sha256']
  warnings = [l for l in capfd.readouterr().err.splitlines()
              if l.startswith('warning:')]
  assert len(warnings) == 1 and 'using step 2' in warnings[0]
  # The damaged checkpoint was set aside, never deleted.
  assert os.path.isdir(os.path.join(workdir, checkpoints.REJECTED, '4'))
  assert int(_restore(workdir, base['config']).step) == 4


def _flip_root(path):
  """The run directory a checkpoint file belongs to."""
  return path.split(os.sep + 'checkpoints' + os.sep)[0]


def test_eval_and_init_from_use_the_newest_checkpoint_that_verifies(
    base, flips, tmp_path, capfd):
  path, pos = next((p, q) for p, q, step, _, _ in flips if step == 2)
  workdir = _copy(base, tmp_path / 'run')
  _flip(os.path.join(workdir, os.path.relpath(path, _flip_root(path))), pos)
  report = eval_lib.evaluate(base['config'], workdir)
  assert report['step'] == 2
  err = capfd.readouterr().err
  assert 'checkpoints/4 ' in err and 'using step 2 instead' in err
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '4'))  # Kept.
  # init_from reads (and verifies) the parameters alone: with step 4's
  # files unreadable it takes step 2's, exactly as saved.
  source = _copy(base, tmp_path / 'source')
  os.remove(os.path.join(source, 'checkpoints', '4', 'default',
                         'manifest.ocdbt'))
  params = checkpoints.restore_verified_params(source, 'init_from')
  assert checkpoints.tree_digest(params) == _recorded(source)[2]['params']
  assert 'checkpoints/4 cannot be read' in capfd.readouterr().err


def test_a_cut_or_deleted_file_falls_back_with_one_line(base, tmp_path,
                                                       capfd):
  workdir = _copy(base, tmp_path / 'run')
  step_dir = os.path.join(workdir, 'checkpoints', '4', 'default')
  target = train.init_state(base['config'], train.build(base['config']))
  for damage, name in (('cut', '_METADATA'),
                       ('delete', 'manifest.ocdbt')):
    path = os.path.join(step_dir, name)
    saved = open(path, 'rb').read()
    if damage == 'cut':
      open(path, 'wb').write(saved[:len(saved) // 2])
    else:
      os.remove(path)
    state = _restore(workdir, base['config'], target)
    assert int(state.step) == 2, damage
    assert checkpoints.state_digest(state) == _recorded(workdir)[2]
    err = [l for l in capfd.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and 'checkpoints/4 cannot be restored' in err[0], err
    open(path, 'wb').write(saved)


def test_nan_parameters_in_a_checkpoint_are_refused(base, tmp_path, capfd):
  workdir = _copy(base, tmp_path / 'run')
  config = base['config']
  state = _restore(workdir, config)
  nan = state._replace(step=jnp.asarray(6, jnp.int32), params=jax.tree.map(
      lambda a: jnp.full_like(a, jnp.nan), state.params))
  mngr = checkpoints.checkpoint_manager(workdir, config)
  # Recorded honestly: the digest matches, the values are still refused.
  checkpoints.record_digest(mngr, workdir, 6, checkpoints.state_digest(nan))  # pylint: disable=protected-access
  mngr.save(6, args=ocp.args.StandardSave(nan), force=True)
  mngr.close()
  assert int(_restore(workdir, config).step) == 4
  assert 'checkpoints/6 parameters hold NaN or inf; using step 4' in (
      capfd.readouterr().err)


def test_no_checkpoint_that_verifies_is_one_line_and_deletes_nothing(
    base, tmp_path):
  workdir = _copy(base, tmp_path / 'run')
  with open(os.path.join(workdir, checkpoints.DIGESTS), 'w') as f:
    f.write('{}')
  with pytest.raises(InputError, match=r'^checkpoint .*checkpoints/4: has no '
                     r'digest .*none of the 1 earlier ones verifies') as e:
    train.train_and_evaluate(base['config'], workdir)
  assert '\n' not in str(e.value)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  with pytest.raises(InputError, match=r'^init_from: checkpoint .*has no '
                     'digest'):
    checkpoints.restore_verified_params(workdir, 'init_from')


# ----------------------------------------------------------------------------
# Files of a run across reruns


def test_rerun_of_a_finished_run_repeats_no_row_and_keeps_timing(
    base, tmp_path):
  workdir = _copy(base, tmp_path / 'run')
  metrics = os.path.join(workdir, 'metrics.jsonl')
  with open(metrics) as f:
    before = f.read()
  first = base['results']
  assert first['steps_per_second'] > 0 and first['compile_seconds'] > 0
  # Rerunning a finished run; then the same with results.json gone, which is
  # where a distillation run stopped in its scratch stage resumes its student.
  for drop_results in (False, True):
    if drop_results:
      os.remove(os.path.join(workdir, 'results.json'))
    again = train.train_and_evaluate(base['config'], workdir)
    with open(metrics) as f:
      assert f.read() == before
    on_disk = json.load(open(os.path.join(workdir, 'results.json')))
    for key in ('steps_per_second', 'compile_seconds'):
      assert on_disk[key] == again[key] == first[key], key
    assert again['params_sha256'] == first['params_sha256']
  rows = [json.loads(l) for l in before.splitlines()]
  keys = [(r['step'], r['split']) for r in rows]
  assert len(keys) == len(set(keys))
  # JSON everywhere: the first train row's undefined rate is null, not NaN.
  assert rows[0]['steps_per_second'] is None


# ----------------------------------------------------------------------------
# Config fields


@pytest.mark.parametrize('field, value, match', [
    ('optimizer.learning_rate', float('nan'), r'optimizer.learning_rate: must '
     'be a finite number, got nan'),
    ('optimizer.learning_rate', float('inf'), r'optimizer.learning_rate: must '
     'be a finite number, got inf'),
    ('optimizer.end_factor', float('nan'), r'optimizer.end_factor: must be a '
     'finite number'),
    ('optimizer.end_factor', float('-inf'), r'optimizer.end_factor: must be a '
     'finite number'),
    ('optimizer.weight_decay', float('nan'), r'optimizer.weight_decay: must'),
    ('optimizer.grad_clip_norm', float('inf'), r'optimizer.grad_clip_norm: '
     'must'),
    ('compression.hidden_state.cell_clip', float('nan'),
     r'compression.hidden_state.cell_clip: must be a finite number'),
    ('seed', -1, r'seed: must be an integer in \[0, 2\^32\), got -1'),
])
def test_non_finite_numbers_and_a_negative_seed_write_nothing(
    field, value, match, tmp_path):
  config = integrity_cases.small_config()
  *sections, key = field.split('.')
  node = config
  for s in sections:
    node = node[s]
  node[key] = value
  workdir = tmp_path / 'run'
  with pytest.raises(InputError, match='^' + match) as e:
    train.train_and_evaluate(config, str(workdir))
  assert '\n' not in str(e.value)
  assert not workdir.exists()


def test_optimizer_refuses_non_finite_values_on_its_own():
  cfg = integrity_cases.small_config().optimizer
  cfg.end_factor = float('nan')
  with pytest.raises(InputError, match=r'^optimizer.end_factor: must be a '
                     r'finite number >= 0, got nan$'):
    train.make_optimizer(cfg, 10)


# ----------------------------------------------------------------------------
# Workdir failures


def test_run_cli_turns_os_errors_into_one_line(tmp_path, capsys):
  blocker = tmp_path / 'file'
  blocker.write_text('')

  def makes_dir_under_file():
    os.makedirs(blocker / 'run')

  def orbax_like():  # A library error wrapping the OSError.
    try:
      raise OSError(28, 'No space left on device', str(tmp_path / 'ckpt'))
    except OSError as e:
      raise ValueError('save failed') from e

  for fn, match in ((makes_dir_under_file, 'Not a directory; a file stands '
                     'where a directory is needed'),
                    (orbax_like, 'No space left on device; the disk is full: '
                     'free space, then rerun the same command')):
    with pytest.raises(SystemExit) as e:
      cli.run_cli(fn)
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith('error: ' + str(tmp_path))
    assert match in err[0]
  assert cli.run_cli(lambda: 7) == 7


def _isolated_command():
  """unshare + setpriv: a private mount namespace, no permission override.

  The cases mount a read-only bind and a small tmpfs, which needs a mount
  namespace of our own. They run without CAP_DAC_OVERRIDE and
  CAP_DAC_READ_SEARCH, so the kernel applies the permission checks of an
  ordinary user (an unprivileged user id is no option where the Python
  interpreter lives in a directory only root may enter).
  """
  for tool in ('unshare', 'setpriv'):
    if not shutil.which(tool):
      pytest.skip(f'{tool} is not installed')
  cmd = ['unshare', '--mount', '--propagation', 'private']
  if os.geteuid():
    cmd.append('--map-root-user')
  probe = subprocess.run(cmd + ['sh', '-c', 'mount -t tmpfs tmpfs /mnt'],
                         capture_output=True, timeout=30)
  if probe.returncode:
    pytest.skip('cannot mount in a private mount namespace here: '
                + probe.stderr.decode().strip()[:200])
  return cmd


def test_workdir_failures_are_one_line_and_a_full_disk_resumes(base,
                                                              tmp_path):
  cmd = _isolated_command()
  root = tmp_path
  for d in ('ro', 'ro_src', 'noperm', 'tiny', 'ckfile'):
    (root / d).mkdir()
  shutil.copytree(base['workdir'], root / 'ro_src' / 'run')
  (root / 'noperm').chmod(0o555)
  (root / 'afile').write_text('')
  (root / 'ckfile' / 'checkpoints').write_text('')
  script = (
      f'mount -t tmpfs -o size=1m tmpfs {root}/tiny && '
      f'mount --bind {root}/ro_src {root}/ro && '
      f'mount -o remount,ro,bind {root}/ro && '
      'exec setpriv --bounding-set -dac_override,-dac_read_search '
      f'{sys.executable} {os.path.join(os.path.dirname(__file__), "integrity_cases.py")} '
      f'{root} {base["results"]["params_sha256"]}')
  out = subprocess.run(cmd + ['sh', '-c', script], capture_output=True,
                       text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert out.returncode == 0, out.stderr[-3000:]
  # Nothing escapes the cases: no traceback at exit either.
  assert 'Traceback' not in out.stderr and 'meta_path' not in out.stderr
  report = json.loads(out.stdout.strip().splitlines()[-1])
  expect = {
      'read_only_fs': f'{root}/ro/new: Read-only file system',
      'permission': f'{root}/noperm/run: Permission denied',
      'workdir_is_file': f'{root}/afile: ',
      'checkpoints_is_file': f'{root}/ckfile/checkpoints: Not a directory',
      'eval_read_only_run': f'{root}/ro/run/eval.json: Read-only file system',
      'full_disk': f'{root}/tiny/run/checkpoints: No space left on device',
  }
  for case, start in expect.items():
    got = report[case]
    assert got['code'] == 2, (case, got)
    assert len(got['stderr']) == 1, (case, got)
    assert got['stderr'][0].startswith('error: ' + start), (case, got)
  assert report['full_disk_kept_step'] == 2  # The verified checkpoint.
  assert report['full_disk_rerun']['code'] == 0
  assert report['full_disk_rerun_identical']


def test_sweep_and_reproduce_report_a_workdir_error_in_one_line(
    tmp_path, capsys):
  """Their command lines run `main` through cli.run_cli, as here."""
  import reproduce  # pylint: disable=g-import-not-at-top
  import sweep  # pylint: disable=g-import-not-at-top
  blocker = tmp_path / 'file'
  blocker.write_text('')
  for main, argv in (
      (sweep.main, [f'--config={ROOT}/configs/gru_prune.py:smoke',
                    f'--workdir={blocker / "sweep"}']),
      (reproduce.main, ['--smoke', '--tables_only',
                        f'--root={blocker / "reproduction"}'])):
    with pytest.raises(SystemExit) as e:
      cli.run_cli(lambda: main(argv))  # pylint: disable=cell-var-from-loop
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'error: {blocker}/'), err
    assert 'Not a directory' in err[0]


# ----------------------------------------------------------------------------
# Artifacts


def _split(blob):
  head_len = struct.unpack_from('<I', blob, 8)[0]
  return export.split(blob)[0], head_len


def _resign(blob, header=None, payload=None):
  """The artifact with a new header and/or payload and a valid checksum; a
  new header is written as version 1, which stores every header field."""
  old_header, old_payload = export.split(blob)
  version = 1 if header is not None else struct.unpack_from('<H', blob, 4)[0]
  return export.assemble(header or old_header,
                             old_payload if payload is None else payload,
                             version)


def _quantized_artifact(path):
  """A small pruned + 4-bit quantized GRU artifact (packed/Huffman blocks)."""
  info = {'num_classes': 3, 'input_dim': 5, 'max_len': 6}
  mc = common.base_config().model
  mc.hidden = 8
  model = models.make(mc, 'classification', info)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 6, 5)),
                      jnp.array([6, 3]))['params']
  cc = ml_collections.ConfigDict({'methods': 'prune,quantize'})
  cc.prune = pruning.config(schedule='oneshot', sparsity=0.75)
  cc.quantize = quantization.config(bits=4)
  comp = compression.make(cc)
  p, s = comp.init(params)
  p, s = comp.update(p, s, jax.tree.map(jnp.zeros_like, p), jnp.asarray(0))
  export.write(str(path), dense=jax.device_get(comp.apply(p, s)),
               exports=comp.export(p, s),
               methods=compression.method_names(cc), model_cfg=mc,
               task='classification', info=info, coding='huffman')
  return path.read_bytes()


HOSTILE = [-1, 0, 2 ** 40, 10 ** 5, 1.5, 'x', None, [], {}, True,
           float('nan'), float('inf'), 2 ** 63]
HEADER_FIELDS = [('model', 'hidden'), ('model', 'layers'),
                 ('model', 'embed_dim'), ('model', 'unroll'),
                 ('model', 'cell'), ('model', 'dtype'), ('info', 'max_len'),
                 ('info', 'input_dim'), ('info', 'num_classes'),
                 ('info', 'vocab_size'), ('task', None),
                 ('payload_bytes', None), ('hidden_state', None)]


def _mutant(rng, blob, header):
  """One damaged or hostile (re-signed) variant of an artifact."""
  kind = int(rng.integers(6))
  if kind == 0:  # Cut short.
    return blob[:int(rng.integers(len(blob)))]
  if kind == 1:  # Flipped bytes, checksum left as it was.
    arr = bytearray(blob)
    for j in rng.integers(0, len(blob), int(rng.integers(1, 4))):
      arr[j] ^= int(rng.integers(1, 256))
    return bytes(arr)
  h = json.loads(json.dumps(header))
  junk = HOSTILE[int(rng.integers(len(HOSTILE)))]
  if kind == 2:  # A header field the model is built from.
    section, key = HEADER_FIELDS[int(rng.integers(len(HEADER_FIELDS)))]
    if key is None:
      h[section] = junk
    else:
      h[section][key] = junk
    return _resign(blob, h)
  leaf = h['leaves'][int(rng.integers(len(h['leaves'])))]
  if kind == 3:  # Block descriptors, shapes and decoding nodes.
    choice = int(rng.integers(3))
    if choice == 0:
      blk = leaf['blocks'][int(rng.integers(len(leaf['blocks'])))]
      blk[int(rng.integers(5))] = junk
    elif choice == 1:
      leaf['shape'] = [junk] * int(rng.integers(1, 6))
    else:
      node = leaf['node']
      node[sorted(node)[int(rng.integers(len(node)))]] = junk
    return _resign(blob, h)
  if kind == 4:  # Repeated leaves or many layers: must not hang.
    if rng.integers(2):
      h['leaves'] = h['leaves'] * int(rng.integers(2, 5))
    else:
      h['model']['layers'] = int(rng.integers(2, 100001))
    return _resign(blob, h)
  # Non-finite (or huge) values written into the payload, re-signed.
  _, head_len = _split(blob)
  payload = bytearray(blob[12 + head_len:-32])
  value = [np.nan, np.inf, -np.inf, 3e38][int(rng.integers(4))]
  at = int(rng.integers(max(1, len(payload) // 4))) * 4
  payload[at:at + 4] = np.float32(value).tobytes()
  return _resign(blob, payload=bytes(payload[:len(payload)]))


def test_artifact_mutants_give_one_line_never_hang_never_non_finite(
    base, tmp_path):
  blobs = [open(os.path.join(base['workdir'], 'model.rnnc'), 'rb').read(),
           _quantized_artifact(tmp_path / 'q.rnnc')]
  headers = [_split(b)[0] for b in blobs]
  rng = np.random.default_rng(0)
  path = tmp_path / 'm.rnnc'
  errors = read = 0
  slowest = 0.0

  def hang(signum, frame):
    raise TimeoutError('artifact read took over 5 s')

  old = signal.signal(signal.SIGALRM, hang)
  try:
    for i in range(MUTANTS):
      which = i % 2
      data_ = _mutant(rng, blobs[which], headers[which])
      path.write_bytes(data_)
      t0 = time.perf_counter()
      signal.setitimer(signal.ITIMER_REAL, 5.0)
      try:
        art = export.read(str(path))
      except InputError as e:
        assert str(e).startswith('artifact m.rnnc: ') and '\n' not in str(e)
        errors += 1
      else:
        read += 1
        for leaf in jax.tree.leaves(art.params):
          assert np.all(np.isfinite(leaf)), i
      finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
      slowest = max(slowest, time.perf_counter() - t0)
  finally:
    signal.signal(signal.SIGALRM, old)
  assert errors + read == MUTANTS and errors >= MUTANTS // 2
  assert slowest < 5.0


def test_artifact_header_limits_are_enforced(base, tmp_path):
  blob = open(os.path.join(base['workdir'], 'model.rnnc'), 'rb').read()
  header = _split(blob)[0]
  path = tmp_path / 'h.rnnc'
  cases = [(('model', 'layers'), 100000, r'model.layers 100000 outside 1..64'),
           (('model', 'hidden'), 2 ** 40, r'model.hidden 1099511627776 '
            r'outside 1..16384'),
           (('info', 'max_len'), -3, r'info.max_len -3 outside'),
           (('info', 'input_dim'), 1.5, r'info.input_dim 1.5 is not finite|'
            r'info.input_dim 1.5 outside'),
           (('info', 'std'), float('nan'), r'info.std nan is not finite')]
  for (section, key), value, match in cases:
    h = json.loads(json.dumps(header))
    h[section][key] = value
    path.write_bytes(_resign(blob, h))
    with pytest.raises(InputError, match=r'^artifact h.rnnc: malformed \('
                       + match):
      export.read(str(path))
  h = json.loads(json.dumps(header))
  h['leaves'] = h['leaves'] * 1000
  path.write_bytes(_resign(blob, h))
  with pytest.raises(InputError, match=r'at most 4096 leaves'):
    export.read(str(path))
  # NaN weights, correctly signed, are refused too.
  _, head_len = _split(blob)
  payload = bytearray(blob[12 + head_len:-32])
  payload[0:4] = np.float32(np.nan).tobytes()
  path.write_bytes(_resign(blob, payload=bytes(payload)))
  with pytest.raises(InputError, match=r'holds NaN or inf'):
    export.read(str(path))


def test_eval_artifact_json_never_holds_nan(base, tmp_path):
  blob = open(os.path.join(base['workdir'], 'model.rnnc'), 'rb').read()
  _, head_len = _split(blob)
  payload = np.frombuffer(blob[12 + head_len:-32], np.uint8).copy()
  # Huge (finite) weights: every logit overflows, so the loss is NaN.
  floats = payload[:len(payload) // 4 * 4].view('<f4')
  floats[:] = np.where(floats != 0, np.float32(3e38), floats)
  path = tmp_path / 'huge.rnnc'
  path.write_bytes(_resign(blob, payload=payload.tobytes()))
  report = eval_lib.evaluate_artifact(str(path))
  text = open(str(path) + '.eval.jax.json').read()

  def refuse(name):
    raise AssertionError(f'{name} in JSON')

  on_disk = json.loads(text, parse_constant=refuse)
  assert on_disk['test_loss'] is None and report['test_loss'] is None
  json.dumps(report, allow_nan=False)


# ----------------------------------------------------------------------------
# Data files


def _load(**kwargs):
  return data.load({'name': 'file', 'kwargs': kwargs})


def _good(n=12, classes=3):
  rng = np.random.default_rng(0)
  return {'x': rng.standard_normal((n, 4, 2)).astype(np.float32),
          'y': np.arange(n) % classes}


def test_raw_pickle_member_is_one_line_and_never_unpickled(tmp_path):
  path = tmp_path / 'p.npz'
  np.savez(path, **_good())
  with zipfile.ZipFile(path, 'a') as z:
    # A pickle protocol-2 stream: never loaded.
    z.writestr('lengths.npy', b'\x80\x02cos\nsystem\nq\x00.')
  with pytest.raises(InputError, match=r"^data file .*p.npz: 'lengths' is "
                     r'not a .npy array \(a pickle or other data\)') as e:
    _load(path=str(path))
  assert 'allow_pickle' not in str(e.value)


def _npy_header(shape):
  """The magic and header of a float32 .npy file of `shape` (no data)."""
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      buf, {'descr': '<f4', 'fortran_order': False, 'shape': shape})
  return buf.getvalue()


def test_npy_header_declaring_huge_sizes_is_one_line(tmp_path):
  huge = (1 << 20, 1 << 20, 2 ** 11)  # 8 PiB of float32.
  member = _npy_header(huge) + b'\0' * 64
  path = tmp_path / 'h.npz'
  np.savez(path, y=np.zeros(3))
  with zipfile.ZipFile(path, 'a') as z:
    z.writestr('x.npy', member)
  with pytest.raises(InputError, match=r"^data file .*h.npz: 'x' declares "
                     r'shape \(1048576, 1048576, 2048\) of float32 '
                     r'\(9007199254740992 bytes\) but holds 64 bytes'):
    _load(path=str(path))
  # A bare .npy under an .npz name is refused before numpy reads it.
  bare = tmp_path / 'bare.npz'
  bare.write_bytes(member)
  with pytest.raises(InputError, match=r'bare.npz: holds a single .npy '
                     r'array, not an .npz archive'):
    _load(path=str(bare))


@pytest.mark.parametrize('content', [
    b'\x80\x04\x95garbage', b'hello world\n', b'PK\x03\x04broken zip',
    bytes(range(256))])
def test_garbage_files_are_one_line_without_pickle_advice(content, tmp_path):
  path = tmp_path / 'g.npz'
  path.write_bytes(content)
  with pytest.raises(InputError, match=r'^data file .*g.npz: not a readable '
                     r'.npz archive') as e:
    _load(path=str(path))
  assert 'pickle' not in str(e.value).lower() and '\n' not in str(e.value)


def test_implausible_inferred_class_count_is_refused(tmp_path):
  arrays = _good()
  arrays['y'] = arrays['y'].copy()
  arrays['y'][5] = 10 ** 6
  path = tmp_path / 'c.npz'
  np.savez(path, **arrays)
  with pytest.raises(InputError, match=r'c.npz: label 1000000 implies '
                     r'1000001 classes, more than the \d+ training rows'):
    _load(path=str(path))
  # A declared count is checked against the labels.
  np.savez(path, num_classes=np.int64(3), **arrays)
  with pytest.raises(InputError, match=r"c.npz: 'y' has label 1000000 "
                     r'outside \[0, 3\)'):
    _load(path=str(path))


def test_class_only_in_the_test_split_is_refused_by_name(tmp_path):
  train_path, test_path = tmp_path / 'tr.npz', tmp_path / 'te.npz'
  np.savez(train_path, x=np.zeros((4, 3, 1)), y=np.array([0, 1, 0, 1]),
           num_classes=np.int64(3))
  np.savez(test_path, x=np.zeros((2, 3, 1)), y=np.array([0, 2]),
           num_classes=np.int64(3))
  with pytest.raises(InputError, match=r'te.npz: class 2 is in the test '
                     'split but never in training'):
    _load(path=str(train_path), test_path=str(test_path))
  header = '@problemName T\n@dimensions 1\n@classLabel true cat dog owl\n@data\n'
  (tmp_path / 'a.ts').write_text(header + '1,2:cat\n3:dog\n4,5:cat\n')
  (tmp_path / 'b.ts').write_text(header + '1,2:owl\n')
  with pytest.raises(InputError, match=r"b.ts: class 'owl' is in the test "
                     'split but never in training'):
    _load(path=str(tmp_path / 'a.ts'), test_path=str(tmp_path / 'b.ts'))


def test_ts_class_labels_are_the_declared_classes(tmp_path):
  header = '@problemName T\n@dimensions 1\n@classLabel true a b c\n@data\n'
  (tmp_path / 'a.ts').write_text(header + '1,2:a\n3:b\n4,5:a\n6:b\n')
  (tmp_path / 'b.ts').write_text(header + '1,2:b\n')
  ds = _load(path=str(tmp_path / 'a.ts'), test_path=str(tmp_path / 'b.ts'))
  assert ds.info['num_classes'] == 3  # As declared, not as seen.
  (tmp_path / 'c.ts').write_text(header + '1,2:a\n3:z\n')
  with pytest.raises(InputError, match=r"c.ts: line 6: class label 'z' is "
                     r'not listed by @classLabel'):
    _load(path=str(tmp_path / 'c.ts'))
  (tmp_path / 'd.ts').write_text(
      '@dimensions 1\n@classLabel true a b a\n@data\n1:a\n')
  with pytest.raises(InputError, match=r"d.ts: @classLabel lists 'a' twice"):
    _load(path=str(tmp_path / 'd.ts'))
