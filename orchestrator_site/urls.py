"""URL routes: the advocate dashboard at the root, the REST API under /api/,
the Django admin, media files."""
from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("alerts.api.urls")),
    path("", include("alerts.dashboard.urls")),
] + static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
