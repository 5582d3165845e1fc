"""The node side of image use records: the prolog tells the gateway that a job uses its
image on this node, the epilog that it no longer does. The gateway refuses to remove an image
while a use is open, and `shifterimg jobs` shows running jobs' images from these records.

A record is bookkeeping, never a reason to fail a job: a gateway that is down or slow
(bounded by imagegw.client.USE_TIMEOUT) is logged for the admin, and the job runs.
"""

from __future__ import annotations


def started(cfg, job_id: int, node: str, image_id: str, uid: int, request: str) -> None:
    """Prolog: job `job_id` uses `image_id` on `node` (for user `uid`; `request` as written)."""
    from imagegw import client
    from shifter_site import logs

    log = logs.get("prolog")
    try:
        with logs.step(log, "use_record", job=job_id, node=node, image=image_id) as info:
            info["image_ref"] = client.record_use(cfg, str(job_id), node, image_id, uid, request).get("image", "")
    except Exception:  # noqa: BLE001 - logged by the step; the job runs without the record
        pass


def ended(cfg, job_id: int, node: str) -> None:
    """Epilog: the job's use of its image on `node` is over."""
    from imagegw import client
    from shifter_site import logs

    log = logs.get("epilog")
    try:
        with logs.step(log, "use_end", job=job_id, node=node) as info:
            info["records"] = client.end_use(cfg, str(job_id), node).get("ended", 0)
    except Exception:  # noqa: BLE001 - logged by the step; the record stays open and keeps the image (known)
        pass
