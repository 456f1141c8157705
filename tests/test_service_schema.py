"""Schemathesis over every operation of the published OpenAPI document, against a real
server process (no job worker), with a bounded number of examples per operation.

Checked: no 5xx, every status code and content type documented (problem+json for errors),
responses matching their schemas, declared headers present, and schema-violating
requests refused. Not checked: ``positive_data_acceptance`` -- a schema-valid job spec
may still be refused (422) for what a schema cannot say (an unknown upload id, a technique
name that is not registered, a model over the server's limits), and that refusal is
documented.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Server, service_env
from test_service_jobs import make_key

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

EXAMPLES = int(os.environ.get("PI_OPT_SCHEMATHESIS_EXAMPLES", "6"))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("schema")
    data_dir = tmp / "data"
    key = make_key(data_dir, "fuzz")
    server = Server(["--no-worker"], log=tmp / "server.log",
                    env=service_env(data_dir, PI_OPT_MAX_UPLOAD_BYTES="100000"))
    try:
        server.wait_healthy()
        yield {"server": server, "key": key}
    finally:
        server.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_matches_the_openapi_document(api: dict[str, Any],
                                                      mode: GenerationMode) -> None:
    base = api["server"].base_url
    schema = schemathesis.openapi.from_url(f"{base}/v1/openapi.json")
    headers = {"Authorization": f"Bearer {api['key']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    for op in operations:
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(base_url=base, headers=headers, timeout=60,
                                   excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Unsatisfiable:
            # negative mode: nothing of this operation can violate the schema (no inputs)
            assert mode == GenerationMode.NEGATIVE
