#!/usr/bin/env bash
# The align benchmarks on a CUDA GPU: (1) the in-process floor benchmark, (a)
# forward+backward, (b) the hand-written floor, (c) symtool's capture, (d) the whole align,
# with torch.cuda.synchronize() around every timing, and the ratios (c)/(b), (d)/(b),
# (a)/(b); (2) whole processes, symtool align against a floor process, on ResNet-18 (297
# images) and the MLPs (bench/align_process.py --device cuda).
#
#   bash bench/run_gpu.sh                    # widths 512 1024, N = 8192, 4 checkpoints, CNN
#   bash bench/run_gpu.sh --quick            # smoke run
#   bash bench/run_gpu.sh --widths 1024 2048 --samples 65536
#
# Extra arguments go to bench/align_floor.py (--quick to both). THREADS sets torch's CPU
# threads (default: all cores; the CPU side only feeds the GPU here).
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("run_gpu.sh: torch sees no CUDA device (torch " + torch.__version__ + ")")
print("# GPU:", torch.cuda.get_device_name())
EOF
T="${THREADS:-$(nproc)}"
python bench/align_floor.py --device cuda --threads "$T" "$@"
QUICK=()
for a in "$@"; do [[ "$a" == "--quick" ]] && QUICK=(--quick); done
python bench/align_process.py --device cuda --threads "$T" ${QUICK[@]+"${QUICK[@]}"}
