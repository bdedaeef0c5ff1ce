#!/usr/bin/env bash
# The GPU check (docs/gpu.md#the-gpu-check): in one job of at most 10 minutes on a bare GPU
# machine whose Python has torch and Lightning but not Hydra, from the repository root:
#
#   bash scripts/gpu_check.sh OUT [--commit HASH] [--seconds 570] [--stages "install tests ..."]
#   bash scripts/gpu_check.sh OUT --rehearse     # a CPU machine: every stage at toy size
#
# Stages, in this order, each time-boxed against the whole budget (--seconds), each one's
# results written as they come (a stage cut short leaves what it finished):
#   install  hydra-core, omegaconf, antlr4 and setuptools from ./wheels (git-ignored; fill it with
#            the command in docs/gpu.md and carry it with the tree), then this package, editable,
#            without dependencies (console scripts included)
#   graphed  pytest -m gpu tests/gpu/test_cuda_graphs.py: eager vs captured over 20 steps, exact
#            resume with model.cuda_graph=true
#   eager    benchmark rows of the eager step, batch 256 and 512, bf16, data on the device
#   graph    the same with model.cuda_graph=true (the bare step captured too)
#   graph4   batch 256 with model.cuda_graph=true model.gp_every=4 (compiled's training)
#   tests    pytest -m gpu on the rest of tests/gpu
#   compiled model.compile=true model.compile_mode=reduce-overhead model.gp_every=4 rows
#   report   OUT/bench.json (every row; launches per step and GPU busy share at batch 256;
#            FLOP/s against the bf16 peak measured here) and OUT/summary.json (each stage's exit
#            code and seconds, the tests' counts); the table is printed last
# OUT gets at most 6 files: log.txt, pytest.txt, pytest_graphed.xml, pytest_tests.xml,
# bench.json, summary.json.  With --rehearse the install goes into a fresh venv that sees this
# environment's packages behind its own (Hydra comes from the wheels) and the later stages run
# in it; the tests are collected and skipped (no CUDA), the benchmark runs at batch 8 for 2 steps
# and the graph rows say why they cannot run.
set -u -o pipefail

usage() {
    echo "usage: bash scripts/gpu_check.sh OUT [--rehearse] [--commit HASH] [--seconds N]" \
        "[--stages \"install graphed eager graph graph4 tests compiled report\"]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
case "$1" in -*) usage ;; esac
OUT=$1
shift
REHEARSE=0 COMMIT=unknown BUDGET= STAGES="install graphed eager graph graph4 tests compiled report"
while [ $# -gt 0 ]; do
    case "$1" in
    --rehearse) REHEARSE=1 ;;
    --commit) [ $# -ge 2 ] || usage; COMMIT=$2; shift ;;
    --seconds) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || usage; BUDGET=$2; shift ;;
    --stages) [ $# -ge 2 ] || usage; STAGES=$2; shift ;;
    *) echo "gpu_check: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
for s in $STAGES; do
    case " install graphed eager graph graph4 tests compiled report " in
    *" $s "*) ;;
    *) echo "gpu_check: unknown stage '$s'; stages: install graphed eager graph graph4" \
        "tests compiled report" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
exec > >(tee -a "$OUT/log.txt") 2>&1
START=$(date +%s)
export PYTHONUNBUFFERED=1

SCALE=1 # stage limits x SCALE: a CPU rehearsal on a busy machine takes longer than the GPU
if [ "$REHEARSE" = 1 ]; then
    SCALE=4
    BUDGET=${BUDGET:-2400}
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    BENCH="--batch-sizes 8 --steps 2 --warmup 1 --profile-batch 8 --profile-steps 2
        --set data.channels=1 model.mi_units=32 model.prior_hidden=[32,16]
        callbacks.knn.every_n_epochs=0"
    GP4_BATCH=8
else
    PY=${PYTHON:-python3}
    BENCH="--batch-sizes 256 512 --steps 200 --warmup 20 --profile-batch 256 --profile-steps 10"
    GP4_BATCH=256
fi
BUDGET=${BUDGET:-570}
export PY WORK OUT COMMIT REHEARSE BENCH # for the stages, which run in child shells (timeout)
echo "gpu_check: $(date -u +%FT%TZ) commit $COMMIT, python $PY, budget ${BUDGET}s," \
    "rehearse=$REHEARSE, stages: $STAGES"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader

printf 'stage\trc\tseconds\n' >"$WORK/stages.tsv"
# stage NAME LIMIT CMD...: run CMD for at most LIMIT seconds and never past the budget
stage() {
    local name=$1 limit=$(($2 * SCALE)) left t0 rc
    shift 2
    case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
    left=$((START + BUDGET - $(date +%s) - 15))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        echo "== $name: skipped, ${left}s of the budget left"
        printf '%s\tskipped\t0\n' "$name" >>"$WORK/stages.tsv"
        return 0
    fi
    echo "== $name (at most ${limit}s)"
    t0=$(date +%s)
    timeout -k 10 "$limit" bash -c '"$@"' _ "$@"
    rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - t0))s"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$WORK/stages.tsv"
}

install() {
    local wheels
    wheels=$(ls wheels/*.whl 2>/dev/null)
    if [ -z "$wheels" ]; then
        echo "gpu_check: no wheels in ./wheels; fill it with the pip wheel command of" \
            "docs/gpu.md and copy it with the tree"
        return 2
    fi
    local py=$PY
    if [ "$REHEARSE" = 1 ]; then
        # a fresh venv that sees this environment's packages (torch, Lightning, PyYAML: what the
        # GPU image has) after its own, so Hydra comes from the wheels as it will there
        "$PY" -m venv "$WORK/venv" || return 1
        py=$WORK/venv/bin/python
    fi
    # shellcheck disable=SC2086  # one argument per wheel
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir $wheels || return 1
    "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . || return 1
    if [ "$REHEARSE" = 1 ]; then # (after the installs, which would find them there)
        "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
            >"$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/image.pth"
    fi
    "$py" - <<'EOF'
import hydra, omegaconf
from hydra import compose, initialize_config_module
with initialize_config_module("dim.configs", version_base="1.3"):
    cfg = compose("train", overrides=["experiment=dim_cifar10", "model.cuda_graph=true"])
import dim.training  # every runtime dependency of the package is there
print(f"hydra {hydra.__version__} from {hydra.__file__}, omegaconf {omegaconf.__version__}: "
      f"configs compose, model.cuda_graph={cfg.model.cuda_graph}")
EOF
}

pytest_stage() { # pytest_stage NAME PATHS...: pytest -m gpu on PATHS
    local name=$1
    shift
    "$PY" -m pytest -m gpu -p no:cacheprovider -q -rA --junitxml="$OUT/pytest_$name.xml" "$@" \
        2>&1 | tee -a "$OUT/pytest.txt"
}

bench() { # bench MODE [ARGS]: its rows into $WORK/bench_MODE.json (ARGS after BENCH's win)
    set -f # BENCH's words as they are (no globbing of [32,16])
    local mode=$1
    shift
    # shellcheck disable=SC2086  # one argument per word
    "$PY" scripts/gpu_bench.py --modes "$mode" --commit "$COMMIT" --out "$WORK/bench_$mode.json" \
        $BENCH "$@"
}

report() {
    "$PY" scripts/gpu_bench.py --merge "$WORK"/bench_eager.json "$WORK"/bench_graph.json \
        "$WORK"/bench_graph-gp4.json "$WORK"/bench_reduce-overhead.json --out "$OUT/bench.json" \
        || return 1
    "$PY" - "$WORK/stages.tsv" "$OUT" "$COMMIT" "$REHEARSE" <<'EOF'
import csv, json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

stages_tsv, out, commit, rehearse = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
stages = list(csv.DictReader(open(stages_tsv), delimiter="\t"))
tests = {}
for xml in sorted(out.glob("pytest_*.xml")):
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests[xml.stem] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
doc = {"commit": commit, "rehearse": rehearse == "1", "stages": stages, "tests": tests,
       "bench": json.loads((out / "bench.json").read_text())}
(out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
for s in stages:
    print(f"stage {s['stage']:>9}: exit {s['rc']:>7} in {s['seconds']:>4}s")
for name, t in tests.items():
    print(f"{name}: {t}")
EOF
}

export -f install pytest_stage bench
stage install 90 install
if [ "$REHEARSE" = 1 ] && [ -x "$WORK/venv/bin/python" ]; then
    PY=$WORK/venv/bin/python # the rest runs where the install went, as it will on the GPU
    export PY
fi
stage graphed 150 pytest_stage graphed tests/gpu/test_cuda_graphs.py
stage eager 90 bench eager
stage graph 90 bench graph
stage graph4 50 bench graph-gp4 --batch-sizes "$GP4_BATCH"
stage tests 200 pytest_stage tests tests/gpu --ignore=tests/gpu/test_cuda_graphs.py
stage compiled 240 bench reduce-overhead
case " $STAGES " in *" report "*) report ;; esac
echo "gpu_check: done in $(($(date +%s) - START))s; results in $OUT"
