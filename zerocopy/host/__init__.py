"""``zerocopy host``: the parent-side agent (see :mod:`.agent`) and the tools it drives (:mod:`.tools`)."""

from .agent import HostAgent, HostConfig
from .log import AgentLog
from .tools import EnclaveInfo, InstanceMetadata, NitroCli, VsockProxyProcess

__all__ = ["AgentLog", "EnclaveInfo", "HostAgent", "HostConfig", "InstanceMetadata", "NitroCli", "VsockProxyProcess"]
