#!/bin/bash
# ESI pretraining on a SLURM cluster: one task per GPU, on one or several nodes.
#
#   sbatch scripts/slurm_pretrain.sh                      # params/mimic_paper.yaml: the paper's recipe, 4 GPUs
#   CONFIG=params/my_pretrain.yaml sbatch --nodes 4 scripts/slurm_pretrain.sh --set train_epochs=30
#
# Submit from the repository root (the job runs there). srun starts ntasks-per-node copies of
# `python -m esi.train` per node; each reads its place in the job from SLURM's variables (esi/train/distributed.py):
#   rank = SLURM_PROCID, world size = SLURM_NTASKS (SLURM_STEP_NUM_TASKS for the step), GPU = SLURM_LOCALID,
#   MASTER_ADDR = the first host of SLURM_NODELIST, MASTER_PORT = 20000 + SLURM_JOB_ID % 20000
# (export MASTER_ADDR / MASTER_PORT before submitting to choose them yourself).
# batch_size in the params is per GPU: the global batch is batch_size x nodes x GPUs per node x grad_accum.
#
# Keep ntasks-per-node equal to gpus-per-node, and do not bind one GPU per task (no --gpus-per-task /
# --gpu-bind=single): every task must see all GPUs of its node and picks GPU number SLURM_LOCALID.
# Lost workers: a task that dies (killed, out of memory, a crashed GPU) ends the srun step; the step is started again,
# up to MAX_RESTARTS times (default 3), and resumes from the newest checkpoint in train_out_dir (train_resume: auto).
# A lost node ends the job; with --requeue SLURM puts it back in the queue and it resumes the same way, as does a
# resubmitted job.

#SBATCH --job-name=esi-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out

set -euo pipefail

CONFIG=${CONFIG:-params/mimic_paper.yaml}
PYTHON=${PYTHON:-.venv/bin/python}
MAX_RESTARTS=${MAX_RESTARTS:-3}   # new srun steps after a failed one, as torchrun's --max-restarts
cd "${SLURM_SUBMIT_DIR:-.}"
if [[ ! -f "${CONFIG}" ]]; then
    echo "slurm_pretrain.sh: params file ${CONFIG} not found in $(pwd); submit from the repository root or set CONFIG" >&2
    exit 2
fi

# Nothing downloads at run time: the text encoder must be a local folder or already in the Hugging Face cache.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# CPU threads of each task's main process (DataLoader workers are separate processes).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

echo "esi pretraining: ${SLURM_JOB_NUM_NODES:-1} node(s) x ${SLURM_NTASKS_PER_NODE:-1} task(s), nodes ${SLURM_JOB_NODELIST:-?}, config ${CONFIG}"
for ((restart = 0; ; restart++)); do
    status=0
    srun --kill-on-bad-exit=1 "${PYTHON}" -m esi.train --config "${CONFIG}" "$@" || status=$?
    # 0: done. 2: esi.train refused the settings or input (the same again on a restart).
    if [[ ${status} -eq 0 || ${status} -eq 2 || ${restart} -ge ${MAX_RESTARTS} ]]; then
        exit "${status}"
    fi
    echo "slurm_pretrain.sh: the training step failed (status ${status}); restart $((restart + 1)) of ${MAX_RESTARTS} resumes from the newest checkpoint" >&2
done
