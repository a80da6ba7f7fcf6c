from django.contrib import admin
from django.urls import path
from django.views.generic.base import RedirectView

admin.site.site_header = "Signoff administration"
admin.site.site_title = "Signoff"
admin.site.index_title = "Threads, checkpoints and people"

urlpatterns = [
    # The reviewer queue will live at "/"; until then the admin is the whole app.
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
]
