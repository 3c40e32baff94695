"""The roles people have in the service, and what each may do."""

SUPPORT_GROUP_NAME = "Payment support"
SUPPORT_PERMISSIONS = (
    "view_transaction",
    "view_paymentattempt",
    "retry_transaction",
    "cancel_transaction",
)
