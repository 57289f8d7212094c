"""A 2-layer GRU-64 speaker classifier shrunk to 1 layer by sensitivity.

  python train.py --config=configs/gru_layer_drop.py
  python train.py --config=configs/gru_layer_drop.py:layers=3,remove=2
  python train.py --config=configs/gru_layer_drop.py:smoke   # seconds

Trains gru_baseline's recipe as a `layers`-layer stack first (into
<workdir>/init, unless `--config.init_from` names a trained run of that
shape), ranks its tensors and layers by first-order sensitivity (sum of
|g w| over 8 training batches, `compression/layers.py`), removes the
`remove` least sensitive removable layers (in a stack on 12 input features
layer 0 cannot go: the layer above reads 64 units, not 12), and fine-tunes
the shrunk stack for 200 steps. The run's model, checkpoints and artifact
have `layers - remove` layers; results.json has `removed_layers`,
`layer_sensitivity`, `tensor_sensitivity` (and their rankings) and the
source's `source_test_accuracy`.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru); layers (of the
trained stack, default 2); remove (default 1).
"""

from compression import layers as layers_lib
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """gru_baseline's model with `layers` layers, then `remove` removed."""
  a = common.parse_arg(arg, smoke=False, cell='gru', layers=2, remove=1)
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'gru_layer_drop'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  # The trained stack's shape: the source run (init_config) is built with
  # it, and train.py shrinks the model by `remove` layers before training.
  c.model.layers = a.layers
  c.layer_drop = layers_lib.config(remove=a.remove)
  common.finetune(c, a.smoke, 3e-3, warmup_steps=10)
  if a.smoke:
    common.make_smoke(c)
  return c
