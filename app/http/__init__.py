"""ASGI middleware at the HTTP edge, one job per file, installed by ``app.main``.

Outermost first: :class:`SecurityHeaders` (every response), :class:`AllowedHosts` (DNS
rebinding), CORS (when configured), :class:`SameOriginWrites` (no cross-site writes without
a token), :class:`TokenGate` (the API token, before any body is read) and
:class:`BodyLimits` (sizes and JSON nesting, counted as the body streams).
"""

from app.http.auth import TokenGate
from app.http.body import ENVELOPE_BYTES, BodyLimits
from app.http.headers import CONTENT_SECURITY_POLICY, SecurityHeaders
from app.http.hosts import AllowedHosts
from app.http.origins import SameOriginWrites

__all__ = [
    "AllowedHosts",
    "BodyLimits",
    "CONTENT_SECURITY_POLICY",
    "ENVELOPE_BYTES",
    "SameOriginWrites",
    "SecurityHeaders",
    "TokenGate",
]
