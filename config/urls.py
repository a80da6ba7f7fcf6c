from django.contrib import admin
from django.urls import path

admin.site.site_header = "Signoff administration"
admin.site.site_title = "Signoff"
admin.site.index_title = "Threads, checkpoints and people"

urlpatterns = [
    path("admin/", admin.site.urls),
]
