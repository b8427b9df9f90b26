"""seqkv_research: research prototype of the lossy sequential KV codec (issue "sequential codec").

Not a production codec: float32 numpy/torch, an entropy ESTIMATE instead of a coded bitstream. It
exists to measure which tools pay (per layer) before the C++ codec is written; see
docs/seq_codec_design.md for the design and the numbers.

Modules: data (dumps, RoPE undo/redo, model side information), profile (calibration: predictors,
KLT bases, sensitivities), codec (closed-loop encoder/decoder, entropy estimate, rate control),
experiments (the measurements behind the design doc).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
