"""`Frozen`: read-only value objects, what `@dataclass(frozen=True)` gave the runtime's plain
data (specs, volumes, users), without importing dataclasses on the launch path.

Why: `import dataclasses` pulls in inspect, ast, re and enum (~5 ms), and each decorated class
is compiled with exec (~0.3 ms); a `shifter` launch of /bin/true pays for every millisecond
(a rootless launch no slower than ch-run's: docs/architecture.md, decision 13). Fields are the class's annotations, in order; a class
attribute of the same name is the field's default. Positional and keyword construction,
equality, hashing, repr and `asdict` behave as the dataclass versions did.
"""

from __future__ import annotations

_MISSING = object()


class Frozen:
    """Base for a read-only record; subclasses list their fields as annotations."""

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        names = tuple(n for n in cls.__dict__.get("__annotations__", {}) if not n.startswith("_"))
        cls._fields = names
        cls._defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}

    def __init__(self, *args: object, **kw: object) -> None:
        names = self._fields
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes {len(names)} arguments, got {len(args)}")
        values = dict(zip(names, args))
        for name, value in kw.items():
            if name not in names:
                raise TypeError(f"{type(self).__name__}() got an unexpected argument {name!r}")
            if name in values:
                raise TypeError(f"{type(self).__name__}() got {name!r} twice")
            values[name] = value
        setter = object.__setattr__
        for name in names:
            value = values.get(name, _MISSING)
            if value is _MISSING:
                value = self._defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__}() is missing the argument {name!r}")
            setter(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot delete {name!r}")

    def _values(self) -> tuple:
        return tuple(getattr(self, n) for n in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.__class__.__name__, self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({inner})"


def asdict(obj: object) -> object:
    """Like dataclasses.asdict: records become dicts, recursively (tuples stay tuples)."""
    if isinstance(obj, Frozen):
        return {n: asdict(getattr(obj, n)) for n in obj._fields}
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(v) for v in obj)
    if isinstance(obj, dict):
        return {asdict(k): asdict(v) for k, v in obj.items()}
    return obj


def replace(obj: Frozen, **changes: object) -> Frozen:
    """Like dataclasses.replace: a copy of a record with some fields changed."""
    return type(obj)(**{**{n: getattr(obj, n) for n in obj._fields}, **changes})
