"""URL routes: the advocate dashboard at the root, the REST API under /api/,
the Django admin, media files."""
from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from alerts import health_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", health_view.health, name="health"),
    path("metrics", health_view.metrics, name="metrics"),
    path("api/", include("alerts.api.urls")),
    path("gracedb/api/", include("alerts.gracedb_api.urls")),
    path("", include("alerts.dashboard.urls")),
] + static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

handler400 = "orchestrator_site.errors.bad_request"
handler403 = "orchestrator_site.errors.permission_denied"
handler404 = "orchestrator_site.errors.not_found"
handler500 = "orchestrator_site.errors.server_error"
