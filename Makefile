# Everything a fresh Debian 12 machine needs, as root. Re-running any target is harmless.
PREFIX ?= /opt/shifter
STATE  ?= /var/lib/shifter-cluster
PY     := $(PREFIX)/bin/python
NODES  ?= 3
export SHIFTER_PREFIX := $(PREFIX)
export SHIFTER_CLUSTER_STATE := $(STATE)

APT_PACKAGES := slurmctld slurmd slurm-client munge libslurm-dev \
	squashfs-tools squashfs-tools-ng squashfuse xfsprogs e2fsprogs busybox-static debootstrap \
	docker-registry skopeo umoci python3.11 python3.11-venv python3.11-dev python3-venv python3-dev \
	build-essential libffi-dev util-linux procps psmisc curl ca-certificates openssl acl apache2-utils \
	mpich libmpich-dev openmpi-bin libopenmpi-dev \
	libcurl4-openssl-dev libjson-c-dev libmunge-dev charliecloud fuse3 musl-tools dpkg-dev patch iproute2 openssh-client buildah \
	postgresql libpq5

.PHONY: install apt venv package plugin udiimage links cluster-up cluster-down cluster-status demo test unit stress fresh-check clean \
	bench bench-tools bench-fresh bench-cluster bench-local bench-report

install: apt package plugin udiimage links

# the user commands on everyone's PATH: links, made or updated; a real file there is left alone
links:
	@for cmd in shifter shifterimg shifter-config; do \
	  if [ -e /usr/local/bin/$$cmd ] && [ ! -L /usr/local/bin/$$cmd ]; then \
	    echo "/usr/local/bin/$$cmd is not a link; left alone"; \
	  else ln -sfn $(PREFIX)/bin/$$cmd /usr/local/bin/$$cmd; fi; done

apt:
	@if dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | grep -vq 'install ok installed' \
	   || [ $$(dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | wc -l) -ne $(words $(APT_PACKAGES)) ]; then \
	  echo "installing Debian packages"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	else echo "Debian packages already installed"; fi

# Debian's python3.11 has a world-readable shared libpython: the one Slurm can embed.
venv: apt
	@test -x $(PY) || /usr/bin/python3.11 -m venv $(PREFIX)
	@$(PY) -m pip install -q --upgrade pip setuptools wheel

package: venv
	$(PY) -m pip install -q cffi  # first: without it, --no-build-isolation skips building runtime._syscalls
	$(PY) -m pip install -q --no-build-isolation '.[test]'
	$(PY) -m runtime.syscalls_build --inplace >/dev/null  # for tests run from the checkout
	$(PY) -m runtime.launcher $(PREFIX)/bin/shifter  # pip's launcher, run with python -S (docs/architecture.md, decision 13)
	chmod -R a+rX $(PREFIX)

plugin: venv
	$(PY) -m spank.build $(PREFIX)/lib

# the site's /opt/udiImage content: a static dropbear (sshd, ssh, scp) built from Debian's
# source package with musl (skipped when already built from the same recipe)
udiimage: apt
	udiImage/build_dropbear.sh $(PREFIX)/udiImage

# NODES=N: N slurmd (n1-nN, each on its own loopback address and port), 3 by default
cluster-up: install
	SHIFTER_CLUSTER_NODES=$(NODES) $(PY) tools/localcluster.py up

cluster-down:
	@if [ -x $(PY) ]; then $(PY) tools/localcluster.py down; else python3 tools/localcluster.py down; fi

cluster-status:
	@python3 tools/localcluster.py status

demo: install cluster-up
	tools/demo.sh

test: package plugin
	$(PY) -m pytest -q tests

# the long scale and fault run (up to ~20 min, not in CI): the fault suites, then the job mix
# of two users at each node count of STRESS_NODES, one table row per count: STRESS_JOBS jobs
# at the largest count, STRESS_SCALE_JOBS at the others (their rows give the prolog's build
# time per node as N grows; 200 jobs on 3 nodes of 2 shared cores alone would take the 20 min)
STRESS_NODES ?= 3 8 16 32
STRESS_JOBS ?= 200
STRESS_SCALE_JOBS ?= 8
stress: package plugin
	CI=1 $(PY) -m pytest -q tests/test_faults_slurm.py tests/test_slow_prolog.py tests/test_registry_faults.py tests/test_gateway_kill.py
	$(PY) tools/localcluster.py down
	@first=--header; for n in $(STRESS_NODES); do \
	  jobs=$(STRESS_SCALE_JOBS); [ $$n = $(lastword $(STRESS_NODES)) ] && jobs=$(STRESS_JOBS); \
	  SHIFTER_CLUSTER_NODES=$$n $(PY) tests/stress.py --jobs $$jobs $$first || status=1; first=; \
	done; exit $${status:-0}

# every benchmark in bench/, once, then bench/report.md and bench/plots/*.png from their results
# (BENCH_OUT/*.json): ratios of ours against each peer measured in the same run (bench/README.md).
# Root; starts the local cluster and takes it down at the end. About 12-15 minutes on the 2-core
# development VM (each benchmark's duration is in the report). bench/timed.py times each one and
# goes on when one fails or stops one still running after BENCH_TIMEOUT s (900); bench-report then
# names the failure and exits non-zero. Each part can
# run alone, e.g. under cluster-run: bench-cluster (needs the local cluster), bench-local (CPU
# and mounts, no cluster), bench-report.
BENCH_OUT ?= bench/out
BENCH_REPORT ?= bench/report.md
BENCH_RUN = $(PY) bench/timed.py $(BENCH_OUT)
bench: bench-tools bench-fresh bench-cluster bench-local bench-report

bench-tools: package plugin
	$(PY) -m pip install -q '.[bench]'
	$(PY) -m runtime.launcher $(PREFIX)/bin/shifter  # pip wrote its own launcher again
	mkdir -p $(BENCH_OUT)

# results of one run only: no JSON left from an earlier one
bench-fresh:
	rm -rf $(BENCH_OUT)/runs
	rm -f $(BENCH_OUT)/*.json

bench-cluster: bench-tools
	$(PY) tools/localcluster.py down  # the prolog's scaling brings the cluster up at each node count itself
	$(BENCH_RUN) bench_prolog_scale $(PY) bench/bench_prolog_scale.py --nodes 3,8,16 --jobs 3 --json $(BENCH_OUT)/prolog_scale.json
	$(PY) tools/localcluster.py up || { $(PY) tools/localcluster.py down; exit 1; }
	$(BENCH_RUN) bench_launch $(PY) bench/bench_launch.py -n 15 --json $(BENCH_OUT)/launch.json
	$(BENCH_RUN) bench_byname $(PY) bench/bench_byname.py -n 15 --json $(BENCH_OUT)/byname.json
	$(BENCH_RUN) bench_mpi $(PY) bench/bench_mpi.py -n 15 --json $(BENCH_OUT)/mpi.json
	$(BENCH_RUN) bench_srun $(PY) bench/bench_srun.py -n 15 --json $(BENCH_OUT)/srun.json
	$(BENCH_RUN) bench_lookup_auth env ROUNDS=100 $(PY) bench/bench_lookup_auth.py --json $(BENCH_OUT)/lookup_auth.json
	$(BENCH_RUN) bench_client env ROUNDS=20 $(PY) bench/bench_client.py --json $(BENCH_OUT)/client.json  # after the pulls above
	$(BENCH_RUN) bench_pull $(PY) bench/bench_pull.py --runs 3 --json $(BENCH_OUT)/pull.json
	$(PY) tools/localcluster.py down

bench-local: bench-tools
	$(BENCH_RUN) bench_layers $(PY) bench/bench_layers.py --runs 3 --json $(BENCH_OUT)/layers.json
	$(BENCH_RUN) bench_bigimage $(PY) bench/bench_bigimage.py --sizes 256,1024,2048 --runs 1 --json $(BENCH_OUT)/bigimage.json
	$(BENCH_RUN) bench_sharedfs $(PY) bench/bench_sharedfs.py --json $(BENCH_OUT)/sharedfs.json
	$(BENCH_RUN) bench_lookup_scale $(PY) bench/bench_lookup_scale.py --rounds 300 --images 10000 --json $(BENCH_OUT)/lookup_scale.json
	$(BENCH_RUN) bench_gpu_stream $(PY) bench/bench_gpu_stream.py --json $(BENCH_OUT)/gpu_stream.json  # records "no GPU" where there is none
	$(BENCH_RUN) bench_step_floor $(PY) bench/bench_step_floor.py -n 40 --json $(BENCH_OUT)/step_floor.json

bench-report:
	$(PY) bench/report.py $(BENCH_OUT) $(BENCH_REPORT)

# the pure-logic layer (tests/unit) in seconds (< 30 s on 2 cores), no cluster, no mounts,
# nothing written in the checkout; hypothesis's "unit" profile: fewer examples of the same
# properties (`make test` runs the full counts). Run by root, as UNIT_USER (the checkout must
# be readable by that user); run by anyone else, as themselves. Installs the package first
# only when the venv lacks the test tools.
UNIT_USER ?= nobody
AS_UNIT_USER = $(if $(filter 0,$(shell id -u)),runuser -u $(UNIT_USER) --,)
unit:
	@$(PY) -c 'import hypothesis, pytest' 2>/dev/null || $(MAKE) package
	@$(PY) -c 'import runtime._syscalls' 2>/dev/null || $(PY) -m runtime.syscalls_build --inplace >/dev/null
	$(AS_UNIT_USER) env -i PATH=/usr/bin:/bin HOME=/tmp PYTHONDONTWRITEBYTECODE=1 SHIFTER_TEST_PROFILE=unit \
	  $(PY) -m pytest -q -p no:cacheprovider tests/unit

# the README's two commands on a brand-new Debian 12 root (/tmp a tmpfs; FRESH_TMPFS=0 for
# /tmp on the root filesystem); stop the local cluster first, the ports are shared
fresh-check:
	tools/fresh-check.sh

clean:
	rm -rf build *.egg-info .pytest_cache
