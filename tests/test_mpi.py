"""MPI in containers on the local 3-node cluster: an image carrying its own MPICH
launched with `srun --mpi=pmi2`, and the `mpich` site module swapping in the host's MPICH;
OpenMPI in an image launched with `srun --mpi=pmix` (the `pmix` site module shows the PMIx
server's directory in SlurmdSpoolDir), with and without the `openmpi` module swapping in the
host's OpenMPI. The three nodes are one host: OpenMPI's shared-memory transport (vader) would
take ranks of different nodes for neighbours and crash natively too, so its runs use
`OMPI_MCA_btl=self,tcp`.
Images: tests/mpiimages.py (mpi_hello compiled here with the MPI's mpicc, plus its library
closure and plugin directories). Every test checks the world size, each rank once on the
right node, and the Allreduce."""

from __future__ import annotations

import os
import pwd
import shutil

import pytest

import jobtools as jt
import mpiimages
from conftest import localcluster, need, run_as

pytestmark = pytest.mark.cluster
USER = "testuser"
NODES = ["n1", "n2", "n3"]


def _pull(repo: str, tag: str) -> None:
    pulled = run_as(USER, [str(localcluster.PREFIX / "bin/shifterimg"), "pull", f"docker:{repo}:{tag}"])
    assert pulled.returncode == 0, pulled.stderr


@pytest.fixture(scope="module")
def mpich_image(cluster):
    need(shutil.which("mpicc.mpich") is not None, "Debian's mpich is not installed (make install)")
    mpiimages.push_mpi_image("mpich", "mpi/mpich", "1")
    _pull("mpi/mpich", "1")
    return "docker:mpi/mpich:1"


def _run(body: str, name: str) -> str:
    job = jt.write_job(USER, name, "#!/bin/bash\n#SBATCH -N3 -n6 -t 5\n" + body)
    job_id, output, _ = jt.sbatch_wait(USER, job)
    jt.wait_gone(job_id)
    return output


def test_native_mpich_pmi2_is_one_world(cluster):
    """The baseline the container runs are compared with (and proof --mpi=pmi2 works here)."""
    need(shutil.which("mpicc.mpich") is not None, "Debian's mpich is not installed (make install)")
    hello = jt.home(USER) / "mpi_hello_native"
    mpiimages.compile_hello("mpich", hello)
    entry = pwd.getpwnam(USER)
    os.chown(hello, entry.pw_uid, entry.pw_gid)
    output = _run(f"srun --mpi=pmi2 -N3 -n6 {hello}\n", "mpi_native.sl")
    mpiimages.check_world(output, NODES, 2)


def test_mpich_in_the_image_with_pmi2(mpich_image):
    output = _run(f"#SBATCH --image={mpich_image}\nsrun --mpi=pmi2 -N3 -n6 shifter /app/mpi_hello\n",
                  "mpi_mpich.sl")
    ranks = mpiimages.check_world(output, NODES, 2)
    assert all(r["lib"].startswith("MPICH_Version:") for r in ranks), output
    jt.assert_clean()


def test_wrong_mpi_plugin_is_caught_by_the_checks(mpich_image):
    """--mpi=none gives six one-rank worlds: check_world must fail on it (the checks are real)."""
    output = _run(f"#SBATCH --image={mpich_image}\nsrun --mpi=none -N3 -n6 shifter /app/mpi_hello\n",
                  "mpi_wrong.sl")
    ranks = mpiimages.parse(output)
    assert ranks and {r["size"] for r in ranks} == {"1"}, output
    with pytest.raises(AssertionError):
        mpiimages.check_world(output, NODES, 2)


@pytest.fixture(scope="module")
def newer_mpich_image(cluster):
    """The same image, but its MPICH claims 9.0.2 (tests/mpiimages.py claim_version)."""
    need(shutil.which("mpicc.mpich") is not None, "Debian's mpich is not installed (make install)")
    mpiimages.push_mpi_image("mpich", "mpi/mpich-new", "1", version=b"9.0.2")
    _pull("mpi/mpich-new", "1")
    return "docker:mpi/mpich-new:1"


def test_mpich_module_swaps_in_the_host_library(mpich_image):
    output = _run(f"#SBATCH --image={mpich_image}\n#SBATCH --module=mpich\n"
                  "srun --mpi=pmi2 -N3 -n6 shifter /app/mpi_hello\n", "mpi_module.sl")
    ranks = mpiimages.check_world(output, NODES, 2)
    # /proc/self/maps of each rank: the host's copy, bound under the module's directory
    assert {r["mapped"].rsplit("/", 1)[0] for r in ranks} == {"/opt/udiImage/modules/mpich/lib"}, output
    jt.assert_clean()


def test_mpich_module_refuses_an_image_with_a_newer_mpich(newer_mpich_image):
    job = jt.write_job(USER, "mpi_newer.sl", f"#!/bin/bash\n#SBATCH -N3 -n6 -t 5\n#SBATCH --image={newer_mpich_image}\n"
                       "#SBATCH --module=mpich\nsrun --mpi=pmi2 -N3 -n6 shifter /app/mpi_hello\n")
    job_id, output, _ = jt.sbatch_wait(USER, job, check=False)
    jt.wait_gone(job_id)
    assert not mpiimages.parse(output), output  # nothing ran
    assert "the image's MPICH 9.0.2 is not compatible with this system's 4.0.2 (rule: major)" in output, output
    states = localcluster.slurm("sinfo", "-h", "-o", "%T").stdout.split()
    assert not {"drained", "draining", "down"} & set(states), states  # the nodes stay in service
    jt.assert_clean()


OMPI_ENV = "export OMPI_MCA_btl=self,tcp OMPI_MCA_pml=ob1\n"


@pytest.fixture(scope="module")
def openmpi_image(cluster):
    need(shutil.which("mpicc.openmpi") is not None, "Debian's openmpi is not installed (make install)")
    mpiimages.push_mpi_image("openmpi", "mpi/openmpi", "1")
    _pull("mpi/openmpi", "1")
    return "docker:mpi/openmpi:1"


def test_native_openmpi_pmix_is_one_world(cluster):
    """The baseline: Slurm's pmix plugin and Debian's OpenMPI work here without containers."""
    need(shutil.which("mpicc.openmpi") is not None, "Debian's openmpi is not installed (make install)")
    hello = jt.home(USER) / "mpi_hello_ompi"
    mpiimages.compile_hello("openmpi", hello)
    entry = pwd.getpwnam(USER)
    os.chown(hello, entry.pw_uid, entry.pw_gid)
    output = _run(OMPI_ENV + f"timeout 120 srun --mpi=pmix -N3 -n6 {hello}\n", "ompi_native.sl")
    ranks = mpiimages.check_world(output, NODES, 2)
    assert all(r["lib"].startswith("Open_MPI") for r in ranks), output


def test_openmpi_in_the_image_with_pmix(openmpi_image):
    output = _run(f"#SBATCH --image={openmpi_image}\n#SBATCH --module=pmix\n" + OMPI_ENV
                  + "timeout 120 srun --mpi=pmix -N3 -n6 shifter /app/mpi_hello\n", "ompi_pmix.sl")
    ranks = mpiimages.check_world(output, NODES, 2)
    assert all(r["lib"].startswith("Open_MPI") for r in ranks), output
    assert {r["mapped"].rsplit("/", 1)[0] for r in ranks} <= {"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"}, output
    assert "PMIX ERROR" not in output and "ORTE_ERROR_LOG" not in output, output  # its dstore and dirs found
    jt.assert_clean()


def test_openmpi_module_swaps_in_the_host_library_with_pmix(openmpi_image):
    output = _run(f"#SBATCH --image={openmpi_image}\n#SBATCH --module=pmix,openmpi\n" + OMPI_ENV
                  + "timeout 120 srun --mpi=pmix -N3 -n6 shifter /app/mpi_hello\n", "ompi_module.sl")
    ranks = mpiimages.check_world(output, NODES, 2)
    assert {r["mapped"].rsplit("/", 1)[0] for r in ranks} == {"/opt/udiImage/modules/openmpi/lib"}, output
    assert "PMIX ERROR" not in output, output
    jt.assert_clean()


def test_openmpi_and_mpich_modules_conflict(openmpi_image):
    job = jt.write_job(USER, "ompi_conflict.sl", f"#!/bin/bash\n#SBATCH -N1 -t 5\nsrun shifter true\n")
    result = run_as(USER, ["sbatch", f"--image={openmpi_image}", "--module=mpich,openmpi", str(job)], cwd=job.parent)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "cannot be used together" in line]
    assert lines and "'openmpi'" in lines[0] and "'mpich'" in lines[0] and "Traceback" not in result.stderr, result.stderr
