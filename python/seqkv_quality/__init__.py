"""seqkv_quality: does a model still say the same thing when its KV cache went through a codec?

Plain PyTorch (no transformers, no safetensors package): a float32 Llama forward that continues from
an external KV cache (model.py), a dump reader and checks (safetensors.py, dump.py), the KL / top-1
/ cross-entropy comparison (metrics.py), a self-check against the dumps (selfcheck.py), and the
command line that seqkvctl calls (__main__.py; interface in python/README.md).
"""

import os

# libgomp's default wait policy spins between parallel regions; a forward runs hundreds of short
# ones, and on a machine that is also building (2 cores, several jobs) spinning threads steal each
# other's time: measured 5-10 s per pair instead of 0.9 s. Passive waiting removed that (measured on
# the busy machine only; an idle one could not be had). It only takes effect if set before torch
# (libgomp) loads, hence here; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .dump import KvDump, load_dump
from .errors import QualityError
from .metrics import PairMetrics, QualityEvaluator, distribution_metrics, mean_metrics
from .model import LlamaConfig, LlamaModel
from .safetensors import read_safetensors, write_safetensors
from .selfcheck import run_selfcheck

__all__ = ["KvDump", "LlamaConfig", "LlamaModel", "PairMetrics", "QualityError",
           "QualityEvaluator", "distribution_metrics", "load_dump", "mean_metrics",
           "read_safetensors", "run_selfcheck", "write_safetensors"]
