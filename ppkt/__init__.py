"""ppkt: contrastive pixel-to-point knowledge transfer (PPKT) for 3D pretraining."""
import os

# OpenMP threads that find no work sleep at once instead of spinning. With any other busy process on the cores (a
# DataLoader worker, a second run), spinning threads steal the time the working ones need: measured on 2 cores
# beside other runs, a demo pretraining step took 91 s spinning (ACTIVE) and 6.9 s with PASSIVE (one run each;
# `benchmarks/bench_contention.py` measures it). Read when the OpenMP runtime loads, i.e. at `import torch`: this only
# takes effect when ppkt is imported first (the `ppkt` command, torchrun -m ppkt.cli); set it yourself otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
