#!/bin/bash
# The main job: a plain user pulls an image and runs a 3-node containerized job with a
# per-node cache, on the local cluster (make cluster-up).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=${SHIFTER_PREFIX:-/opt/shifter}
user=testuser
home=$(getent passwd "$user" | cut -d: -f6)
dir=$home/shifter-demo

"$prefix/bin/python" "$here/demo_image.py" demo/hello:1
echo "--- shifterimg pull docker:demo/hello:1 (as $user)"
runuser -u "$user" -- "$prefix/bin/shifterimg" pull docker:demo/hello:1

runuser -u "$user" -- mkdir -p "$dir"
cat > "$dir/job.sl" <<'JOB'
#!/bin/bash
#SBATCH -N 3 -n 3 -t 5
#SBATCH -o %x-%j.out
#SBATCH --image=docker:demo/hello:1
#SBATCH --volume=/unused:/cache:perNodeCache=size=512m
export TMPDIR=/cache
srun -n 3 shifter sh -c 'touch $TMPDIR/written-on-$SLURMD_NODENAME
  echo "$SLURMD_NODENAME: $DEMO_GREETING as $(id -un) (uid $(id -u)); $(cat /etc/demo-release)"
  echo "$SLURMD_NODENAME: /var/hostsfile: $(cat /var/hostsfile | tr "\n" " ")"
  echo "$SLURMD_NODENAME: cache $(df -h /cache | tail -1 | tr -s " " | cut -d" " -f2) holds: $(ls $TMPDIR)"' | sort
JOB
chown "$user": "$dir/job.sl"
cd "$dir"
echo "--- sbatch job.sl (as $user)"
cat job.sl
out=$(runuser -u "$user" -- sbatch --parsable --wait -J demo job.sl)
job=${out%%;*}
echo "--- job $job finished; its output ($dir/demo-$job.out):"
cat "$dir/demo-$job.out"
