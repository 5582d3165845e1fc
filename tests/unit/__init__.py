"""The unit layer: pure logic, no root, no cluster, no mounts (`make unit`, as a non-root user).

A package, so its test files may share names with the integration tests one level up.
"""
