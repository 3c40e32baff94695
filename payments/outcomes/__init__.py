"""The one outcome vocabulary: what happened, what the caller is told, what happens next.

Each row of ANSWERS ties together what the provider did (or what failed), the status the
transaction is left in, the API's error type, code and HTTP status, whether the payer may have
been charged, what the service does next, and the message the API and the payment page show.
The API's errors (payments.errors), the admin, the commands, the OpenAPI schema and pay.js
all read this table; README's "Guarantees" section is generated from it
(`python manage.py outcome_table`), and a test keeps the two equal.

The rule behind it: an outcome is *unknown* from the moment a request may have reached the
provider until the provider gives a definitive answer (a charge, a decline, a refusal of the
request), or a lookup finds no charge at a time when no attempt can still be in flight
(the call's start + PAYMENT_RECONCILE_AFTER_S). Unknown is sticky: no later 409, 5xx,
connection error or breaker refusal turns it into a known failure.
"""

from __future__ import annotations

from payments.outcomes.answer import MAYBE, NO, YES, Answer
from payments.outcomes.charges import ANSWERS
from payments.outcomes.refunds import REFUND_ANSWERS

__all__ = ["ANSWERS", "BY_NAME", "MAYBE", "NO", "REFUND_ANSWERS", "YES", "Answer", "answer", "markdown_table"]

BY_NAME: dict[str, Answer] = {answer.name: answer for answer in (*ANSWERS, *REFUND_ANSWERS)}


def answer(name: str) -> Answer:
    return BY_NAME[name]


def markdown_table(answers: tuple[Answer, ...] = ANSWERS) -> str:
    """The table as README shows it (README's "Guarantees" section embeds this verbatim)."""
    moved = "refunded?" if answers is REFUND_ANSWERS else "charged?"
    columns = ("answer", "what happened", "status", "HTTP", "error.type / code", "retryable", moved)
    header = "| " + " | ".join((*columns, "what happens next")) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for a in answers:
        type_code = f"`{a.error_type}` / `{a.code}`" if a.error_type else "-"
        lines.append(
            f"| {a.name} | {a.happened} | {a.status} | {a.http_status} | {type_code} | "
            f"{'yes' if a.retryable else 'no'} | {a.charged} | {a.next_step} |"
        )
    return "\n".join(lines)
