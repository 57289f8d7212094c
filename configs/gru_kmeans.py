"""K-means weight sharing (Deep Compression) of the GRU baseline's kernels.

  python train.py --config=configs/gru_kmeans.py              # 16 clusters
  python train.py --config=configs/gru_kmeans.py:clusters=4 --workdir=runs/k4
  python train.py --config=configs/gru_kmeans.py:smoke        # seconds

Trains `gru_baseline` into <workdir>/init first when missing, clusters every
kernel (`.*kernel`) into `clusters` shared values (linear init, Lloyd), then
fine-tunes the centroids with the cluster indices fixed.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); clusters
(2..256, default 16).
"""

from compression import clustering
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """Cluster the float baseline, then fine-tune the codebooks."""
  a = common.parse_arg(arg, cell='gru', smoke=False, clusters=16)
  c = gru_baseline.get_config()
  c.name = 'gru_kmeans'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.compression.methods = 'kmeans'
  c.compression.kmeans = clustering.config(clusters=a.clusters)
  # The float model is already fit (train loss ~1e-3); at 1e-3 the centroids
  # overfit (test loss 0.051 -> 0.083, accuracy 0.987 -> 0.981, see the
  # report); 1e-4 only nudges them.
  common.finetune(c, a.smoke, 1e-4)
  if a.smoke:
    common.make_smoke(c)
  return c


def sweep(arg=None):
  """The weight-sharing grid of REPRODUCTION.md (codebook size sweep).

  Per seed: the float baseline (stage 0), then k-means weight sharing of its
  kernels with 2, 4, 8, 16 and 32 clusters (1 to 5-bit indices). Pruning
  followed by sharing is `configs/deep_compression.py`'s grid.

  Args:
    arg: `smoke` (a tiny grid of smoke runs), `seeds=N` (default 3;
      1 under smoke).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  return common.finetune_grid(arg, 'clusters', (2, 4, 8, 16, 32), (4,),
                              'kmeans', 'k-means sharing')
