"""LangGraph's official checkpointer conformance suite, run against DjangoSaver."""

from collections.abc import AsyncGenerator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from workflows.checkpointer import DjangoSaver

ALL_CAPABILITIES = {
    "put",
    "put_writes",
    "get_tuple",
    "list",
    "delete_thread",
    "delete_for_runs",
    "copy_thread",
    "prune",
}


@pytest.mark.django_db(transaction=True)
async def test_django_saver_passes_all_eight_capabilities():
    @checkpointer_test(name="DjangoSaver")
    async def django_saver() -> AsyncGenerator[DjangoSaver, None]:
        yield DjangoSaver()

    report = await validate(django_saver, progress=ProgressCallbacks.quiet())

    failures = {
        name: [f"{failure}" for failure in result.failures]
        for name, result in report.results.items()
        if not result.passed
    }
    assert set(report.results) == ALL_CAPABILITIES
    assert {name for name, result in report.results.items() if result.detected} == ALL_CAPABILITIES
    assert failures == {}
    assert report.passed_all()
    assert sum(result.tests_passed for result in report.results.values()) >= 81
