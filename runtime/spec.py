"""`ContainerSpec`: everything needed to build and enter one container, as plain data.

The CLI builds one from its options; the Slurm hooks build one from the job's context; the
runtime (build, enter, teardown) takes nothing else. Nothing here touches the system except
`user_from_host` and `from_config`, which read the host's account databases.

Fields that change what is *built* (image, user, groups, volumes, site mounts, modules,
hosts, cache limits, /etc sources) make up `build_key()`; two requests with the same key can
share one built container. The rest (env, argv, workdir, entrypoint) only change how it is
*entered*.
"""

from __future__ import annotations

import os

from runtime.frozen import Frozen, asdict

TYPE_CHECKING = False  # a hot path: a step joining its container does not import runtime.volumes
if TYPE_CHECKING:
    from runtime.volumes import Volume


class Account(Frozen):
    """A passwd entry copied into the container's /etc/passwd."""

    name: str
    uid: int
    gid: int
    gecos: str = ""
    home: str = "/"
    shell: str = "/bin/sh"


class Group(Frozen):
    """A group entry for the container's /etc/group (members: names)."""

    name: str
    gid: int
    members: tuple[str, ...] = ()


class User(Frozen):
    """Who runs in the container. `groups` are the supplementary gids after the site's
    filter (no gid 0, at most max_group_count), primary gid not repeated."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    groups: tuple[Group, ...] = ()
    gecos: str = ""

    @property
    def gids(self) -> list[int]:
        return [g.gid for g in self.groups]


class SiteEnv(Frozen):
    """Environment changes applied after the image's and the user's (modules first, then
    the global site env): set, then append/prepend (joined with ':'), then unset."""

    set: tuple[tuple[str, str], ...] = ()
    append: tuple[tuple[str, str], ...] = ()
    prepend: tuple[tuple[str, str], ...] = ()
    unset: tuple[str, ...] = ()


class Entering(Frozen):
    """What entering a built container needs, and nothing else (runtime.enter reads only
    these): the image's ENV/ENTRYPOINT/CMD/WORKDIR, the site env, the user, the modules'
    user hooks, and the request's entering options. One serialisation (to_data/from_data):
    the Slurm job record embeds it, so a step needs neither the site config nor the image
    record (docs/architecture.md, "Enter")."""

    image_id: str
    user: User
    image_request: str = ""
    image_env: tuple[str, ...] = ()
    image_entrypoint: tuple[str, ...] | None = None
    image_cmd: tuple[str, ...] | None = None
    image_workdir: str = ""
    site_env: tuple[SiteEnv, ...] = ()
    user_hooks: tuple[tuple[str, str], ...] = ()
    env: tuple[str, ...] = ()
    env_file: tuple[str, ...] = ()
    clearenv: bool = False
    workdir: str | None = None
    entrypoint: str | None = None

    def to_data(self) -> dict:
        """Plain JSON data (lists for tuples)."""
        return _listed(asdict(self))

    @classmethod
    def from_data(cls, data: dict) -> Entering:
        """The inverse of to_data; a record that is not one raises ValueError/KeyError/TypeError."""
        user = data["user"]
        return cls(**{
            **data,
            "user": User(**{**user, "groups": tuple(Group(g["name"], g["gid"], tuple(g["members"]))
                                                   for g in user["groups"])}),
            "image_env": tuple(data["image_env"]),
            "image_entrypoint": _opt_tuple(data["image_entrypoint"]),
            "image_cmd": _opt_tuple(data["image_cmd"]),
            "site_env": tuple(SiteEnv(set=_pairs(e["set"]), append=_pairs(e["append"]),
                                      prepend=_pairs(e["prepend"]), unset=tuple(e["unset"]))
                              for e in data["site_env"]),
            "user_hooks": _pairs(data["user_hooks"]),
            "env": tuple(data["env"]), "env_file": tuple(data["env_file"]),
        })


def _listed(value):
    if isinstance(value, (list, tuple)):
        return [_listed(v) for v in value]
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return value


def _opt_tuple(value):
    return tuple(value) if value is not None else None


def _pairs(items) -> tuple[tuple[str, str], ...]:
    return tuple((a, b) for a, b in items)


class ContainerSpec(Frozen):
    """One container request. All paths are absolute host paths unless said otherwise.

    image_id        64 hex digits (the gateway's image id)
    squashfs        host path of <image_id>.squashfs ("" for a local: image)
    local_root      a local: image's directory tree on the host (runtime.localimage), or None
    image_env       image ENV, "K=V" in order
    image_entrypoint, image_cmd   image ENTRYPOINT / CMD (None: not set)
    image_workdir   image WORKDIR ("" = not set)
    image_request   what the user asked for (SHIFTER_IMAGEREQUEST), e.g. "docker:ubuntu:22.04"
    user            the container's user (uid/gid/groups from the host databases)
    volumes         the user's volumes (incl. perNodeCache), validated (runtime.volumes)
    site_mounts     the site's and the enabled modules' mounts, in order
    accounts, account_groups   site-imported accounts for /etc/passwd and /etc/group
    site_env        env changes applied in order: each module's, then the global site env
    modules         enabled module names; module_copy: (name, host dir) for /opt/udiImage/modules
    hosts           the job's hosts, one entry per task (None: no /var/hostsfile)
    host_addrs      (name, address) lines added to the container's /etc/hosts: the job's
                    nodes whose Slurm NodeAddr differs from their name (the in-container sshd)
    etc_files       (path below /etc, text): more generated /etc files, over the image's
                    (the job's ssh/ssh_config, for the in-container sshd)
    cache_dir, cache_size_limit, cache_allowed_fs   perNodeCache site settings
    opt_udi_image, etc_dir      site content for /opt/udiImage and site /etc files (None: none)
    mount_propagation           'private' or 'slave' for the container's mounts
    hostname                    the node name (part of perNodeCache backing file names)
    env, env_file   user's --env entries and --env-file entries ("K=V"), in order
    clearenv        start from an empty environment instead of the caller's
    workdir         None: caller's cwd if present in the container, else "/";
                    "" : image WORKDIR (-w with no path); a path: that path
    entrypoint      None: not asked; "" : the image's ENTRYPOINT; else that command
    root_hooks      enabled modules' root hooks: run by the builder as root, outside the
                    container, cwd = the container root, after the site mounts (in build_key)
    site_hooks      the site's mount hooks, ("site_pre_mount_hook" | "site_post_mount_hook",
                    host script): run as root before / after the site mounts (in build_key)
    hook_timeout    seconds a root script may run before it is killed and the build fails
    etc_mode        "generated": passwd/group from the user and site accounts; "site": the
                    site's own files in etc_dir (the original's populateEtcDynamically=0)
    user_hooks      enabled modules' user hooks: run inside as the user before the command
    gpus, gpu       the GPU module's GPUs (node numbers) and site settings (runtime.gpu.GpuSite)
    """

    image_id: str
    squashfs: str
    user: User
    image_env: tuple[str, ...] = ()
    image_entrypoint: tuple[str, ...] | None = None
    image_cmd: tuple[str, ...] | None = None
    image_workdir: str = ""
    image_request: str = ""
    volumes: tuple[Volume, ...] = ()
    site_mounts: tuple[Volume, ...] = ()
    accounts: tuple[Account, ...] = ()
    account_groups: tuple[Group, ...] = ()
    site_env: tuple[SiteEnv, ...] = ()
    modules: tuple[str, ...] = ()
    module_copy: tuple[tuple[str, str], ...] = ()
    hosts: tuple[str, ...] | None = None
    host_addrs: tuple[tuple[str, str], ...] = ()
    etc_files: tuple[tuple[str, str], ...] = ()
    cache_dir: str = "/tmp"
    cache_size_limit: int = 100 * 1024**3
    cache_allowed_fs: tuple[str, ...] = ("xfs",)
    opt_udi_image: str | None = None
    etc_dir: str | None = None
    mount_propagation: str = "private"
    hostname: str = ""
    env: tuple[str, ...] = ()
    env_file: tuple[str, ...] = ()
    clearenv: bool = False
    workdir: str | None = None
    entrypoint: str | None = None
    scope: str = ""               # who owns the container, e.g. "job-42": never shared beyond it
    root_hooks: tuple[tuple[str, str], ...] = ()   # (module, host script): run as root at build
    user_hooks: tuple[tuple[str, str], ...] = ()   # (module, script in the container): run as the user
    site_hooks: tuple[tuple[str, str], ...] = ()   # (config key, host script): run as root at build
    local_root: str | None = None                  # a local: image: its host tree (squashfs "")
    hook_timeout: float = 60.0
    etc_mode: str = "generated"
    gpus: tuple[int, ...] = ()    # the node's GPU numbers the container gets (runtime/gpu.py)
    gpu: object = None            # runtime.gpu.GpuSite when gpus: the site's driver-file settings

    def entering(self) -> Entering:
        """The part of this spec that entering the built container needs."""
        return Entering(**{name: getattr(self, name) for name in Entering._fields})

    def build_key(self) -> str:
        """A digest of what the build depends on: equal keys = an identical container."""
        built = {
            "image": self.image_id, "squashfs": self.squashfs, "user": asdict(self.user),
            "volumes": [v.text() for v in self.volumes], "site": [v.text() for v in self.site_mounts],
            "accounts": [asdict(a) for a in self.accounts],
            "account_groups": [asdict(g) for g in self.account_groups],
            "modules": list(self.modules), "module_copy": [list(m) for m in self.module_copy],
            "hosts": list(self.hosts) if self.hosts is not None else None,
            "host_addrs": [list(h) for h in self.host_addrs],
            "cache": [self.cache_dir, self.cache_size_limit, list(self.cache_allowed_fs)],
            "udi": self.opt_udi_image, "etc": self.etc_dir, "prop": self.mount_propagation,
            "scope": self.scope,
        }
        if self.root_hooks:  # only when set: keys of containers without hooks stay as they were
            built["root_hooks"] = [list(h) for h in self.root_hooks]
        if self.etc_files:
            built["etc_files"] = [list(f) for f in self.etc_files]
        if self.site_hooks:
            built["site_hooks"] = [list(h) for h in self.site_hooks]
        if self.local_root is not None:
            built["local_root"] = self.local_root
        if self.etc_mode != "generated":
            built["etc_mode"] = self.etc_mode
        if self.gpus:  # likewise
            built["gpus"] = [list(self.gpus), _listed(asdict(self.gpu))]
        import hashlib  # here, not at import: a launch or a step joining its container never hashes
        import json

        blob = json.dumps(built, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]


# ---------------------------------------------------------------- from the host and site


def filter_groups(gids: list[int], primary: int, limit: int) -> list[int]:
    """Supplementary gids as the container gets them: no gid 0, no duplicate, not the
    primary, at most `limit` in all (original order kept: the first ones win)."""
    out: list[int] = []
    for gid in gids:
        if gid == 0 or gid == primary or gid in out:
            continue
        out.append(gid)
    return out[: max(limit - 1, 0)] if limit else []


def user_from_host(uid: int, max_groups: int = 31) -> User:
    """The user's entry and groups from the host's databases (NSS), filtered."""
    import grp
    import pwd

    from shifter_site.errors import ShifterError

    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise ShifterError(f"uid {uid} has no passwd entry on this host; ask the admins") from None
    gids = filter_groups(os.getgrouplist(entry.pw_name, entry.pw_gid), entry.pw_gid, max_groups)
    groups = []
    for gid in gids:
        try:
            groups.append(Group(grp.getgrgid(gid).gr_name, gid, (entry.pw_name,)))
        except KeyError:
            groups.append(Group(f"group{gid}", gid, (entry.pw_name,)))
    return User(name=entry.pw_name, uid=uid, gid=entry.pw_gid, home=entry.pw_dir,
                shell=entry.pw_shell or "/bin/sh", groups=tuple(groups), gecos=entry.pw_gecos)


def _accounts(names: list[str], skip_uid: int) -> tuple[tuple[Account, ...], tuple[Group, ...]]:
    import grp
    import pwd

    accounts, groups = [], []
    for name in names:
        try:
            p = pwd.getpwnam(name)
        except KeyError:
            continue  # a site-listed account missing on this node is not the user's problem
        if p.pw_uid == skip_uid:
            continue
        accounts.append(Account(p.pw_name, p.pw_uid, p.pw_gid, p.pw_gecos, p.pw_dir, p.pw_shell))
        try:
            g = grp.getgrgid(p.pw_gid)
            groups.append(Group(g.gr_name, g.gr_gid))
        except KeyError:
            pass
    return tuple(accounts), tuple(groups)


def from_config(cfg, record, user: User, *, volumes: tuple[Volume, ...] = (),
                module: str | None = None, hosts: list[str] | None = None,
                image_request: str = "", gpus: tuple[int, ...] | None = None, **options) -> ContainerSpec:
    """A ContainerSpec from the site config, an ImageRecord, the user and the user's options
    (`options`: env, env_file, clearenv, workdir, entrypoint). `module`: the --module text
    (None: the site's default modules), checked by runtime.modules.select; `gpus`: the GPUs
    of the step on this node (None: not known here), for the site's GPU module."""
    from runtime.modules import select
    from runtime.volumes import check_cache_limits, parse_mapping
    from shifter_site.quickload import squashfs_path

    check_cache_limits(list(volumes), cfg.per_node_cache.size_limit_bytes, list(cfg.per_node_cache.allowed_fs))
    modules = select(module, cfg, gpus)
    gpu_extra = {}
    site = [parse_mapping(_site_text(m), site=True) for m in cfg.site_mounts]
    envs: list[SiteEnv] = []
    copies = []
    root_hooks, user_hooks = [], []
    for name in modules:
        module = cfg.modules[name]
        site += [parse_mapping(_site_text(m), site=True) for m in module.site_mounts]
        envs.append(_site_env(module.env))
        if module.gpu is not None and gpus:
            from runtime import gpu

            gpu_extra = {"gpus": tuple(gpus), "gpu": gpu.site_settings(cfg, name)}
            envs.append(SiteEnv(set=tuple(gpu.container_env(tuple(gpus)).items()),
                                prepend=(("LD_LIBRARY_PATH", gpu.CONTAINER_LIB_DIR),),
                                append=(("PATH", gpu.CONTAINER_BIN_DIR),)))
        if module.copy_path:
            copies.append((name, module.copy_path))
        if module.root_hook:
            root_hooks.append((name, module.root_hook))
        if module.user_hook:
            user_hooks.append((name, module.user_hook))
    envs.append(_site_env(cfg.site_env))
    accounts, account_groups = _accounts(list(cfg.import_accounts), user.uid)
    local = getattr(record, "itype", "") == "local"  # runtime.localimage.record
    return ContainerSpec(
        image_id=record.id, squashfs="" if local else squashfs_path(cfg.image_dir, record.id), user=user,
        local_root=record.tag if local else None,
        image_env=tuple(record.env), image_entrypoint=_tuple(record.entrypoint),
        image_cmd=_tuple(record.cmd), image_workdir=record.workdir, image_request=image_request,
        volumes=tuple(volumes), site_mounts=tuple(site), accounts=accounts,
        account_groups=account_groups, site_env=tuple(envs), modules=tuple(modules),
        module_copy=tuple(copies), hosts=tuple(hosts) if hosts is not None else None,
        cache_dir=cfg.per_node_cache.dir, cache_size_limit=cfg.per_node_cache.size_limit_bytes,
        cache_allowed_fs=tuple(cfg.per_node_cache.allowed_fs), opt_udi_image=cfg.opt_udi_image,
        etc_dir=cfg.etc_dir, mount_propagation=cfg.mount_propagation,
        root_hooks=tuple(root_hooks), user_hooks=tuple(user_hooks),
        site_hooks=tuple((key, getattr(cfg, key)) for key in ("site_pre_mount_hook", "site_post_mount_hook")
                         if getattr(cfg, key)),
        hook_timeout=cfg.hook_timeout, etc_mode=cfg.etc_mode, **gpu_extra,
        **{"hostname": os.uname().nodename, **options})


def _tuple(value):
    return tuple(value) if value is not None else None


def _site_text(mount) -> str:
    return ":".join([mount.from_, mount.to, *mount.flags])


def _site_env(more) -> SiteEnv:
    return SiteEnv(set=tuple(more.set.items()), append=tuple(more.append.items()),
                   prepend=tuple(more.prepend.items()), unset=tuple(more.unset))
