#!/usr/bin/env python3
"""Push the demo image (busybox-static with an ENV and a release file) to the local registry.

usage: demo_image.py REPO:TAG
The image is built here, from Debian's busybox-static, like every test image (no Docker Hub).
"""

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import imagebuilder as ib  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: demo_image.py REPO:TAG", file=sys.stderr)
        return 2
    repo, tag = argv[0].rsplit(":", 1)
    root = Path(tempfile.mkdtemp())
    try:
        ib.busybox_tree(root)
        for applet in ("hostname", "df", "tr", "wc", "grep", "tail", "sort", "cut", "touch", "mkdir", "date"):
            link = root / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
        (root / "etc/demo-release").write_text(f"{repo}:{tag} built by tools/demo_image.py\n")
        image = ib.Image([ib.layer_from_dir(root)],
                         config={"Env": ["PATH=/bin", "DEMO_GREETING=hello from inside the image"],
                                 "Cmd": ["/bin/sh"]})
        digest = ib.push("127.0.0.1:5000", repo, tag, image)
    finally:
        shutil.rmtree(root)
    print(f"pushed {repo}:{tag} ({digest}) to 127.0.0.1:5000")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
