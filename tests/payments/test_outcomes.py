"""The outcome table is the one vocabulary: README shows it, the API answers with it."""

from __future__ import annotations

from pathlib import Path

from django.core.management import call_command

from payments import errors, outcomes

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_guarantees_table_is_the_outcome_table() -> None:
    text = README.read_text()
    embedded = text.split("<!-- outcome-table:start -->\n", 1)[1].split("\n<!-- outcome-table:end -->", 1)[0]

    assert embedded == outcomes.markdown_table(), "run `manage.py outcome_table` and paste it into README"


def test_outcome_table_command_prints_the_table(capsys: object) -> None:
    call_command("outcome_table")

    assert capsys.readouterr().out.strip() == outcomes.markdown_table()  # type: ignore[attr-defined]


def test_every_api_error_class_is_a_row_of_the_table() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.PaymentError)]
    for cls in classes:
        answer = outcomes.answer(cls.answer_name)
        error = cls()
        assert (error.http_status, error.error_type, error.retryable) == (
            answer.http_status,
            answer.error_type,
            answer.retryable,
        )


def test_no_answer_that_may_have_charged_says_not_charged() -> None:
    for answer in outcomes.ANSWERS:
        if answer.charged == outcomes.MAYBE:
            assert "not charged" not in answer.message.lower(), answer.name
            assert "not been charged" not in answer.page.lower(), answer.name
            assert answer.http_status not in (402, 422, 502, 503), answer.name


def test_readme_refund_table_is_the_refund_answers() -> None:
    text = README.read_text()
    start, end = "<!-- refund-outcome-table:start -->\n", "\n<!-- refund-outcome-table:end -->"
    embedded = text.split(start, 1)[1].split(end, 1)[0]

    assert embedded == outcomes.markdown_table(outcomes.REFUND_ANSWERS), (
        "run `manage.py outcome_table --refunds`"
    )


def test_outcome_table_command_prints_the_refund_table(capsys: object) -> None:
    call_command("outcome_table", "--refunds")

    printed = capsys.readouterr().out.strip()  # type: ignore[attr-defined]
    assert printed == outcomes.markdown_table(outcomes.REFUND_ANSWERS)
    assert "| refunded? |" in printed


def test_no_refund_answer_that_may_have_refunded_says_not_refunded() -> None:
    assert {answer.operation for answer in outcomes.REFUND_ANSWERS} == {"refund"}
    for answer in outcomes.REFUND_ANSWERS:
        if answer.charged == outcomes.MAYBE:
            assert "nothing was refunded" not in answer.message.lower(), answer.name
            assert "not refunded" not in answer.message.lower(), answer.name
            assert answer.http_status not in (402, 422, 502, 503), answer.name
