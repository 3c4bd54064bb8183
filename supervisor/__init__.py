from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["Pool", "__version__"]

if TYPE_CHECKING:
    from supervisor.pool import Pool


def __getattr__(name: str) -> object:
    # Lazy: the daemon and the CLI import ``supervisor`` too, and should not
    # pay for the Pool's imports (the client, zmq, concurrent.futures).
    if name == "Pool":
        from supervisor.pool import Pool

        return Pool
    raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
