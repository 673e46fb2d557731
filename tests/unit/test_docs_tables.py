"""The README's error table is the error tree's, and the OpenAPI document lists the same statuses."""

from __future__ import annotations

from pathlib import Path

from appliance.errors import HTTP_ERRORS, BackendUnavailableError
from appliance.gateway.openapi import error_table, openapi_document

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_error_table_is_generated_from_the_error_tree() -> None:
    assert error_table() in README.read_text(encoding="utf-8"), (
        "README.md's error table is stale: paste appliance.gateway.openapi.error_table()"
    )


def test_every_status_the_embeddings_route_documents_comes_from_the_error_tree() -> None:
    responses = openapi_document()["paths"]["/v1/embeddings"]["post"]["responses"]
    tree = {str(cls.status_code): cls.description for cls in HTTP_ERRORS}
    documented = {code: r["description"] for code, r in responses.items() if code != "200"}
    assert documented == {code: d for code, d in tree.items() if code not in ("431", "500")}


def test_the_documented_503_is_the_inference_servers_not_the_connection_limits() -> None:
    responses = openapi_document()["paths"]["/ready"]["get"]["responses"]
    assert responses["503"]["description"] == BackendUnavailableError.description
