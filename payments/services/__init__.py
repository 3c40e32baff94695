"""Operations on payments, by use case: the API, the admin and the commands all call these.

- `charge`: the charge path (the API's one write).
- `support`: retry, reconcile, cancel and flag (support staff and the batch commands).
- `settlement`: recording a provider's answer under a row lock; `claims`: taking a row to
  work on and giving it back.
- `refunds`: the refund path; `refund_settlement`, `refund_reconcile`: recording a refund's
  answer, and reconcile_refunds' lookups.
- `provider_events`: the provider's verified events, stored once and recorded as facts.
- `client_events`: events out, written in the state change's transaction (the outbox);
  `webhook_endpoints`, `webhook_urls`: clients' endpoints and which URLs they may have;
  `delivery`: sending the outbox's deliveries (run_worker's delivery loop).
- `users`: setting up support staff.

The names below are the services' public interface; entry points import them from here.
"""

from payments.roles import SUPPORT_GROUP_NAME
from payments.services.charge import Charged, ChargeRequest, charge_create
from payments.services.claims import ERROR_OUTCOMES, ActionOutcome, ActionResult
from payments.services.delivery import deliver_next
from payments.services.lookup import charge_lookup_on_read
from payments.services.provider_events import Received, provider_event_receive
from payments.services.refund_reconcile import (
    refund_cancel,
    refund_reconcile,
    refund_reconcile_next,
    refunds_to_reconcile,
)
from payments.services.refunds import Refunded, RefundRequest, refund_create, refundable, refunded
from payments.services.support import (
    charge_cancel,
    charge_reconcile,
    charge_reconcile_next,
    charge_retry,
    charge_retry_next,
    flag_exhausted,
)
from payments.services.users import support_user_create
from payments.services.webhook_endpoints import (
    delivery_replay,
    endpoint_create,
    endpoint_delete,
    endpoint_rotate,
    endpoint_update,
)
from payments.transitions import reconcile_after

__all__ = [
    "ERROR_OUTCOMES",
    "SUPPORT_GROUP_NAME",
    "ActionOutcome",
    "ActionResult",
    "ChargeRequest",
    "Charged",
    "Received",
    "RefundRequest",
    "Refunded",
    "charge_cancel",
    "charge_create",
    "charge_lookup_on_read",
    "charge_reconcile",
    "charge_reconcile_next",
    "charge_retry",
    "charge_retry_next",
    "deliver_next",
    "delivery_replay",
    "endpoint_create",
    "endpoint_delete",
    "endpoint_rotate",
    "endpoint_update",
    "flag_exhausted",
    "provider_event_receive",
    "reconcile_after",
    "refund_cancel",
    "refund_create",
    "refund_reconcile",
    "refund_reconcile_next",
    "refundable",
    "refunded",
    "refunds_to_reconcile",
    "support_user_create",
]
