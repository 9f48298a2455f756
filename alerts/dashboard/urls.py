"""Dashboard routes, mounted at the site root."""
from django.contrib.auth import views as auth_views
from django.urls import path

from alerts.dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.superevent_list, name="list"),
    path("rows/", views.superevent_rows, name="rows"),
    path("superevents/<str:superevent_id>/", views.superevent_detail, name="superevent"),
    path("superevents/<str:superevent_id>/confirm/<str:action>/", views.confirm_alert, name="confirm"),
    path("superevents/<str:superevent_id>/act/", views.act, name="act"),
    path("events/<str:graceid>/", views.event_detail, name="event"),
    path("files/<int:pk>/", views.file_download, name="file"),
    path("notices/<int:pk>/<str:format>/", views.payload_download, name="payload"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
