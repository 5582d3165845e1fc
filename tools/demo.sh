#!/bin/bash
# The main job: a 3-node Slurm job submitted by a plain user on the local cluster.
set -euo pipefail
user=testuser
home=$(getent passwd "$user" | cut -d: -f6)
dir=$home/shifter-demo
runuser -u "$user" -- mkdir -p "$dir"
cat > "$dir/job.sl" <<'JOB'
#!/bin/bash
#SBATCH -N 3 -n 3 -t 5
#SBATCH -o %x-%j.out
srun -l bash -c 'echo "hello from $(id -un) on $SLURMD_NODENAME, task $SLURM_PROCID of $SLURM_NTASKS"' | sort
JOB
chown "$user": "$dir/job.sl"
cd "$dir"
out=$(runuser -u "$user" -- sbatch --parsable --wait -J demo job.sl)
job=${out%%;*}
echo "job $job finished; its output ($dir/demo-$job.out):"
cat "$dir/demo-$job.out"
