"""The short stress run (CI): 30 image jobs of two users at once on the 3-node cluster, three
images, single- and multi-node, perNodeCache, step-level images, a missing image in a step,
some cancelled mid-run, nodes shared. Every job gives its right output or its right error,
and nothing is left on any node. The long run is `make stress` (tests/stress.py)."""

from __future__ import annotations

import pytest

import stress

pytestmark = pytest.mark.cluster


def test_thirty_mixed_jobs_at_once_all_right_and_nothing_left(cluster):
    stress.push_images()
    jobs = 30
    report = stress.run(jobs, len(cluster.NODES), timeout=600)
    assert report.jobs == jobs
    assert report.unexpected == []
    assert not report.leaks
    mix = stress.mix(jobs, len(cluster.NODES))
    assert report.faults == sum(j.cancel for j in mix)                  # each sleeper was cancelled running
    # the WLCG pattern: some node ran both users' jobs at once (each sleeper in its own container:
    # checked by stress.run, an unexpected line otherwise)
    assert report.shared, "no node was seen running both users' jobs at once"
    assert report.expected_failures == sum(j.cancel or j.bad_step for j in mix)
    # the prolog built each job's container once on each of its nodes, and said how long it took
    assert len(report.build_ms) == sum(j.nodes for j in mix), report.build_ms
    assert all(ms > 0 for ms in report.build_ms)
