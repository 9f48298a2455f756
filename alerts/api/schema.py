"""The OpenAPI schema (drf-spectacular) describes this server's own API
under /api/; the GraceDB-compatible surface is GraceDB's, documented there."""

ERROR_SCHEMA = {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string", "description": "what is wrong, in one line"}}}


def native_api_only(endpoints, **kwargs):
    """drf-spectacular preprocessing hook: keep the /api/ endpoints."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/")]


def error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation may answer a
    4xx whose body is ``{"error": ...}`` (bad input, no role, not found,
    refused by the rules), so clients and the fuzz test know its shape."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for path in result.get("paths", {}).values():
        for operation in path.values():
            operation.setdefault("responses", {}).setdefault("4XX", {
                "description": "bad request, not signed in, no role, not found or refused (the reason in error)",
                "content": {"application/json": {"schema": reference}}})
    return result
