"""What the phases of one build share (runtime.phases and runtime.gpuphases use it; its own
module so that neither imports the other for it)."""

from __future__ import annotations

import os

from runtime import syscalls as sc
from runtime.paths import STAGE, Walk

TYPE_CHECKING = False  # a hot path: no `typing` import (docs/architecture.md, decision 13)
if TYPE_CHECKING:
    from typing import Callable

    from runtime.spec import ContainerSpec


class Setup:
    """What the phases of one build share: the request, and what earlier phases made."""

    def __init__(self, spec: ContainerSpec, root: str, key: str, privileged: bool,
                 image_mounter: Callable[[str, str], str], source_fds: list[int]):
        self.spec, self.root, self.key, self.privileged = spec, root, key, privileged
        self.image_mounter = image_mounter
        self.source_fds = source_fds
        self.prop = sc.MS_SLAVE if spec.mount_propagation == "slave" else sc.MS_PRIVATE
        stage = os.path.join(root, STAGE)
        self.stage, self.image, self.gen = stage, os.path.join(stage, "image"), os.path.join(stage, "etc")
        self.image_dev = -1
        self.root_fd = -1
        self.udi_mounted = False
        self.gpu_plan = None  # runtime.gpu.GpuPlan, made by the gpu phase
        # a GPU container built as root gets a /dev of its own (gpu_dev) instead of the host's
        self.own_dev = privileged and bool(spec.gpus)

    def user_walk(self) -> Walk:
        """User targets: root walks only the container's own tmpfs and the image (paths.Walk)."""
        return Walk(self.root_fd, {os.fstat(self.root_fd).st_dev, self.image_dev},
                    self.spec.user if self.privileged else None)
