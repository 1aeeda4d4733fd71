"""Outbound calls (``POST /v1/calls``): the request (:mod:`.request`), the originate command
(:mod:`.originate`), the status table, rate limit and book of calls (:mod:`.status`), all
sans-I/O; the webhook (:mod:`.webhook`) and the service the app wires in (:mod:`.service`)."""

from .originate import originate_args
from .request import CallRequest, RequestError, parse_request
from .service import API_PREFIX, OutboundService
from .status import CallRecord, Status, outcome

__all__ = ["CallRequest", "RequestError", "parse_request", "originate_args", "CallRecord", "Status", "outcome",
           "OutboundService", "API_PREFIX"]
