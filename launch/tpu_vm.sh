#!/usr/bin/env bash
# Train and evaluate facejax on a Cloud TPU VM: one host (v4-8, v5litepod-8, ...) or a pod
# slice of several hosts (v4-32, ...), driven from your workstation with gcloud.
#
#   launch/tpu_vm.sh create      create the TPU VM (every host of the slice)
#   launch/tpu_vm.sh install     on every worker: clone REPO_URL, make a Python 3.12 venv,
#                                pip install '.[tpu]', copy LFW from DATA_SOURCE to DATA_DIR
#   launch/tpu_vm.sh train       the same command on every worker (--worker=all); JAX finds
#                                the other hosts of the slice itself. Run it again to resume.
#   launch/tpu_vm.sh eval        LFW View 2 of the newest checkpoint (worker 0, on its CPUs)
#   launch/tpu_vm.sh copy_back   eval JSON/PNG, TensorBoard events, data_report.json and the
#                                training log -> RESULTS_DIR on this machine
#   launch/tpu_vm.sh delete      delete the TPU VM (billing stops)
#   launch/tpu_vm.sh all         create install train eval copy_back delete
#
# Settings: edit the defaults below or set them in the environment, e.g.
#   TPU_NAME=face-v4 WORKDIR=gs://my-bucket/runs/nn4_small2 DATA_SOURCE=gs://my-bucket/data \
#     launch/tpu_vm.sh all
# Before a multi-host run, load your gcloud key into ssh-agent (gcloud's advice for
# --worker=all): ssh-add ~/.ssh/google_compute_engine
set -euo pipefail

TPU_NAME="${TPU_NAME:-facejax-tpu}"
ZONE="${ZONE:-us-central2-b}"
# v4-32: 4 hosts x 4 chips = 16 JAX devices. Runtime images: tpu-ubuntu2204-base (v4),
# v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e).
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"          # empty: gcloud's configured project
SPOT="${SPOT:-0}"               # 1: a Spot TPU (cheaper, may be preempted; `train` resumes)
REPO_URL="${REPO_URL:-https://github.com/YOUR_USER/facejax.git}"
REPO_REF="${REPO_REF:-main}"    # branch, tag or commit: every worker checks out the same one
CONFIG="${CONFIG:-configs/nn4_small2.py}"
# Checkpoints, TensorBoard and eval results, shared by all workers: a gs:// bucket, or a path
# on a filesystem every worker mounts (on a single host, any local path). `train` first checks
# that the installed facejax writes gs:// paths to the bucket (see launch/README.md).
WORKDIR="${WORKDIR:-gs://YOUR_BUCKET/facejax/nn4_small2_v4-32}"
# A gs:// folder holding lfw/ (lfw/lfw/<Name>/*.jpg, lfw/pairs.txt, ...), copied to DATA_DIR
# on each worker's local disk by `install`.
DATA_SOURCE="${DATA_SOURCE:-gs://YOUR_BUCKET/data}"
DATA_DIR="${DATA_DIR:-/tmp/facejax_data}"
# bfloat16 compute (params stay float32); P x K = 80 x 4 = 320 faces per step, divisible by
# the 16 devices and 4 hosts of a v4-32 (and by 8 or 32 devices).
TRAIN_FLAGS="${TRAIN_FLAGS:---config.model.dtype=bfloat16 --config.num_identities=80 \
--config.images_per_identity=4 --config.batch_size=320}"
# Model/data overrides that training and evaluation must share (e.g. --config.data.image_size).
COMMON_FLAGS="${COMMON_FLAGS:-}"
RESULTS_DIR="${RESULTS_DIR:-results/${TPU_NAME}}"

# Remote paths: \$HOME is expanded by the worker's shell.
REMOTE_REPO="\$HOME/facejax"
REMOTE_VENV="\$HOME/facejax-venv"

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

if [[ -n "$PROJECT" ]]; then
  export CLOUDSDK_CORE_PROJECT="$PROJECT"
fi

# remote WORKERS COMMAND: runs COMMAND on the given workers ("all", "0", "1-3") at once.
remote() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker="$1" --command="$2"
}

cmd_create() {
  local spot_flag=""
  if [[ "$SPOT" == 1 ]]; then
    spot_flag="--spot"
  fi
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
    --scopes=https://www.googleapis.com/auth/cloud-platform $spot_flag
}

cmd_install() {
  # facejax needs JAX >= 0.7, hence Python >= 3.11; the TPU images ship 3.10, so uv fetches
  # a standalone CPython 3.12 for the venv.
  remote all "set -euo pipefail
export PATH=\$HOME/.local/bin:\$PATH
command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
test -d ${REMOTE_REPO}/.git || git clone -q ${REPO_URL} ${REMOTE_REPO}
git -C ${REMOTE_REPO} fetch -q origin ${REPO_REF}
git -C ${REMOTE_REPO} checkout -q FETCH_HEAD
test -x ${REMOTE_VENV}/bin/python || uv venv -q --python 3.12 ${REMOTE_VENV}
cd ${REMOTE_REPO} && uv pip install -q --python ${REMOTE_VENV}/bin/python -e '.[tpu]'
mkdir -p ${DATA_DIR}
test -f ${DATA_DIR}/lfw/pairs.txt || gsutil -m -q cp -r ${DATA_SOURCE}/lfw ${DATA_DIR}/
${REMOTE_VENV}/bin/python -c 'import facejax, jax; print(jax.__version__, facejax.__version__)'"
}

# Fails (on worker 0) if facejax would turn a gs:// WORKDIR into a local directory.
check_workdir() {
  if [[ "$WORKDIR" == gs://* ]]; then
    remote 0 "source ${REMOTE_VENV}/bin/activate && cd ${REMOTE_REPO} && python -c '
import sys
from facejax import checkpointing
path = checkpointing.checkpoint_dir(sys.argv[1])
if not path.startswith(\"gs://\"):
  sys.exit(\"facejax would write the checkpoints of \" + sys.argv[1] + \" to the local \" + path
           + \" on each worker: use a WORKDIR on a filesystem all workers mount\")
' ${WORKDIR}"
  fi
}

cmd_train() {
  check_workdir
  # Every worker runs the same command at the same time: JAX detects the pod slice and
  # main.py calls jax.distributed.initialize() (--distributed=auto). Each process reads its
  # own shard of every batch; process 0 logs and writes eval results. If the connection
  # drops or the TPU is preempted, run `train` again: it resumes from the newest checkpoint.
  remote all "set -o pipefail; source ${REMOTE_VENV}/bin/activate && cd ${REMOTE_REPO} && \
FACEJAX_DATA_DIR=${DATA_DIR} python -m facejax.main --config=${CONFIG} --workdir=${WORKDIR} \
--distributed=auto ${TRAIN_FLAGS} ${COMMON_FLAGS} 2>&1 | tee -a \$HOME/facejax_train.log"
}

cmd_eval() {
  # The training run already evaluated View 2 at its last step, on the TPUs. This re-evaluates
  # the newest checkpoint as one process on worker 0's CPUs (float32), which needs no other host.
  remote 0 "source ${REMOTE_VENV}/bin/activate && cd ${REMOTE_REPO} && \
FACEJAX_DATA_DIR=${DATA_DIR} JAX_PLATFORMS=cpu python -m facejax.evaluation --config=${CONFIG} \
--workdir=${WORKDIR} --protocol=view2 ${COMMON_FLAGS}"
}

cmd_copy_back() {
  mkdir -p "$RESULTS_DIR"
  if [[ "$WORKDIR" == gs://* ]]; then
    gsutil -m cp -r "$WORKDIR/eval" "$WORKDIR/tensorboard" "$RESULTS_DIR/"
    gsutil cp "$WORKDIR/data_report.json" "$RESULTS_DIR/" || true
  else
    gcloud compute tpus tpu-vm scp --zone="$ZONE" --worker=0 --recurse \
      "$TPU_NAME:$WORKDIR/eval" "$TPU_NAME:$WORKDIR/tensorboard" \
      "$TPU_NAME:$WORKDIR/data_report.json" "$RESULTS_DIR/"
  fi
  gcloud compute tpus tpu-vm scp --zone="$ZONE" --worker=0 \
    "$TPU_NAME:facejax_train.log" "$RESULTS_DIR/" || true
  echo "Results in $RESULTS_DIR (tensorboard --logdir $RESULTS_DIR/tensorboard)"
}

cmd_delete() {
  gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
}

cmd_all() {
  # On a failure (set -e exits), say that the TPU VM is still there.
  trap '[[ $? == 0 ]] || echo "Stopped early: TPU VM $TPU_NAME may still exist and bill;" \
"delete it with: launch/tpu_vm.sh delete" >&2' EXIT
  cmd_create
  cmd_install
  cmd_train
  cmd_eval
  cmd_copy_back
  cmd_delete
}

case "${1:-}" in
  create | install | train | eval | copy_back | delete | all) "cmd_$1" ;;
  -h | --help | help) usage 0 ;;
  *) usage 2 >&2 ;;
esac
