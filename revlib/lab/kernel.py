"""The kernel the runner executes notebooks in: local, over Unix sockets instead of TCP.

Over TCP, ipykernel warns at every start that its traffic is unencrypted, once per executed notebook, drowning the
runner's progress lines; over IPC nothing listens on a port, so there is nothing to warn about.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from functools import cache

from jupyter_client.manager import AsyncKernelManager
from traitlets import default


@cache
def _socket_dir() -> str:
    # short (a Unix socket path has about 100 characters), private, and removed when the runner exits
    path = tempfile.mkdtemp(prefix="revlib-kernel-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class IPCKernelManager(AsyncKernelManager):
    """papermill's kernel manager with the IPC transport; the socket files live in a private temporary folder."""

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("ip")
    def _default_ip(self) -> str:
        return os.path.join(_socket_dir(), uuid.uuid4().hex[:12])  # one prefix per kernel: cells run side by side

    extra_env: dict[str, str] = {}

    @classmethod
    def with_env(cls, env: dict[str, str]) -> type[IPCKernelManager]:
        """This manager, its kernels started with `env` over the runner's environment (a cell's own GPUs and
        port): kernels start from threads, where changing os.environ would leak into the cell beside it."""
        if not env:
            return cls
        return type(cls.__name__, (cls,), {"extra_env": dict(env)})

    async def _async_pre_start_kernel(self, **kw):
        if self.extra_env:
            kw["env"] = {**(kw.get("env") or os.environ), **self.extra_env}
        return await super()._async_pre_start_kernel(**kw)
