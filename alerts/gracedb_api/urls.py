"""GraceDB's paths (as ``ligo-gracedb``'s templates spell them, with or
without the trailing slash); any other path answers 501 naming itself."""
from django.urls import re_path

from alerts.gracedb_api import views

app_name = "gracedb_api"

EVENT = r"events/(?P<graceid>[A-Z]+\d+)"
SUPEREVENT = r"superevents/(?P<superevent_id>[A-Z]*S\d{6}[a-z]+)"
SLASH = "/?$"

urlpatterns = [
    re_path(r"^$", views.Root.as_view(), name="root"),
    re_path(r"^user-info" + SLASH, views.UserInfo.as_view()),
    re_path(r"^events" + SLASH, views.Events.as_view()),
    re_path(rf"^{EVENT}" + SLASH, views.EventDetail.as_view()),
    re_path(rf"^{EVENT}/log" + SLASH, views.Logs.as_view()),
    re_path(rf"^{EVENT}/log/(?P<N>\d+)" + SLASH, views.LogDetail.as_view()),
    re_path(rf"^{EVENT}/log/(?P<N>\d+)/tag" + SLASH, views.Tags.as_view()),
    re_path(rf"^{EVENT}/labels/(?P<label>[^/]*)" + SLASH, views.Labels.as_view()),
    re_path(rf"^{EVENT}/files/(?P<filename>[^/]*)$", views.Files.as_view()),
    re_path(rf"^{EVENT}/voevent" + SLASH, views.VOEvents.as_view()),
    re_path(rf"^{EVENT}/voevent/(?P<N>\d+)" + SLASH, views.VOEvents.as_view()),
    re_path(r"^superevents" + SLASH, views.Superevents.as_view()),
    re_path(rf"^{SUPEREVENT}" + SLASH, views.SupereventDetail.as_view()),
    re_path(rf"^{SUPEREVENT}/events" + SLASH, views.SupereventEvents.as_view()),
    re_path(rf"^{SUPEREVENT}/logs" + SLASH, views.Logs.as_view()),
    re_path(rf"^{SUPEREVENT}/logs/(?P<N>\d+)" + SLASH, views.LogDetail.as_view()),
    re_path(rf"^{SUPEREVENT}/logs/(?P<N>\d+)/tags" + SLASH, views.Tags.as_view()),
    re_path(rf"^{SUPEREVENT}/labels" + SLASH, views.Labels.as_view()),
    re_path(rf"^{SUPEREVENT}/labels/(?P<label_name>[^/]+)" + SLASH, views.Labels.as_view()),
    re_path(rf"^{SUPEREVENT}/files/(?P<filename>[^/]*)$", views.Files.as_view()),
    re_path(rf"^{SUPEREVENT}/voevents" + SLASH, views.VOEvents.as_view()),
    re_path(rf"^{SUPEREVENT}/voevents/(?P<N>\d+)" + SLASH, views.VOEvents.as_view()),
    re_path(rf"^{SUPEREVENT}/signoffs" + SLASH, views.Signoffs.as_view()),
    re_path(rf"^{SUPEREVENT}/signoffs/(?P<typeinst>[^/]+)" + SLASH, views.Signoffs.as_view()),
    re_path(r"^(?P<rest>.*)$", views.unserved),
]
