"""Published configurations of the small LLMs edgescale's benchmarks build random-weight
checkpoints from (never downloaded). The values, each with its source, now live in the package
(:mod:`edgescale.bench.architectures`, also what ``edgescale predict --arch`` reads); copies here,
so a benchmark that edits one cannot change another's. Random weights serve time, memory and
speed measurements only."""

from edgescale.bench.architectures import LLAMA32_1B as _LLAMA32_1B
from edgescale.bench.architectures import QWEN25_05B as _QWEN25_05B
from edgescale.bench.architectures import SMOLLM2_135M as _SMOLLM2_135M
from edgescale.bench.architectures import TINYLLAMA_1_1B as _TINYLLAMA_1_1B

SMOLLM2_135M = dict(_SMOLLM2_135M)
QWEN25_05B = dict(_QWEN25_05B)
TINYLLAMA_1_1B = dict(_TINYLLAMA_1_1B)
LLAMA32_1B = dict(_LLAMA32_1B)
