"""URL routes: the REST API under /api/, the Django admin, media files."""
from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("alerts.api.urls")),
    path("gracedb/api/", include("alerts.gracedb_api.urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
] + static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
