from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from api.prometheus import prometheus_metrics

admin.site.site_header = "Signoff administration"
admin.site.site_title = "Signoff"
admin.site.index_title = "Threads, checkpoints and people"

# A database that cannot be reached is a 503 "try again", wherever the request failed.
handler500 = "approvals.middleware.server_error"

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("prometheus/metrics", prometheus_metrics, name="prometheus_metrics"),
    path("", include("notifications.urls")),
    path("", include("approvals.urls")),
]
