"""Attack: text a user writes into their job's record (--comment, --job-name) read back by
the root prolog as job fields. `--comment='x NodeList=n[1-3] NumTasks=30000'` gave a
30,000-line /var/hostsfile and /etc/hosts entries for nodes the job does not have;
`NodeList=n[1-2000000]` cost the prolog seconds; `Nodes=n1 CPU_IDs=0-x` raised a
ValueError that escaped the hook (a node may drain). Played on the local cluster as
testuser; the parsing rules also as pure tests."""

from __future__ import annotations

import time

import pytest

import jobtools as jt
from conftest import localcluster
from shifter_wlm import slurm

pytestmark = pytest.mark.cluster
USER = "testuser"

SHOW = """JobId=47 JobName=x
   UserId=testuser(1001) GroupId=testuser(1002) MCS_label=N/A
   NodeList=n[1-2]
   NumNodes=2 NumCPUs=3 NumTasks=3 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   JOB_GRES=(null)
     Nodes=n1 CPU_IDs=0-1 Mem=0 GRES=
     Nodes=n2 CPU_IDs=0 Mem=0 GRES=
   MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0
   Comment={comment}
"""
SQUEUE = "47|1001|1002|n[1-2]|n1|3|1|2|3|\n"


@pytest.mark.parametrize("comment", [
    "x NodeList=n[1-3] NumTasks=30000",
    "x\n     Nodes=n1 CPU_IDs=0-4000 Mem=0 GRES=",          # a line that looks like Slurm's own
    "x\n     Nodes=n3 CPU_IDs=0 Mem=0 GRES=",               # a node the job does not have
    "Nodes=n1 CPU_IDs=0-x",
    "NodeList=n[1-2000000]",
])
def test_comment_text_never_becomes_job_fields(comment):
    start = time.monotonic()
    info = slurm.job_from(SQUEUE, SHOW.format(comment=comment), 47)
    assert time.monotonic() - start < 0.5
    assert info.nodes == ("n1", "n2")
    assert sum(info.tasks_per_node.values()) == 3
    assert set(info.tasks_per_node) == {"n1", "n2"}


def test_the_real_layout_is_kept_when_nothing_is_injected():
    info = slurm.job_from(SQUEUE, SHOW.format(comment="plain"), 47)
    assert info.tasks_per_node == {"n1": 2, "n2": 1}


@pytest.mark.parametrize("expr", ["n[1-2000000]", "n[1-99999999999]", "a[1-60000],b[1-60000]"])
def test_huge_host_lists_are_refused_before_expanding(expr):
    start = time.monotonic()
    with pytest.raises(slurm.SlurmQueryError, match="names more than"):
        slurm.expand_hostlist(expr)
    assert time.monotonic() - start < 0.1


@pytest.mark.parametrize("text", ["0-x", "x", "5-1", "-", "0-99999999"])
def test_bad_cpu_ids_are_one_clear_error(text):
    with pytest.raises(slurm.SlurmQueryError):
        slurm.parse_cpu_ids(text)


def test_overcommitted_layout_is_arithmetic_not_a_loop():
    start = time.monotonic()
    layout = slurm.layout_tasks({"n1": 1}, ["n1", "n2"], slurm.MAX_TASKS, 1)
    assert sum(layout.values()) == slurm.MAX_TASKS
    assert time.monotonic() - start < 0.1


@pytest.mark.parametrize("squeue", [
    "",                                          # no record
    "47|1001|1002|n[1-2]|n1|3|1|3|3|\n",          # the list does not name NumNodes nodes
    "48|1001|1002|n[1-2]|n1|3|1|2|3|\n",          # another job
    "47|1001|1002|n[1-2]|n1|3|1|2|3|\n47|1|1|n1|n1|1|1|1|1|\n",
    "47|1001|1002|n[1-2]|n1|99999999999|1|2|3|\n",
    "47|x|1002|n[1-2]|n1|3|1|2|3|\n",
])
def test_squeue_answers_that_are_not_one_clean_record_are_refused(squeue):
    with pytest.raises(slurm.SlurmQueryError):
        slurm.job_from(squeue, SHOW.format(comment=""), 47)


# -------------------------------------------------------------- on the cluster

JOB = """#!/bin/bash
#SBATCH -N 2 -n 3 -t 5
#SBATCH --image={image}
srun -N1 -n1 -w "$SLURMD_NODENAME" shifter sh -c 'echo hostsfile=$(cat /var/hostsfile | tr "\\n" ,); \
  echo hosts-n3=$(grep -c "n3" /etc/hosts)'
"""


@pytest.fixture(scope="module")
def image(cluster):
    from test_slurm_jobs import _push_and_pull
    _push_and_pull("attack/fields", "1", ["PATH=/usr/bin:/bin"])
    return "docker:attack/fields:1"


def _drained() -> list[str]:
    out = localcluster.slurm("sinfo", "-h", "-N", "-o", "%N %t").stdout.split("\n")
    return [line for line in out if line.split()[1:2] and line.split()[1].startswith(("drain", "drng", "down"))]


@pytest.mark.parametrize("comment", [
    "x NodeList=n[1-3] NumTasks=30000",
    "NodeList=n[1-2000000]",
    "Nodes=n1 CPU_IDs=0-x",
    "x\n     Nodes=n1 CPU_IDs=0-4000 Mem=0 GRES=",
])
def test_hostile_comment_and_name_do_not_reach_the_prolog(image, comment):
    job = jt.write_job(USER, "fields.sl", JOB.format(image=image))
    start = time.monotonic()
    job_id, output, _ = jt.sbatch_wait(USER, job, f"--comment={comment}", f"--job-name=j NodeList=n[1-3] {comment}")
    assert time.monotonic() - start < 60
    hostsfile = jt.field("hostsfile", output).strip(",").split(",")
    assert sorted(hostsfile) == ["n1", "n1", "n2"], output   # the real 3 tasks on the real 2 nodes
    assert jt.field("hosts-n3", output) == "0", output         # no /etc/hosts entry for a node it lacks
    jt.wait_gone(job_id)
    assert _drained() == []
    jt.assert_clean()
