"""PlanGate OpenFeature provider: `api.set_provider_and_wait(PlanGateProvider())`.

Only `plangate.protocol` (stubs and value conversion) is shared with the sidecar; the
provider never imports `plangate.sidecar`, so applications install just the client side.
"""

from .config import ProviderConfig
from .provider import PlanGateProvider

__all__ = ["PlanGateProvider", "ProviderConfig"]
