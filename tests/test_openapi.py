"""The OpenAPI document and the router cannot drift apart."""

from __future__ import annotations

import schemathesis

from console import api
from console.app import PUBLIC_ROUTES, create_console_app
from console.openapi import ERROR_CODES, document

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def routed(app) -> set[tuple[str, str, str]]:
    """(path, method, route name) of every route under /api/ (HEAD is GET's twin)."""
    found = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter") or info.get("prefix") or ""
        if not path.startswith("/api/"):
            continue
        for route in resource:
            if route.method != "HEAD":
                found.add((path, route.method.lower(), route.name))
    return found


def documented(doc: dict) -> set[tuple[str, str, str]]:
    return {
        (path, method, operation.get("operationId"))
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_every_api_route_is_documented_and_every_documented_path_exists(settings):
    app = create_console_app(settings, pool=None)
    in_router, in_document = routed(app), documented(document())
    assert len(in_router) >= 11
    assert in_router - in_document == set(), "routes the document does not describe"
    assert in_document - in_router == set(), "documented operations no route serves"


def test_the_document_is_valid_openapi_3_1_with_bearer_and_the_error_shape():
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document()).validate()  # against the OpenAPI meta-schema
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    assert doc["security"] == [{"bearer": []}]
    error = doc["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
    # Every code the API can answer is one the document names.
    assert set(api.ERROR_CODES.values()) | {"error"} <= set(ERROR_CODES)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            public = operation.get("security") == []
            assert public == (operation["operationId"] in PUBLIC_ROUTES), (path, method)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
            if not public:
                assert {"401", "503"} <= set(operation["responses"]), (path, method)



async def test_the_document_is_served_without_a_login(console):
    response = await console.get("/api/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == document()
