"""Issue 17 (the middle redesign): the attacks through the new registry cost
what they cost before. Runs labelflip's DeepFool and PGD (eps 0.3) on the
first 100 MNIST test images of a cw-mnist checkpoint with one torch thread
and prints, per attack, the sum of the L2 norms and of the forward passes, so
two versions can be compared for identical results and timed as whole
processes, in turn (A B A B ...), with a paired timer::

    PYTHONPATH=<old checkout>/src python benchmarks/redesign_overhead.py CKPT DATA_DIR
    PYTHONPATH=src python benchmarks/redesign_overhead.py CKPT DATA_DIR
"""

import sys

import torch

from labelflip.attacks import run_attack
from labelflip.data import load_dataset
from labelflip.models import load_checkpoint

torch.set_num_threads(1)
ckpt = sys.argv[1] if len(sys.argv) > 1 else "checkpoints/mnist-cw-mnist.safetensors"
data_dir = sys.argv[2] if len(sys.argv) > 2 else None
clf, _ = load_checkpoint(ckpt)
ds = load_dataset("mnist", "test", data_dir)
x, y = ds.x[:100], ds.y[:100]
for name, s in (("deepfool", {}), ("pgd", {"eps": 0.3})):
    r = run_attack(name, clf, x, y, s, generator=torch.Generator().manual_seed(0))
    print(name, float(r.l2.double().sum()), int(r.forwards.sum()))
