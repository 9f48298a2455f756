"""Every API error is a JSON body with a one-line ``error`` message."""
from django.db import DataError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler


def json_exception_handler(exc, context):
    if isinstance(exc, DataError):  # e.g. a NUL byte PostgreSQL text cannot hold
        return Response({"error": "a value in the request cannot be stored (NUL byte or out of range)"},
                        status=400)
    response = exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "error" not in response.data:
        detail = response.data.get("detail")
        response.data = {"error": str(detail) if detail else flatten(response.data)}
    return response


def flatten(data):
    """Serializer errors as one line: ``field: message; other: message``."""
    parts = []
    for key, value in data.items():
        if isinstance(value, dict):
            text = flatten(value)
        elif isinstance(value, list):
            text = "; ".join(map(str, value))
        else:
            text = str(value)
        parts.append(f"{key}: {text}")
    return "; ".join(parts)


def invalid(form):
    """The 400 answer for a request body its serializer refused."""
    return Response({"error": flatten(form.errors)}, status=status.HTTP_400_BAD_REQUEST)
