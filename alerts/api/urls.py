from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from alerts.api import decision_views, views

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("events/", views.EventList.as_view(), name="event-list"),
    path("events/<str:graceid>/", views.EventDetail.as_view(), name="event-detail"),
    path("events/<str:graceid>/files/", views.FileList.as_view(), name="event-files"),
    path("events/<str:graceid>/files/<str:filename>", views.FileContent.as_view(), name="event-file"),
    path("events/<str:graceid>/labels/", views.LabelList.as_view(), name="event-labels"),
    path("events/<str:graceid>/logs/", views.LogList.as_view(), name="event-logs"),
    path("superevents/", views.SupereventList.as_view(), name="superevent-list"),
    path("superevents/<str:superevent_id>/", views.SupereventDetail.as_view(), name="superevent-detail"),
    path("superevents/<str:superevent_id>/files/", views.FileList.as_view(), name="superevent-files"),
    path("superevents/<str:superevent_id>/files/<str:filename>", views.FileContent.as_view(),
         name="superevent-file"),
    path("superevents/<str:superevent_id>/labels/", views.LabelList.as_view(), name="superevent-labels"),
    path("superevents/<str:superevent_id>/logs/", views.LogList.as_view(), name="superevent-logs"),
    path("superevents/<str:superevent_id>/alerts/", decision_views.SupereventAlerts.as_view(),
         name="superevent-alerts"),
    path("superevents/<str:superevent_id>/preferred_event/", decision_views.PreferredEvent.as_view(),
         name="superevent-preferred-event"),
    path("superevents/<str:superevent_id>/labels/<str:name>/", decision_views.LabelDetail.as_view(),
         name="superevent-label"),
    path("events/<str:graceid>/labels/<str:name>/", decision_views.LabelDetail.as_view(), name="event-label"),
    path("events/<str:graceid>/localize/", decision_views.Localize.as_view(), name="event-localize"),
    path("notices/<str:identity>/retry/", decision_views.NoticeRetry.as_view(), name="notice-retry"),
]
